"""Tests for tlkit.data.elpv: a tiny fake wheel folder (caching, splits, broken files) and a few real cells."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tlkit.data import elpv
from tlkit.data.elpv import (ElpvImages, class_weights, balanced_sampler, elpv_splits, load_elpv, load_elpv_arrays,
                             load_elpv_splits, load_elpv_table, random_dihedral, stratified_subset)

PROBS = [0.0, 1 / 3, 2 / 3, 1.0]


def _write_fake_package(root, n: int = 24):
    """A folder shaped like the installed wheel: elpv_dataset/{__init__.py, data/labels.csv, data/images/*.png}."""
    pkg = root / "elpv_dataset"
    (pkg / "data" / "images").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the loader must not import the package')\n")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        p, kind = PROBS[i % 4], ("mono", "poly")[i % 2]
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8) // (1 + i % 4), mode="L").save(pkg / "data" / "images" / f"cell{i:04d}.png")
        rows.append(f"images/cell{i:04d}.png  {p:.6f}  {kind}")
    (pkg / "data" / "labels.csv").write_text("\n".join(rows) + "\n")
    return pkg / "data"


@pytest.fixture
def fake(tmp_path, monkeypatch):
    folder = _write_fake_package(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    return folder


def test_fake_wheel_is_found_without_importing_it(fake):
    assert elpv.data_folder() == fake
    table = load_elpv_table()
    assert list(table.columns[:4]) == ["path", "defect_probability", "cell_type", "label"]
    assert table["label"].tolist() == [0, 0, 1, 1] * 6  # defective when the probability is >= 0.5
    assert table["grade"].tolist() == [0, 1, 2, 3] * 6
    assert set(table["cell_type"]) == {"mono", "poly"}


def test_arrays_are_resized_scaled_and_cached(fake, tmp_path, capsys):
    images, labels, types = load_elpv_arrays(32)
    assert images.shape == (24, 32, 32) and images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 1, 1] * 6 and types[:2].tolist() == ["mono", "poly"]
    _, grades, _ = load_elpv_arrays(32, binary=False)
    assert grades.tolist() == [0, 1, 2, 3] * 6
    cached = list((tmp_path / "cache" / "elpv").glob("elpv-32px-*.npz"))
    assert len(cached) == 1
    with np.load(cached[0], allow_pickle=False) as f:
        assert f["pixels"].dtype == np.uint8
    again, _, _ = load_elpv_arrays(32)
    np.testing.assert_array_equal(images, again)
    cached[0].write_bytes(cached[0].read_bytes()[:100])  # truncated cache: recomputed, with a message
    redone, _, _ = load_elpv_arrays(32)
    np.testing.assert_array_equal(images, redone)
    assert "recomputing" in capsys.readouterr().err
    load_elpv_arrays(40)  # another size is another cache file
    assert len(list((tmp_path / "cache" / "elpv").glob("*.npz"))) == 2


def test_cache_key_follows_the_files(fake, tmp_path):
    first, _, _ = load_elpv_arrays(32)
    Image.fromarray(np.full((40, 40), 255, np.uint8), mode="L").save(fake / "images" / "cell0000.png")
    second, _, _ = load_elpv_arrays(32)
    assert second[0].min() == 1.0 and not np.array_equal(first[0], second[0])


def test_broken_files_give_clear_errors(fake):
    (fake / "images" / "cell0003.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cell0003.png is missing or empty.*pip install --no-deps"):
        load_elpv_arrays(32)
    (fake / "images" / "cell0003.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ValueError, match=r"cell0003.png is not a readable PNG"):
        load_elpv_arrays(32)
    with pytest.raises(ValueError, match="image_size"):
        load_elpv_arrays(8)
    (fake / "labels.csv").write_text("images/cell0000.png 0.5 mono\n")
    with pytest.raises(ValueError, match="probabilities other than"):
        load_elpv_table()


def test_missing_wheel_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps elpv-dataset==1\.0\.0\.post1"):
        elpv.data_folder()


def test_splits_are_stratified_disjoint_and_the_test_split_is_fixed():
    labels = np.array([0] * 700 + [1] * 300)
    a, b = elpv_splits(labels, seed=0), elpv_splits(labels, seed=1)
    assert sum(len(v) for v in a.values()) == 1000 and len(np.unique(np.concatenate(list(a.values())))) == 1000
    assert [len(a[n]) for n in ("train", "val", "test")] == [600, 150, 250]
    np.testing.assert_array_equal(a["test"], b["test"])  # independent of the seed
    assert not np.array_equal(a["val"], b["val"])
    for part in a.values():
        assert labels[part].mean() == pytest.approx(0.3, abs=0.01)
    types = np.array(["mono", "poly"] * 500)
    c = elpv_splits(labels, strata=types)
    assert (types[c["test"]] == "mono").mean() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="sum below 1"):
        elpv_splits(labels, val_frac=0.5, test_frac=0.5)
    sub = stratified_subset(a["train"], labels, 60, seed=0)
    assert len(sub) == 60 and labels[sub].mean() == pytest.approx(0.3) and set(sub) <= set(a["train"])


def test_class_weights_and_sampler_balance_the_classes():
    labels = np.array([0] * 75 + [1] * 25)
    w = class_weights(labels)
    assert torch.allclose(w, torch.tensor([100 / 150, 100 / 50]))
    assert (w[torch.as_tensor(labels)].reshape(-1).sum() / 2).item() == pytest.approx(50.0)  # equal total weight per class
    drawn = labels[list(balanced_sampler(labels, num_samples=4000, seed=0))]
    assert drawn.mean() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="at least one example"):
        class_weights(np.array([0, 0, 2]))


def test_dataset_normalises_to_three_channels_and_augments_by_symmetries():
    images = np.random.default_rng(0).random((6, 16, 16), dtype=np.float32)
    ds = ElpvImages(images, np.array([0, 1] * 3), np.array(["mono"] * 6))
    x, y = ds[1]
    assert x.shape == (3, 16, 16) and y == 1
    assert torch.allclose(x[0], torch.from_numpy(images[1]) * 2 - 1)
    inputs, labels = ds.tensors()
    assert inputs.shape == (6, 3, 16, 16) and labels.dtype == torch.int64
    grey = ElpvImages(images, np.zeros(6, dtype=np.int64), channels=1, augment=True)
    for _ in range(5):
        out, _ = grey[0]
        target = torch.from_numpy(images[0]) * 2 - 1
        options = [torch.rot90(t, k, dims=(-2, -1)) for t in (target, torch.flip(target, dims=(-1,))) for k in range(4)]
        assert any(torch.allclose(out[0], o) for o in options)
    assert random_dihedral(torch.zeros(1, 4, 4)).shape == (1, 4, 4)
    with pytest.raises(ValueError, match="channels"):
        ElpvImages(images, np.zeros(6), channels=2)


def test_load_elpv_splits_on_the_fake_wheel(fake):
    splits = load_elpv_splits(32, seed=0, augment=True)
    assert sum(splits.info["sizes"].values()) == 24 and splits.classes == ["functional", "defective"]
    assert splits.train.transform is not None and splits.test.transform is None
    assert load_elpv("test", 32).images.shape[1:] == (1, 32, 32)
    with pytest.raises(ValueError, match="split must be one of"):
        load_elpv("holdout", 32)


@pytest.mark.skipif(importlib.util.find_spec("elpv_dataset") is None, reason=f"needs `{elpv.INSTALL_HINT}`")
def test_real_wheel_has_2624_rated_cells_and_readable_images():
    table = load_elpv_table()
    assert len(table) == 2624 and table["path"].is_unique
    assert table["label"].mean() == pytest.approx(821 / 2624)  # 106 cells at p=2/3 and 715 at p=1
    assert table["cell_type"].value_counts().to_dict() == {"poly": 1550, "mono": 1074}
    folder = elpv.data_folder()
    cells = [elpv._read_cell(folder / rel, 64) for rel in table["path"][:3]]
    assert all(c.shape == (64, 64) and c.dtype == np.uint8 and c.std() > 3 for c in cells)  # real, non-blank pictures
    assert isinstance(table, pd.DataFrame)
