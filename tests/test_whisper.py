"""tlkit.models.whisper: the CTranslate2 reader, the name map into transformers, transcription, encoder features."""

import json
import re
import struct

import numpy as np
import pytest
import torch

from tlkit.models import whisper as W


def _string(text: str) -> bytes:
    data = text.encode() + b"\0"
    return struct.pack("<H", len(data)) + data


def _variable(name: str, array: np.ndarray, dtype_id: int) -> bytes:
    raw = array.tobytes()
    return _string(name) + struct.pack("<B", array.ndim) + struct.pack(f"<{array.ndim}I", *array.shape) + struct.pack("<BI", dtype_id, len(raw)) + raw


def test_read_ctranslate2_roundtrip(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    flag = np.array(3, dtype=np.int8)
    body = struct.pack("<I", 6) + _string("TestSpec") + struct.pack("<II", 1, 2)
    body += _variable("a/weight", weight, 4) + _variable("a/flag", flag, 1)
    body += struct.pack("<I", 1) + _string("b/weight") + _string("a/weight")
    (tmp_path / "model.bin").write_bytes(body)
    ct2 = W.read_ctranslate2(tmp_path / "model.bin")
    assert (ct2.binary_version, ct2.spec, ct2.spec_revision) == (6, "TestSpec", 1)
    assert ct2.variables["a/weight"].dtype == torch.float16 and ct2.variables["a/weight"].tolist() == weight.tolist()
    assert int(ct2.variables["a/flag"]) == 3
    assert ct2.aliases == {"b/weight": "a/weight"}
    (tmp_path / "cut.bin").write_bytes(body[:40])
    with pytest.raises(ValueError, match="truncated|ended early"):
        W.read_ctranslate2(tmp_path / "cut.bin")


@pytest.fixture(scope="module")
def ct2_model():
    return W.read_ctranslate2(W.offline_model_dir() / "model.bin")


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    """Convert from scratch into a fresh cache (so the converter really runs), then load from that cache."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLKIT_CACHE", str(cache))
        model, processor = W.load_whisper()
        assert (cache / "models" / "whisper-tiny.en.safetensors").is_file(), "the converted model should be cached"
        again, _ = W.load_whisper()  # from the cache this time
        for (n1, p1), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2)
    return model, processor


def test_wheel_layout_is_whisper_tiny_en(ct2_model):
    v = ct2_model.variables
    assert (ct2_model.binary_version, ct2_model.spec) == (6, "WhisperSpec") and len(v) == 148
    assert tuple(v["decoder/embeddings/weight"].shape) == (51864, 384) and v["decoder/embeddings/weight"].dtype == torch.float16
    assert tuple(v["encoder/layer_0/self_attention/linear_0/weight"].shape) == (3 * 384, 384)  # fused q, k, v
    assert ct2_model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}


def test_converter_maps_every_key_with_the_right_shape(ct2_model, whisper):
    model, processor = whisper
    config = W.whisper_config_from_ct2(ct2_model, sot_id=50257, eot_id=50256)
    assert (config.d_model, config.encoder_layers, config.decoder_layers, config.encoder_attention_heads, config.vocab_size) == (384, 4, 4, 6, 51864)
    state_dict = W.convert_ctranslate2_whisper(ct2_model, config)
    W.check_state_dict(model, state_dict)  # raises on any missing, unexpected or misshapen tensor
    assert len(state_dict) == len(model.state_dict()) - 1  # all but proj_out, which is tied
    fused = ct2_model.variables["encoder/layer_2/self_attention/linear_0/weight"].float()
    assert torch.equal(model.model.encoder.layers[2].self_attn.k_proj.weight, fused[384:768])
    assert model.model.encoder.layers[2].self_attn.k_proj.bias is None
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_converter_reports_missing_and_misshapen_tensors(ct2_model, whisper):
    model, _ = whisper
    config = W.whisper_config_from_ct2(ct2_model, sot_id=50257, eot_id=50256)
    broken = W.CT2Model(6, "WhisperSpec", 3, {k: t for k, t in ct2_model.variables.items() if k != "encoder/conv2/bias"}, {})
    with pytest.raises(ValueError, match="encoder/conv2/bias"):
        W.convert_ctranslate2_whisper(broken, config)
    state_dict = W.convert_ctranslate2_whisper(ct2_model, config)
    state_dict["model.encoder.conv1.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match="conv1.bias"):
        W.check_state_dict(model, state_dict)


def test_transcribes_a_synthesised_sentence(whisper):
    from tlkit.data.keywords import synthesize

    model, processor = whisper
    waveform = synthesize("Transfer learning reuses what a model already knows.", voice="en-us", sr=22050)
    text = W.transcribe(model, processor, waveform, sr=22050).lower()
    for word in ("transfer", "learning", "model", "knows"):
        assert word in text, f"{word!r} missing from transcript {text!r}"


def test_unpadded_encoder_matches_stock_encoder_and_padded_run(whisper):
    model, processor = whisper
    encoder = model.model.encoder
    rng = np.random.default_rng(0)
    clip = (0.1 * rng.standard_normal(16000) * np.sin(np.linspace(0, 30, 16000))).astype(np.float32)
    mel30 = torch.from_numpy(processor.feature_extractor(clip, sampling_rate=16000, return_tensors="np").input_features)
    with torch.no_grad():
        stock = encoder(mel30).last_hidden_state
        padded_states = W.encoder_hidden_states(encoder, mel30)  # the 30 s run, all layers
    torch.testing.assert_close(padded_states[-1], stock, atol=1e-4, rtol=1e-4)  # our forward = transformers' forward
    features = W.WhisperEncoderFeatures(encoder)
    unpadded = features(torch.from_numpy(clip)[None])  # 1 s: 50 positions instead of 1500
    assert unpadded.shape == (1, 5 * 384)
    padded = torch.stack([s[:, :50].mean(dim=1) for s in padded_states], dim=1)  # the same 1 s, cut from the 30 s run
    cos = torch.nn.functional.cosine_similarity(features.per_layer(unpadded), padded, dim=-1)[0]
    assert cos[0] > 0.99 and cos.min() > 0.7, cos  # stem identical; later layers attend over less context
    torch.testing.assert_close(W.WhisperEncoderFeatures(encoder, layer=-1)(torch.from_numpy(clip)[None]), unpadded[:, 4 * 384 :])
    torch.testing.assert_close(W.WhisperEncoderFeatures(encoder, layer=2)(torch.from_numpy(clip)[None]), unpadded[:, 2 * 384 : 3 * 384])


def test_pad_to_30s_runs_the_stock_length(whisper):
    model, _ = whisper
    mel = torch.randn(1, 80, 100)
    padded = W.pad_log_mel(mel)
    assert padded.shape == (1, 80, 3000) and torch.allclose(padded[..., 150], mel.amax() - 2.0)
    with pytest.raises(ValueError, match="30 s"):
        W.encoder_hidden_states(model.model.encoder, torch.randn(1, 80, 3002))


def test_speech_classifier_layer_groups_and_freezing(whisper):
    from tlkit.freeze import count_parameters, freeze, layer_groups, unfreeze_last

    model, _ = whisper
    clf = W.SpeechClassifier(model.model.encoder, num_classes=10)
    assert clf(torch.zeros(2, 16000)).shape == (2, 10)
    assert clf(torch.zeros(2, 80, 100)).shape == (2, 10)  # log-mels work too
    names = [g.name for g in layer_groups(clf)]
    assert names == ["stem", "encoder.layers.0", "encoder.layers.1", "encoder.layers.2", "encoder.layers.3", "head"]
    freeze(clf)
    assert count_parameters(clf)[0] == 384 * 10 + 10
    unfreeze_last(clf, 2)
    assert clf.backbone.layers[3].fc1.weight.requires_grad and clf.backbone.layer_norm.weight.requires_grad
    assert not clf.backbone.layers[2].fc1.weight.requires_grad
    short = W.SpeechClassifier(model.model.encoder, num_classes=3, num_layers=2)
    assert len(layer_groups(short)) == 4 and short(torch.zeros(1, 16000)).shape == (1, 3)
    assert len(model.model.encoder.layers) == 4, "cutting layers must not touch the caller's encoder"
    x = torch.randn(2, 16000) * 0.1
    probe_features = W.WhisperEncoderFeatures(model.model.encoder, layer=2)(x)  # the layer-2 probe's input
    torch.testing.assert_close(short(x), short.head(probe_features), atol=1e-5, rtol=1e-5)


def test_wav2vec2_style_encoders_plug_in_the_same_way():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from tlkit.freeze import layer_groups, unfreeze_last

    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4),
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    encoder = Wav2Vec2Model(config).eval()
    features = W.HFEncoderFeatures(encoder)
    out = features(torch.randn(2, 4000))
    assert out.shape == (2, 4 * 32) and features.per_layer(out).shape == (2, 4, 32)
    clf = W.HFSpeechClassifier(encoder, num_classes=5, num_layers=2)
    assert clf(torch.randn(2, 4000)).shape == (2, 5) and len(encoder.encoder.layers) == 3
    assert [g.name for g in layer_groups(clf)] == ["stem", "encoder.layers.0", "encoder.layers.1", "head"]
    unfreeze_last(clf, 1)
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}


def test_unknown_and_offline_names_explain_themselves(monkeypatch):
    with pytest.raises(ValueError, match="whisper-tiny.en"):
        W.load_whisper("whisper-huge")
    with pytest.raises(ValueError, match="load_speech_encoder"):
        W.load_whisper("facebook/wav2vec2-base")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TLKIT_CACHE", "/nonexistent-tlkit-cache-for-tests")
    with pytest.raises(RuntimeError, match="whisper-tiny.en"):
        W.load_speech_encoder("facebook/wav2vec2-base")


# ------------------------------------------------------------------------------------------ whisper-base (offline)


def test_join_parts_streams_and_checks_the_hash(tmp_path):
    import hashlib

    parts = [tmp_path / "a.part1", tmp_path / "a.part2"]
    parts[0].write_bytes(b"hello ")
    parts[1].write_bytes(b"world")
    good = hashlib.sha256(b"hello world").hexdigest()
    assert W.join_parts(parts, tmp_path / "joined.bin", good).read_bytes() == b"hello world"
    with pytest.raises(ValueError, match="SHA-256"):
        W.join_parts(parts, tmp_path / "other.bin", "0" * 64)
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "other.tmp").exists()


@pytest.fixture(scope="module")
def whisper_base():
    """whisper-base from its two wheels, converted once into the course cache (later runs read the cached safetensors)."""
    return W.load_whisper("whisper-base")


def test_whisper_base_is_multilingual_base_size(whisper_base):
    model, processor = whisper_base
    c = model.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads, c.vocab_size) == (512, 6, 6, 8, 51865)
    config = json.loads((W.offline_model_dir("whisper-base") / "config.json").read_text())
    assert len(config["lang_ids"]) == 99 and processor.tokenizer.convert_tokens_to_ids("<|de|>") in config["lang_ids"]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(72.6e6, rel=0.01)
    assert W.KNOWN_MODELS["whisper-base"]["source"] == "offline"


def _digit_sequence(speaker: str, digits: list[int]) -> np.ndarray:
    """Real speech: FSDD recordings of `digits` by one speaker, silence-trimmed, 0.25 s apart, at 16 kHz."""
    from tlkit.data.fsdd import fsdd_dir, load_audio, trim_silence

    try:
        folder = fsdd_dir(download=False)
    except Exception as err:  # no local copy: this check needs the recordings
        pytest.skip(f"FSDD recordings not available here ({err})")
    gap = np.zeros(4000, np.float32)
    return np.concatenate([x for d in digits for x in (trim_silence(load_audio(folder / f"{d}_{speaker}_0.wav", sr=16000)[0]), gap)])


def test_whisper_base_transcribes_real_spoken_digits(whisper_base):
    model, processor = whisper_base
    digits = [3, 1, 4, 1, 5, 9, 2, 6]
    text = W.transcribe(model, processor, _digit_sequence("jackson", digits), sr=16000)
    assert [int(t) for t in re.findall(r"\d", text)] == digits, text


def test_whisper_base_through_every_speech_entry_point(whisper_base):
    from tlkit import models
    from tlkit.freeze import layer_groups

    encoder = W.load_speech_encoder("whisper-base")
    assert len(encoder.layers) == 6 and encoder.config.d_model == 512
    features = W.speech_features("whisper-base", layer=-1)
    assert features(torch.zeros(1, 16000)).shape == (1, 512)
    clf = W.build_speech_classifier(10, name="whisper-base", num_layers=3)
    assert [g.name for g in layer_groups(clf)][:2] == ["stem", "encoder.layers.0"] and len(layer_groups(clf)) == 5
    assert clf(torch.zeros(1, 16000)).shape == (1, 10)
    assert len(models.load_backbone("whisper-base").layers) == 6
