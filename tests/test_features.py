"""Feature caching: computed once, read back from disk, keyed, and never trusted when corrupt."""

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
    assert (cache / "features" / "k1.safetensors").exists()


def test_corrupt_cache_is_recomputed(cache):
    bb, loader = CountingBackbone(), _loader()
    feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k2", progress=False)
    (cache / "features" / "k2.safetensors").write_bytes(b"not a safetensors file")
    x, _ = feat.extract_features(bb, loader, device=torch.device("cpu"), cache_key="k2", progress=False)
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
