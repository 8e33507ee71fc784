"""Defects in solar cells: 2,624 real electroluminescence (EL) images from the `elpv-dataset` wheel on PyPI.

Each 300x300 greyscale image shows one cell of a solar module; experts rated how likely the cell is defective
(0, 1/3, 2/3 or 1) and noted its type (mono- or polycrystalline). We read the wheel's files directly (the package
itself is never imported), resize them once, cache them on disk and serve 3-channel tensors normalised to [-1, 1]
for the EfficientNet-Lite family. The classes are imbalanced (about 27% defective): see `class_weights`.
Data: Buerhop-Lutz et al. and Deitsch et al. (2018, 2019), CC BY-NC-SA 4.0 (non-commercial). Taught in lessons 03 and 06.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from tlkit.data.splits import DataSplits
from tlkit.settings import cache_dir

PACKAGE = "elpv_dataset"
PACKAGE_PIN = "elpv-dataset==1.0.0.post1"
INSTALL_HINT = f"pip install --no-deps {PACKAGE_PIN}"
LABEL_FILE = "labels.csv"
RAW_SIZE = 300
DEFAULT_IMAGE_SIZE = 96
BINARY_CLASSES = ("functional", "defective")
GRADE_CLASSES = ("p=0", "p=1/3", "p=2/3", "p=1")  # the experts' defect probability, as four classes
CELL_TYPES = ("mono", "poly")
DEFECT_THRESHOLD = 0.5  # binary label: defective when the rated probability is 2/3 or 1
SPLIT_NAMES = ("train", "val", "test")
TEST_SPLIT_SEED = 0  # the test split never depends on `seed`, so every run is scored on the same cells
MEAN = 0.5  # EfficientNet-Lite (TF-trained) expects inputs in [-1, 1]: (x - 0.5) / 0.5
STD = 0.5


def data_folder() -> Path:
    """The `data` folder of the installed elpv-dataset wheel (labels.csv, images/), found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)  # finds the folder only: none of the package's code runs
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"The solar-cell images come from a PyPI wheel that is not installed: run `{INSTALL_HINT}`.")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (folder / LABEL_FILE).is_file() or not (folder / "images").is_dir():
        raise FileNotFoundError(f"{folder} lacks {LABEL_FILE} or images/; reinstall with `pip install --no-deps --force-reinstall {PACKAGE_PIN}`.")
    return folder


def load_elpv_table(folder: Path | None = None) -> pd.DataFrame:
    """labels.csv as a table: path (relative), defect_probability, cell_type, label (1 = defective), grade (0-3)."""
    folder = Path(folder) if folder is not None else data_folder()
    try:
        table = pd.read_csv(folder / LABEL_FILE, sep=r"\s+", header=None, names=["path", "defect_probability", "cell_type"],
                            dtype={"path": str, "defect_probability": float, "cell_type": str})
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{folder / LABEL_FILE} is not the expected 'path probability type' table ({err}); reinstall {PACKAGE_PIN}.") from err
    if table.empty or table.isna().any().any():
        raise ValueError(f"{folder / LABEL_FILE} is empty or has missing fields; reinstall with `pip install --no-deps --force-reinstall {PACKAGE_PIN}`.")
    grade = np.rint(table["defect_probability"].to_numpy() * 3)
    if not np.allclose(grade / 3, table["defect_probability"]) or not set(table["cell_type"]) <= set(CELL_TYPES):
        raise ValueError(f"{folder / LABEL_FILE} holds probabilities other than 0, 1/3, 2/3, 1 or cell types other than {CELL_TYPES}.")
    if table["path"].str.contains(r"\.\.|^/", regex=True).any():
        raise ValueError(f"{folder / LABEL_FILE} names a file outside its folder; reinstall {PACKAGE_PIN}.")
    table["label"] = (table["defect_probability"] >= DEFECT_THRESHOLD).astype(np.int64)
    table["grade"] = grade.astype(np.int64)
    return table


def _files_key(folder: Path, table: pd.DataFrame, image_size: int) -> str:
    """A short hash of the size, labels.csv and every image's name, byte size and modification time."""
    h = hashlib.sha256(f"elpv-v1-{image_size}".encode())
    h.update((folder / LABEL_FILE).read_bytes())
    for rel in table["path"]:
        stat = (folder / rel).stat() if (folder / rel).exists() else None
        h.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns}".encode() if stat else f"{rel}:missing".encode())
    return h.hexdigest()[:16]


