"""Splits: stratified, seeded, disjoint; group splits keep voices/speakers whole; k per class."""

import numpy as np
import pytest

from tlkit.data.splits import k_per_class, stratified_split

LABELS = np.repeat(np.arange(4), 50)


def test_split_is_disjoint_complete_and_stratified():
    tr, va, te = stratified_split(LABELS, (0.8, 0.1, 0.1), seed=0)
    assert len(set(tr) | set(va) | set(te)) == 200 and not (set(tr) & set(te) or set(tr) & set(va) or set(va) & set(te))
    assert np.bincount(LABELS[te]).tolist() == [5, 5, 5, 5]


def test_split_is_seeded():
    a = stratified_split(LABELS, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, stratified_split(LABELS, seed=1)))
    assert not np.array_equal(a[0], stratified_split(LABELS, seed=2)[0])


def test_group_split_never_shares_a_group():
    groups = np.repeat(np.arange(10), 20)
    tr, va, te = stratified_split(LABELS, (0.6, 0.2, 0.2), seed=0, groups=groups)
    assert not set(groups[tr]) & set(groups[te]) and not set(groups[va]) & set(groups[te])
    assert len(tr) + len(va) + len(te) == 200 and len(te) > 0


def test_k_per_class():
    idx = k_per_class(LABELS, 3, seed=0)
    assert np.bincount(LABELS[idx]).tolist() == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="fewer than k"):
        k_per_class(LABELS, 51)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="non-empty"):
        stratified_split([])
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(LABELS, (0.5, 0.1, 0.1))


def test_epoch_sampler_depends_on_seed_and_epoch_only():
    from tlkit.data.splits import EpochSampler

    a = EpochSampler(20, seed=1)
    first, second = list(a), list(a)  # advances by itself
    assert sorted(first) == list(range(20)) and first != second
    b = EpochSampler(20, seed=1)
    b.set_epoch(1)
    assert list(b) == second
    assert list(EpochSampler(20, seed=2)) != first
    with pytest.raises(ValueError, match="at least one"):
        EpochSampler(0)


def test_datasplits_loaders_shuffle_train_only_and_refuse_a_private_generator():
    import torch
    from torch.utils.data import TensorDataset

    from tlkit.data.splits import DataSplits, seeded_loader

    ds = TensorDataset(torch.arange(10))
    train, val, test = DataSplits(ds, ds, ds, ["x"]).loaders(batch_size=10, seed=0)
    assert torch.cat([b[0] for b in val]).tolist() == list(range(10)) == torch.cat([b[0] for b in test]).tolist()
    assert sorted(next(iter(train))[0].tolist()) == list(range(10)) and next(iter(train))[0].tolist() != list(range(10))
    with pytest.raises(ValueError, match="generator"):
        seeded_loader(ds, 2, generator=torch.Generator())
