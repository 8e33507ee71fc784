"""Seeded, stratified train/val/test splits, "k labelled examples per class" (taught in lesson 01), seeded loaders.

Shuffled loaders here draw each epoch's order from (seed, epoch) alone, never from a private generator's running
state, so `tlkit.train.fit` (which calls `set_epoch`) gives a resumed run the batches an uninterrupted run saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass
class DataSplits:
    """The three splits of a course dataset plus its class names and facts worth printing (`info`)."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(getattr(self, n))}" for n in ("train", "val", "test"))
        return f"DataSplits({sizes}, classes={self.classes})"

    def loaders(self, batch_size: int, *, seed: int = 0, drop_last: bool = False,
                **loader_kwargs: Any) -> tuple[DataLoader, DataLoader, DataLoader]:
        """(train_loader, val_loader, test_loader): train shuffled by (seed, epoch) (see seeded_loader), the others in order."""
        return (seeded_loader(self.train, batch_size, seed=seed, drop_last=drop_last, **loader_kwargs),
                DataLoader(self.val, batch_size=batch_size, **loader_kwargs),
                DataLoader(self.test, batch_size=batch_size, **loader_kwargs))


class EpochSampler(Sampler[int]):
    """A shuffle that depends on (seed, epoch) only: a new order every pass, the same order for the same epoch.

    `set_epoch(e)` (fit calls it) picks the order of epoch e; without it each pass advances by one.
    The order is torch.randperm seeded with seed + epoch, as in DistributedSampler with one process.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        if n < 1:
            raise ValueError(f"EpochSampler needs at least one example, got n={n}.")
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order of `epoch` (0-based) on the next pass."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        self.epoch += 1
        return iter(order)


def seeded_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                  **loader_kwargs: Any) -> DataLoader:
    """A DataLoader whose shuffled order comes from EpochSampler(seed): reproducible, and resumable by fit."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if "sampler" in loader_kwargs or "batch_sampler" in loader_kwargs or "generator" in loader_kwargs:
        raise ValueError("seeded_loader builds its own seeded sampler; drop the sampler/batch_sampler/generator argument.")
    sampler = EpochSampler(len(dataset), seed) if shuffle else None  # type: ignore[arg-type]
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_kwargs)


def _check_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"Expected a non-empty 1-D sequence of labels, got shape {labels.shape}; pass one label per example.")
    return labels


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    groups: Sequence[Any] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split example indices into train/val/test, keeping class proportions; `groups` stay whole within one split.

    With `groups` (speaker or voice ids), every example of a group lands in the same split, so the test set holds
    only voices never heard in training; the groups themselves are shuffled with `seed`.
    """
    labels = _check_labels(labels)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}.")
    rng = np.random.default_rng(seed)
    if groups is not None:
        return _group_split(np.asarray(groups), fractions, rng)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:n_train], idx[n_train : n_train + n_val], idx[n_train + n_val :])):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def _group_split(groups: np.ndarray, fractions: tuple[float, float, float], rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    unique = rng.permutation(np.unique(groups))
    if len(unique) < 3:
        raise ValueError(f"A group split needs at least 3 groups (voices, speakers), got {len(unique)}.")
    n_train = max(1, int(round(fractions[0] * len(unique))))
    n_val = max(1, int(round(fractions[1] * len(unique))))
    n_train = min(n_train, len(unique) - 2)
    chunks = (unique[:n_train], unique[n_train : n_train + n_val], unique[n_train + n_val :])
    return tuple(np.flatnonzero(np.isin(groups, chunk)).astype(np.int64) for chunk in chunks)


def k_per_class(labels: Sequence[int] | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Pick `k` example indices of every class (seeded); the answer to "what if I only had k labels per class?"."""
    labels = _check_labels(labels)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < k:
            raise ValueError(f"Class {c} has only {len(idx)} examples, fewer than k={k}; choose k <= {len(idx)}.")
        chosen.append(rng.choice(idx, size=k, replace=False))
    return np.sort(np.concatenate(chosen))