def _read_cell(path: Path, image_size: int) -> np.ndarray:
    """One cell image as uint8 [S, S], resized with antialiasing; a missing, empty or broken file says what to do."""
    from PIL import Image, UnidentifiedImageError

    fix = f"reinstall with `pip install --no-deps --force-reinstall {PACKAGE_PIN}`"
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"Image {path} is missing or empty; {fix}.")
    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if im.size != (image_size, image_size):
                im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)  # PIL antialiases when shrinking
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"Image {path} is not a readable PNG ({err}); {fix}.") from err


def _load_cache(path: Path, n: int, image_size: int) -> np.ndarray | None:
    """The cached uint8 pixels, or None (with a message) when the file is unreadable or of the wrong shape."""
    try:
        with np.load(path, allow_pickle=False) as f:
            pixels = f["pixels"]
        if pixels.shape == (n, image_size, image_size) and pixels.dtype == np.uint8:
            return pixels
        problem = f"shape {pixels.shape} / {pixels.dtype}"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        problem = str(err) or type(err).__name__
    print(f"ELPV cache {path} is unreadable ({problem}): recomputing it.", file=sys.stderr)
    path.unlink(missing_ok=True)
    return None


def load_elpv_pixels(image_size: int = DEFAULT_IMAGE_SIZE, *, folder: Path | None = None,
                     progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """(uint8 images [N, S, S], the table), resized once and cached as .npz under cache_dir("elpv")."""
    if not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= RAW_SIZE:
        raise ValueError(f"image_size must be a whole number of pixels from 16 to {RAW_SIZE} (the raw size), got {image_size!r}.")
    folder = Path(folder) if folder is not None else data_folder()
    table = load_elpv_table(folder)
    path = cache_dir("elpv") / f"elpv-{image_size}px-{_files_key(folder, table, int(image_size))}.npz"
    if path.exists():
        pixels = _load_cache(path, len(table), int(image_size))
        if pixels is not None:
            return pixels, table
    from tlkit.progress import progress_bar

    pixels = np.stack([_read_cell(folder / rel, int(image_size)) for rel in progress_bar(table["path"], desc="ELPV images", enabled=progress)])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, pixels=pixels)
    tmp.replace(path)  # atomic: a run killed mid-write leaves no truncated cache behind
    return pixels, table


