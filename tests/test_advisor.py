"""The advisor: block features by hooks, layer-wise probes, a recommendation that moves the right way, L2-SP."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tlkit import advisor
from tlkit.freeze import unfreeze_last


class TinyNet(nn.Module):
    """stem -> two blocks -> head, like a small CNN; `calls` counts forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU()),
                                    nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU()))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.head(self.blocks(self.stem(x)))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    return tmp_path


def _loader(n=12):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 5, 5, generator=g), torch.arange(n) % 3), batch_size=5)


def _separable(n=120, dim=6, signal=3.0, seed=0):
    """(X, y) with 3 classes; `signal` scales how far apart the class means are (0: pure noise)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    means = rng.normal(size=(3, dim)) * signal
    return (means[y] + rng.normal(size=(n, dim))).astype(np.float32), y


# ------------------------------------------------------------------------------------------- block features
def test_probe_layers_follow_the_layer_groups_and_skip_the_head():
    assert advisor.probe_layers(TinyNet()) == {"stem": "stem", "blocks.0": "blocks.0", "blocks.1": "blocks.1"}


def test_block_features_are_the_pooled_activations(cache):
    torch.manual_seed(0)
    model, loader = TinyNet(), _loader()
    feats, labels = advisor.block_features(model, loader, device="cpu", progress=False)
    assert list(feats) == ["stem", "blocks.0", "blocks.1"]
    x = loader.dataset.tensors[0]
    with torch.no_grad():
        h0 = model.stem(x)
        h1 = model.blocks[0](h0)
    assert feats["stem"].shape == (12, 4) and feats["blocks.1"].shape == (12, 8)
    assert torch.allclose(feats["stem"], h0.mean(dim=(2, 3)), atol=1e-6)
    assert torch.allclose(feats["blocks.0"], h1.mean(dim=(2, 3)), atol=1e-6)
    assert torch.equal(labels, torch.arange(12) % 3)
    assert all(not m._forward_hooks for m in model.modules()), "hooks must be removed afterwards"


def test_block_features_by_module_name_and_from_the_cache(cache):
    model, loader = TinyNet(), _loader()
    first, _ = advisor.block_features(model, loader, ["blocks.1"], "cpu", cache_key="tiny-b1", progress=False)
    calls = model.calls
    again, _ = advisor.block_features(model, loader, ["blocks.1"], "cpu", cache_key="tiny-b1", progress=False)
    assert model.calls == calls + 1, "a cache hit runs the model once (one example, for the widths), not over the data"
    assert torch.equal(first["blocks.1"], again["blocks.1"])


def test_block_features_keep_training_mode_and_reject_unknown_names(cache):
    model = TinyNet().train()
    advisor.block_features(model, _loader(), ["stem"], "cpu", progress=False)
    assert model.training
    with pytest.raises(ValueError, match="No module named"):
        advisor.block_features(model, _loader(), ["nope"], "cpu", progress=False)


# ------------------------------------------------------------------------------------------- probes
def test_layerwise_probe_finds_the_informative_layer():
    good, y = _separable(signal=3.0)
    noise, _ = _separable(signal=0.0, seed=1)
    layers = {"noise": (noise[:60], y[:60], noise[60:], y[60:]), "good": (good[:60], y[:60], good[60:], y[60:])}
    probe = advisor.layerwise_probe(layers)
    assert list(probe.columns) == ["layer", "depth", "dim", "train_acc", "val_acc"]
    assert probe.layer.tolist() == ["noise", "good"] and probe.depth.tolist() == [0, 1]
    assert probe.val_acc[1] > 0.9 and probe.val_acc[0] < 0.6


def test_linear_probe_rejects_mismatched_lengths():
    x, y = _separable()
    with pytest.raises(ValueError, match="differ in length"):
        advisor.linear_probe_accuracy(x, y[:-1], x, y)


def test_domain_similarity():
    assert advisor.domain_similarity(1.0, 0.4) == 1.0
    assert advisor.domain_similarity(0.4, 0.4) == 0.0
    assert advisor.domain_similarity(0.3, 0.4) == 0.0  # worse than random features: clipped at 0
    assert advisor.domain_similarity(0.7, 0.4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        advisor.domain_similarity(70, 40)


# ------------------------------------------------------------------------------------------- recommendation
def _probe(accs):
    return pd.DataFrame({"layer": [f"block{i}" for i in range(len(accs))], "val_acc": accs})


RISING = _probe([0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9])
EARLY_PEAK = _probe([0.3, 0.5, 0.7, 0.75, 0.6, 0.5, 0.45, 0.4])


def test_small_data_and_a_close_domain_mean_a_frozen_backbone(capsys):
    rec = advisor.recommend_finetuning(RISING, 10, domain_similarity=0.8)
    assert rec.n_unfreeze == 0 and rec.unfreeze_last == 1 and "feature extraction" in rec.strategy
    assert isinstance(rec.lr, float)
    printed = capsys.readouterr().out
    assert "10 labelled examples per class" in printed and "0.80" in printed and "block7" in printed


def test_more_data_unfreezes_more():
    counts = [advisor.recommend_finetuning(RISING, n, 0.8, verbose=False).n_unfreeze for n in (5, 50, 500, 5000)]
    assert counts == sorted(counts) and counts[0] < counts[-1] == len(RISING)


def test_an_early_peak_unfreezes_more_and_is_explained():
    flat = advisor.recommend_finetuning(RISING, 50, verbose=False)
    peaked = advisor.recommend_finetuning(EARLY_PEAK, 50, verbose=False)
    assert peaked.n_unfreeze > flat.n_unfreeze
    assert "peaks early" in peaked.explanation and "block3" in peaked.explanation
    assert isinstance(peaked.lr, slice) and peaked.lr.start < peaked.lr.stop


def test_a_distant_domain_unfreezes_more_with_wider_early_rates():
    close = advisor.recommend_finetuning(RISING, 200, 0.9, verbose=False)
    far = advisor.recommend_finetuning(RISING, 200, 0.1, verbose=False)
    assert far.n_unfreeze > close.n_unfreeze
    assert far.lr.start / far.lr.stop > close.lr.start / close.lr.stop  # early layers get a larger share of the head's rate
    assert "0.10" in far.explanation and "distant" in far.explanation


def test_very_little_data_caps_unfreezing_even_far_away():
    rec = advisor.recommend_finetuning(EARLY_PEAK, 5, 0.05, verbose=False)
    assert 0 < rec.n_unfreeze <= len(EARLY_PEAK) // 3 + 1
    assert "overfit" in rec.explanation


def test_recommendation_plugs_into_freeze():
    model = TinyNet()
    probe = _probe([0.5, 0.6, 0.7])
    rec = advisor.recommend_finetuning(probe, 5000, verbose=False)
    unfreeze_last(model, rec.unfreeze_last)
    assert all(p.requires_grad for p in model.parameters())


def test_recommendation_rejects_bad_inputs():
    with pytest.raises(ValueError, match="n_labelled_per_class"):
        advisor.recommend_finetuning(RISING, 0)
    with pytest.raises(ValueError, match="domain_similarity"):
        advisor.recommend_finetuning(RISING, 10, domain_similarity=60)
    with pytest.raises(ValueError, match="val_acc"):
        advisor.recommend_finetuning(pd.DataFrame({"layer": ["a"]}), 10)


# ------------------------------------------------------------------------------------------- L2-SP and drift
def test_l2sp_is_zero_at_the_reference_and_matches_the_formula():
    torch.manual_seed(0)
    model = TinyNet()
    ref = advisor.snapshot_weights(model)
    assert advisor.l2sp_penalty(model, ref, alpha=0.1).item() == 0.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    expected = sum(0.5 * 0.1 * (p.detach() - ref[n]).pow(2).sum() for n, p in model.named_parameters())
    assert advisor.l2sp_penalty(model, ref, alpha=0.1).item() == pytest.approx(expected.item(), rel=1e-6)


def test_l2sp_gradient_pulls_back_towards_the_pretrained_weights():
    torch.manual_seed(0)
    model = TinyNet()
    ref = advisor.snapshot_weights(model)
    with torch.no_grad():
        model.stem[0].weight.add_(1.0)
    before = (model.stem[0].weight - ref["stem.0.weight"]).norm().item()
    opt = torch.optim.SGD(model.parameters(), lr=0.9)
    advisor.l2sp_penalty(model, ref, alpha=1.0).backward()
    opt.step()
    assert (model.stem[0].weight - ref["stem.0.weight"]).norm().item() < before / 2


def test_l2sp_skips_frozen_and_treats_new_parameters_with_beta():
    model = TinyNet()
    ref = advisor.snapshot_weights(model, exclude=r"^head\.")  # the head is new
    with torch.no_grad():
        model.stem[0].weight.add_(1.0)
    model.stem[0].weight.requires_grad_(False)
    assert advisor.l2sp_penalty(model, ref, alpha=1.0).item() == 0.0
    head_sq = sum(p.detach().pow(2).sum() for p in model.head.parameters())
    assert advisor.l2sp_penalty(model, ref, alpha=1.0, beta=2.0).item() == pytest.approx(head_sq.item(), rel=1e-6)
    with pytest.raises(ValueError, match="snapshot_weights"):
        advisor.l2sp_penalty(model, {"other": torch.zeros(1)}, alpha=1.0)


def test_weight_drift_shows_which_group_moved():
    model = TinyNet()
    ref = advisor.snapshot_weights(model)
    with torch.no_grad():
        model.blocks[1][0].weight.mul_(2.0)
    drift = advisor.weight_drift(model, ref).set_index("group").relative_drift
    assert drift["stem"] == 0.0 and drift["blocks.0"] == 0.0 and drift["blocks.1"] > 0.5


# ------------------------------------------------------------------------------------------- layouts and real encoders
class _Layouts(nn.Module):
    """Four blocks whose outputs are (B, C, T) from a Conv1d, (B, T, D) from a Linear, (B, H, W, C) as in Swin, and a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.audio = nn.Conv1d(3, 6, 3, padding=1)  # (B, 6, 10)
        self.tokens = nn.Linear(6, 5)  # (B, 10, 5)
        self.swin = nn.Linear(5, 7)  # (B, 4, 4, 7) on a channels-last map
        self.pair = _Pair()
        self.head = nn.Linear(7, 2)

    def forward(self, x):
        a = self.audio(x)
        t = self.tokens(a.transpose(1, 2))
        s = self.swin(t[:, :4].unsqueeze(2).expand(-1, 4, 4, -1).contiguous())
        return self.head(self.pair(s)[0].mean(dim=(1, 2)))


