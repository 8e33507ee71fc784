"""Tests for tlkit.data.animals: real silhouettes, fixed stratified splits, k labels per class, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlkit.data import animals
from tlkit.data.animals import ANIMAL_CLASSES, load_animal_arrays, load_animals, load_raw_animals, split_indices


@pytest.fixture(scope="module")
def raw():
    return load_raw_animals()


def test_raw_data_is_real_balanced_and_deduplicated(raw):
    images, labels = raw
    assert images.dtype == np.uint8 and images.shape[1:] == (28, 28)
    assert 9_700 <= len(images) <= 10_000 and len(images) == len(labels)
    assert len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)  # no exact repeats left
    counts = np.bincount(labels, minlength=10)
    assert len(counts) == 10 and counts.min() >= 800
    full, _ = load_raw_animals(deduplicate=False)
    assert len(full) == 10_000
    assert 0.2 < (images > 127).mean() < 0.6  # silhouettes: a white animal on black, not noise or blank


def test_splits_are_disjoint_fixed_and_stratified(raw):
    _, labels = raw
    a = split_indices(labels, seed=0)
    b = split_indices(labels, seed=3, k_per_class=20)
    for s1, s2 in [("train", "val"), ("train", "test"), ("val", "test")]:
        assert not set(a[s1]) & set(a[s2])
    assert sum(len(v) for v in a.values()) == len(labels)
    assert 950 <= len(a["test"]) <= 1_000
    np.testing.assert_array_equal(a["test"], b["test"])  # the held-out test set does not depend on seed or k
    np.testing.assert_array_equal(a["val"], b["val"])
    assert set(b["train"]) <= set(a["train"])
    test_share = np.bincount(labels[a["test"]], minlength=10) / np.bincount(labels, minlength=10)
    assert np.allclose(test_share, 0.1, atol=0.01)


def test_k_per_class_counts_determinism_and_seeds(raw):
    _, labels = raw
    first = split_indices(labels, seed=1, k_per_class=5)["train"]
    again = split_indices(labels, seed=1, k_per_class=5)["train"]
    other = split_indices(labels, seed=2, k_per_class=5)["train"]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.bincount(labels[first], minlength=10).tolist() == [5] * 10


def test_max_per_class_caps_every_split_with_nested_test_sets(raw):
    _, labels = raw
    small = split_indices(labels, max_per_class=10)
    big = split_indices(labels, max_per_class=30)
    for name in ("train", "val", "test"):
        assert np.bincount(labels[small[name]], minlength=10).tolist() == [10] * 10
    assert set(small["test"]) <= set(big["test"])


def test_load_animals_items_are_normalised_backbone_inputs():
    splits = load_animals(k_per_class=3, max_per_class=5, image_size=64)
    assert splits.classes == list(ANIMAL_CLASSES)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 50, 50)
    x, y = splits.train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and isinstance(y, int)
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    torch.testing.assert_close(x[0], x[2])  # grey copied to 3 channels
    inputs, targets = splits.test.tensors()
    assert inputs.shape == (50, 3, 64, 64) and targets.dtype == torch.int64
    X, labels = splits.train.as_arrays()
    assert X.shape == (30, 784) and X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert np.bincount(labels).tolist() == [3] * 10


def test_raw_resolution_grey_and_augmentation():
    splits = load_animals(max_per_class=2, image_size=28, channels=1, augment=True)
    x, _ = splits.train[0]
    assert x.shape == (1, 28, 28)
    raw = (torch.from_numpy(splits.train.images[0]).float() / 255 - 0.5) / 0.5
    torch.manual_seed(0)
    changed = any(not torch.equal(splits.train[0][0][0], raw) for _ in range(5))
    assert changed  # augmentation alters training images...
    torch.testing.assert_close(splits.test[0][0][0], (torch.from_numpy(splits.test.images[0]).float() / 255 - 0.5) / 0.5)  # ...never test ones


def test_load_animal_arrays_matches_load_animals():
    X, y = load_animal_arrays("test", max_per_class=4)
    splits = load_animals(max_per_class=4, image_size=28, channels=1)
    X2, y2 = splits.test.as_arrays()
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k_per_class": 5000}, "k_per_class=5000"),
        ({"k_per_class": 0}, "positive whole number"),
        ({"val_fraction": 0.6, "test_fraction": 0.5}, "sum below 1"),
        ({"image_size": 8}, "at least 16"),
        ({"channels": 2}, "channels must be 1"),
    ],
)
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_animals(**kwargs)


def test_unknown_split_and_missing_package(monkeypatch):
    with pytest.raises(ValueError, match="split must be one of"):
        load_animal_arrays("tset")
    monkeypatch.setattr(animals.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps animal-mnist==0\.4"):
        load_raw_animals()


def test_data_is_read_with_the_restricted_unpickler(monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("plain pickle.load must never read downloaded data")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    images, _ = load_raw_animals()
    assert len(images) > 9_000