def load_elpv_arrays(image_size: int = DEFAULT_IMAGE_SIZE, *, binary: bool = True, folder: Path | None = None,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images float32 [N, S, S] in [0, 1], labels int64 [N], cell types str [N]); binary: 1 = defective (p >= 0.5), else grades 0-3."""
    pixels, table = load_elpv_pixels(image_size, folder=folder, progress=progress)
    labels = table["label" if binary else "grade"].to_numpy(dtype=np.int64)
    return pixels.astype(np.float32) / 255.0, labels, table["cell_type"].to_numpy(dtype=str)


def _take(idx: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(idx)
    return order[:n], order[n:]


def elpv_splits(labels: np.ndarray, *, seed: int = 0, val_frac: float = 0.15, test_frac: float = 0.25,
                strata: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices; the test split is fixed (TEST_SPLIT_SEED) whatever `seed` is, val/train vary with it.

    A fixed test split makes runs with different seeds comparable: their spread then comes from training and from
    which cells were used to train, not from a different exam. `strata` (e.g. cell types) stratifies jointly with labels.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}.")
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError(f"val_frac and test_frac must be in (0, 1) and sum below 1, got {val_frac} and {test_frac}.")
    keys = labels.astype(str) if strata is None else np.char.add(labels.astype(str) + "/", np.asarray(strata).astype(str))
    test_rng, rng = np.random.default_rng(TEST_SPLIT_SEED), np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        test, rest = _take(idx, int(round(test_frac * len(idx))), test_rng)
        val, train = _take(np.sort(rest), int(round(val_frac * len(idx))), rng)
        for name, chunk in zip(SPLIT_NAMES, (train, val, test)):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)).astype(np.int64) for name, chunks in parts.items()}


def stratified_subset(idx: np.ndarray, labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """About `n` of the indices `idx`, chosen by `seed`, keeping class shares (at least one per class)."""
    if n < 1:
        raise ValueError(f"n must be a positive number of examples, got {n}.")
    if n >= len(idx):
        return np.sort(idx)
    rng = np.random.default_rng(seed)
    share = n / len(idx)
    keep = [_take(idx[labels[idx] == c], max(1, int(round(share * (labels[idx] == c).sum()))), rng)[0] for c in np.unique(labels[idx])]
    return np.sort(np.concatenate(keep))


def class_weights(labels: np.ndarray, num_classes: int | None = None) -> torch.Tensor:
    """Loss weights n / (k * count_c) ("balanced"): every class then weighs the same in a weighted cross-entropy."""
    labels = np.asarray(labels, dtype=np.int64)
    k = int(num_classes if num_classes is not None else labels.max() + 1)
    counts = np.bincount(labels, minlength=k)[:k]
    if len(labels) == 0 or (counts == 0).any():
        raise ValueError(f"Every class needs at least one example to be weighted, got counts {counts.tolist()}; use a larger split.")
    return torch.tensor(len(labels) / (k * counts), dtype=torch.float32)


def balanced_sampler(labels: np.ndarray, *, num_samples: int | None = None, seed: int = 0) -> WeightedRandomSampler:
    """A sampler that draws every class equally often (with replacement): the other cure for imbalance."""
    weights = class_weights(labels)[torch.as_tensor(np.asarray(labels, dtype=np.int64))]
    return WeightedRandomSampler(weights.double(), num_samples or len(weights), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


def random_dihedral(x: torch.Tensor) -> torch.Tensor:
    """A random flip and rotation by a multiple of 90 degrees: a cell looks as valid upside down or mirrored."""
    k = int(torch.randint(4, ()))
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if bool(torch.randint(2, ())) else x


class ElpvImages(Dataset):
    """Solar-cell images; item i is (float [C, S, S] normalised to [-1, 1], label int). `.cell_types` keeps mono/poly."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, cell_types: np.ndarray | None = None, *, channels: int = 3,
                 augment: bool | Callable[[torch.Tensor], torch.Tensor] = False, classes: tuple[str, ...] = BINARY_CLASSES) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey, for a scratch CNN) or 3 (for ImageNet backbones), got {channels}.")
        if images.ndim != 3 or len(images) != len(labels):
            raise ValueError(f"Expected images [N, S, S] with one label each, got {images.shape} and {np.shape(labels)}.")
        self.images = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]  # [N, 1, S, S] in [0, 1]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.cell_types = np.asarray(cell_types) if cell_types is not None else np.full(len(labels), "", dtype=object)
        self.channels, self.classes = channels, list(classes)
        self.transform = random_dihedral if augment is True else (augment or None)

    def __len__(self) -> int:
        return len(self.labels)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[..., 1, S, S] in [0, 1] -> [..., C, S, S] in [-1, 1]."""
        x = (x - MEAN) / STD
        return x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]) if self.channels == 3 else x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.transform is not None:
            x = self.transform(x)
        return self._normalise(x).contiguous(), int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (inputs float [N, C, S, S], labels int64 [N]), without augmentation."""
        return self._normalise(self.images).contiguous(), torch.from_numpy(self.labels)

    def __repr__(self) -> str:
        return f"ElpvImages(n={len(self)}, image_size={self.images.shape[-1]}, defective={int((self.labels > 0).sum())}, augment={self.transform is not None})"


def load_elpv_splits(image_size: int = DEFAULT_IMAGE_SIZE, *, seed: int = 0, binary: bool = True, augment: bool | Callable = False,
                     channels: int = 3, val_frac: float = 0.15, test_frac: float = 0.25, max_train: int | None = None,
                     folder: Path | None = None) -> DataSplits:
    """All three splits as DataSplits(train, val, test, classes, info); augmentation on the training split only.

    `max_train` keeps a seeded, stratified subset of the training split (smoke runs, data-efficiency curves).
    """
    images, labels, types = load_elpv_arrays(image_size, binary=binary, folder=folder)
    idx = elpv_splits(labels, seed=seed, val_frac=val_frac, test_frac=test_frac)
    if max_train is not None:
        idx["train"] = stratified_subset(idx["train"], labels, max_train, seed=seed)
    classes = BINARY_CLASSES if binary else GRADE_CLASSES
    sets = {name: ElpvImages(images[i], labels[i], types[i], channels=channels, classes=classes,
                             augment=augment if name == "train" else False) for name, i in idx.items()}
    info: dict[str, Any] = {"source": f"{PACKAGE_PIN} (PyPI), {len(labels)} EL images of solar cells, CC BY-NC-SA 4.0",
                            "image_size": image_size, "mean": MEAN, "std": STD, "seed": seed, "binary": binary,
                            "sizes": {n: len(i) for n, i in idx.items()},
                            "class_counts": {n: np.bincount(labels[i], minlength=len(classes)).tolist() for n, i in idx.items()},
                            "indices": idx}
    return DataSplits(sets["train"], sets["val"], sets["test"], list(classes), info)


def load_elpv(split: str = "train", image_size: int = DEFAULT_IMAGE_SIZE, **options: Any) -> ElpvImages:
    """One split ("train", "val" or "test") as ElpvImages; options as in load_elpv_splits."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}.")
    return getattr(load_elpv_splits(image_size, **options), split)