class _Pair(nn.Module):
    """Returns (hidden_states, None), as transformer layers do."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(7)

    def forward(self, x):
        return self.norm(x), None


def _loader_of(x, n_classes=2, batch_size=4):
    return DataLoader(TensorDataset(x, torch.arange(len(x)) % n_classes), batch_size=batch_size)


def test_pooling_follows_each_layout(cache):
    torch.manual_seed(0)
    model, x = _Layouts(), torch.randn(6, 3, 10)
    names = ["audio", "tokens", "swin", "pair"]
    feats, _ = advisor.block_features(model, _loader_of(x), names, "cpu", progress=False)
    with torch.no_grad():
        a = model.audio(x)
        t = model.tokens(a.transpose(1, 2))
        s = model.swin(t[:, :4].unsqueeze(2).expand(-1, 4, 4, -1))
        p = model.pair.norm(s)
    assert torch.allclose(feats["audio"], a.mean(dim=2), atol=1e-6)  # (B, C, T): average over time
    assert torch.allclose(feats["tokens"], t.mean(dim=1), atol=1e-6)  # (B, T, D): average over tokens
    assert torch.allclose(feats["swin"], s.mean(dim=(1, 2)), atol=1e-6)  # (B, H, W, C): average over space
    assert torch.allclose(feats["pair"], p.mean(dim=(1, 2)), atol=1e-6)  # a tuple: its first tensor


def test_pooling_reads_model_outputs():
    from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

    hidden = torch.randn(2, 5, 4)
    assert torch.allclose(advisor._pool(BaseModelOutput(last_hidden_state=hidden)), hidden.mean(dim=1))
    assert torch.allclose(advisor._pool(CausalLMOutput(logits=hidden)), hidden.mean(dim=1))  # no last_hidden_state: its tensor


def _deberta():
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    cfg = DebertaV2Config(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          max_position_embeddings=32, relative_attention=True, position_buckets=8, norm_rel_ebd="layer_norm",
                          conv_kernel_size=3, pos_att_type=["p2c", "c2p"], num_labels=2)
    return DebertaV2ForSequenceClassification(cfg).eval()


def test_block_features_on_deberta_v2(cache):
    torch.manual_seed(0)
    model = _deberta()
    ids = torch.randint(3, 60, (6, 7))
    rows = [{"input_ids": i, "attention_mask": torch.ones(7, dtype=torch.long), "labels": torch.tensor(k % 2)} for k, i in enumerate(ids)]
    feats, labels = advisor.block_features(model, DataLoader(rows, batch_size=3), device="cpu", progress=False)
    assert list(feats)[-2:] == ["deberta.encoder.layer.0", "deberta.encoder.layer.1"]
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
    assert torch.allclose(feats["deberta.encoder.layer.0"], states[1].mean(dim=1), atol=1e-5)
    assert torch.allclose(feats["deberta.encoder.layer.1"], states[2].mean(dim=1), atol=1e-5)
    assert len(labels) == 6


def _whisper_config():
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                         decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                         max_source_positions=16, max_target_positions=16, classifier_proj_size=8, num_labels=2,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


def test_block_features_on_a_whisper_audio_classifier(cache):
    from transformers import WhisperForAudioClassification

    torch.manual_seed(0)
    model = WhisperForAudioClassification(_whisper_config()).eval()
    mels = torch.randn(6, 8, 32)
    feats, _ = advisor.block_features(model, _loader_of(mels), device="cpu", progress=False)
    enc = model.encoder
    with torch.no_grad():
        stem = enc.conv2(nn.functional.gelu(enc.conv1(mels)))  # (B, D, T): channels first
        states = enc(mels, output_hidden_states=True).hidden_states
    first = list(feats)[0]
    assert torch.allclose(feats[first], stem.mean(dim=2), atol=1e-5)
    assert torch.allclose(feats["encoder.layers.0"], states[1].mean(dim=1), atol=1e-5)
    assert torch.allclose(feats["encoder.layer_norm"], states[2].mean(dim=1), atol=1e-5)  # the last state is normalised


def test_block_features_on_the_course_speech_classifiers(cache):
    from transformers import Wav2Vec2Config, Wav2Vec2Model, WhisperModel

    from tlkit.models.whisper import HFSpeechClassifier, SpeechClassifier, encoder_hidden_states

    torch.manual_seed(0)
    whisper = SpeechClassifier(WhisperModel(_whisper_config()).encoder, num_classes=2).eval()
    mels = torch.randn(6, 8, 20)
    feats, _ = advisor.block_features(whisper, _loader_of(mels), device="cpu", progress=False)
    assert list(feats) == ["stem", "encoder.layers.0", "encoder.layers.1"]
    with torch.no_grad():
        states = encoder_hidden_states(whisper.backbone, mels)
    assert torch.allclose(feats["encoder.layers.0"], states[1].mean(dim=1), atol=1e-5)
    assert torch.allclose(feats["encoder.layers.1"], states[2].mean(dim=1), atol=1e-5)  # after the final LayerNorm
    cfg = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
                         conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)
    wav2vec = HFSpeechClassifier(Wav2Vec2Model(cfg), num_classes=2).eval()
    feats, _ = advisor.block_features(wav2vec, _loader_of(torch.randn(6, 800)), device="cpu", progress=False)
    assert list(feats) == ["stem", "encoder.layers.0", "encoder.layers.1"] and all(f.shape == (6, 16) for f in feats.values())


class _BatchNormAct(nn.BatchNorm2d):
    """timm's BatchNormAct2d: a BatchNorm that holds its activation as a child module."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(super().forward(x))


def test_a_square_map_as_wide_as_it_is_tall_pools_over_space(cache):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), _BatchNormAct(4)).eval()  # (B, 4, 4, 4): every axis is 4
    x = torch.randn(6, 3, 4, 4)
    feats, _ = advisor.block_features(model, _loader_of(x), ["1"], "cpu", progress=False)
    with torch.no_grad():
        assert torch.allclose(feats["1"], model(x).mean(dim=(2, 3)), atol=1e-6)
