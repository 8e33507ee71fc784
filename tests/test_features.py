"""Feature caching: computed once, read back from disk, keyed, and never trusted when corrupt."""

import errno
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tlkit import features as feat


class CountingBackbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    return tmp_path


def _loader(n=10):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 2), batch_size=4)


def test_features_match_the_backbone_and_labels(cache):
    bb, loader = CountingBackbone(), _loader()
    x, y = feat.extract_features(bb, loader, device=torch.device("cpu"), progress=False)
    assert x.shape == (10, 3) and torch.equal(y, torch.arange(10) % 2)
    assert torch.allclose(x, bb.lin(loader.dataset.tensors[0]).detach(), atol=1e-6)


def test_cache_hit_skips_the_backbone(cache):
    bb, loader = CountingBackbone(), _loader()
    a, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k1", progress=False)
    calls = bb.calls
    b, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k1", progress=False)
    assert bb.calls == calls and torch.equal(a, b)
    assert len(list((cache / "features").glob("k1@*.safetensors"))) == 1


def _cached_file(cache, key):
    (path,) = (cache / "features").glob(f"{key}@*.safetensors")
    return path


def test_corrupt_cache_is_recomputed(cache):
    bb, loader = CountingBackbone(), _loader()
    feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k2", progress=False)
    _cached_file(cache, "k2").write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="damaged"):
        x, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k2", progress=False)
    assert x.shape == (10, 3)


def test_a_truncated_cache_file_is_explained_and_recomputed(cache):
    """Before: a cut-off file was silently deleted (no word of why the run was slow again)."""
    bb, loader = CountingBackbone(), _loader()
    good, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k3", progress=False)
    path = _cached_file(cache, "k3")
    path.write_bytes(path.read_bytes()[:-20])  # as a full disk or a killed run leaves it
    calls = bb.calls
    with pytest.warns(UserWarning, match=r"k3@.*damaged.*computing the features again"):
        again, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k3", progress=False)
    assert bb.calls > calls and torch.equal(again, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and the rewritten file is good again
        feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k3", progress=False)


def test_changing_one_pixel_misses_the_cache(cache):
    """Before: the cache checked only the number of items, so changed data returned stale features."""
    bb, loader = CountingBackbone(), _loader()
    feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k4", progress=False)
    calls = bb.calls
    loader.dataset.tensors[0][7, 2] += 0.5  # one value of one input
    x, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k4", progress=False)
    assert bb.calls > calls, "changed data must be recomputed"
    assert torch.allclose(x, bb.lin(loader.dataset.tensors[0]).detach(), atol=1e-6)
    assert len(list((cache / "features").glob("k4@*"))) == 1, "the stale file is replaced, not kept beside"


class Wide(CountingBackbone):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1000)  # 4,000 weights: the old fingerprint read only every 62nd


def test_changing_one_weight_misses_the_cache(cache):
    """Before: model_fingerprint sampled ~64 values per tensor, so most single-weight changes kept the same key."""
    bb, loader = Wide(), _loader()
    before = feat.model_fingerprint(bb)
    feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k5", progress=False)
    calls = bb.calls
    with torch.no_grad():
        bb.lin.weight.view(-1)[1] += 1e-3  # not one of the sampled positions
    assert feat.model_fingerprint(bb) != before
    feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k5", progress=False)
    assert bb.calls > calls


def test_a_function_backbone_is_fingerprinted_through_its_module(cache):
    inner, loader = CountingBackbone(), _loader()
    fn = lambda x: inner(x)  # noqa: E731  a wrapper, as text and speech lessons use
    feat.extract_features(fn, loader, device=torch.device("cpu"), cache_key="k6", progress=False)
    with torch.no_grad():
        inner.lin.bias[0] += 1.0
    calls = inner.calls
    feat.extract_features(fn, loader, device=torch.device("cpu"), cache_key="k6", progress=False)
    assert inner.calls > calls


def test_data_fingerprint_sees_items_order_and_types():
    ds = TensorDataset(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 0]))
    base = feat.data_fingerprint(ds)
    assert feat.data_fingerprint(TensorDataset(torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 1]))) != base
    assert feat.data_fingerprint(ds, order=[2, 1, 0]) != feat.data_fingerprint(ds, order=[0, 1, 2])
    texts = [("a review", 1), ("another", 0)]
    assert feat.data_fingerprint(texts) != feat.data_fingerprint([("a review", 1), ("another", 1)])
    with pytest.raises(TypeError, match="fingerprint"):
        feat.data_fingerprint([object()])


def test_a_full_disk_while_caching_is_explained_not_fatal(cache, monkeypatch):
    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feat, "atomic_write", full)
    with pytest.warns(UserWarning, match="disk is full.*not cached"):
        x, _ = feat.extract_features(CountingBackbone(), _loader(), device=torch.device("cpu"), cache_key="k7", progress=False)
    assert x.shape == (10, 3)


def test_dict_batches_and_bad_outputs():
    class DictBackbone(nn.Module):
        def forward(self, input_ids, attention_mask):
            return (input_ids * attention_mask).float()

    batches = [{"input_ids": torch.ones(2, 3), "attention_mask": torch.ones(2, 3), "labels": torch.tensor([0, 1])}]
    x, y = feat.compute_features(DictBackbone(), batches, device=torch.device("cpu"), progress=False)
    assert x.shape == (2, 3) and y.tolist() == [0, 1]
    with pytest.raises(ValueError, match="batch, features"):
        feat.compute_features(lambda x: x.unsqueeze(1), [(torch.ones(2, 3), torch.zeros(2))], device=torch.device("cpu"), progress=False)


def test_empty_loader_and_bad_key_are_clear_errors(cache):
    with pytest.raises(ValueError, match="no batches"):
        feat.compute_features(CountingBackbone(), [], device=torch.device("cpu"), progress=False)
    with pytest.raises(ValueError, match="cache_key"):
        feat.extract_features(CountingBackbone(), _loader(), device=torch.device("cpu"), cache_key="../escape")


def test_fingerprint_changes_with_weights():
    bb = CountingBackbone()
    before = feat.model_fingerprint(bb)
    with torch.no_grad():
        bb.lin.weight.add_(1.0)
    assert feat.model_fingerprint(bb) != before


def test_features_loader_batches():
    loader = feat.features_loader(torch.randn(5, 2), torch.zeros(5), batch_size=2)
    assert [len(b[0]) for b in loader] == [2, 2, 1]
    with pytest.raises(ValueError, match="differ in length"):
        feat.features_loader(torch.randn(5, 2), torch.zeros(4))
