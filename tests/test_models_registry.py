"""The model registry: every modality listed, defaults offline, unknown names list the known ones."""

import re

import pytest

from tlkit import models


def test_registry_lists_all_modalities_with_offline_defaults():
    table = models.available_models()
    assert set(table.modality) == {"image", "text", "speech"}
    defaults = table[table.default]
    assert len(defaults) == 3 and (defaults.source == "offline").all()


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="efficientnet_lite0.*minilm-l6.*whisper-tiny.en"):
        models.load_backbone("resnet9000")


def test_default_image_backbone_loads_offline():
    model = models.load_backbone("efficientnet_lite0")
    assert sum(p.numel() for p in model.parameters()) > 4_000_000


ONLINE = [s.name for s in models.SPECS.values() if s.source == "online"]


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline mode with empty caches, and a socket guard: any connection attempt or DNS lookup fails the test."""
    import socket

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network use attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # TLKIT_OFFLINE alone must be enough
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return attempts


@pytest.mark.parametrize("name", ONLINE)
def test_online_names_fail_fast_offline_without_touching_the_network(no_network, name):
    import time

    from tlkit.settings import OfflineError

    default = models.DEFAULTS[models.get_spec(name).modality]
    start = time.perf_counter()
    with pytest.raises(OfflineError, match=re.escape(repr(default))) as info:
        models.load_backbone(name)
    assert time.perf_counter() - start < 1.0
    assert not no_network
    assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")  # one sentence


def test_every_entry_point_raises_the_same_offline_error(no_network):
    from tlkit.models import text, vision, whisper
    from tlkit.settings import OfflineError

    calls = [lambda: vision.build_classifier("resnet50"), lambda: vision.feature_extractor("vit_b_16"),
             lambda: text.load_text_tokenizer("bert-base-uncased"), lambda: text.build_text_classifier("distilbert-base-uncased"),
             lambda: whisper.load_whisper("openai/whisper-base"), lambda: whisper.speech_features("facebook/hubert-base-ls960"),
             lambda: whisper.build_speech_classifier(3, name="facebook/wav2vec2-base")]
    for call in calls:
        with pytest.raises(OfflineError):
            call()
    assert text.TextModelUnavailableError is OfflineError and not no_network


def test_table_has_one_row_per_name_with_specs():
    table = models.available_models()
    assert table.name.is_unique and len(table) == len(models.SPECS)
    assert {"loader", "license", "size_mb", "input"} <= set(table.columns)
    offline = set(table[table.source == "offline"].name)
    assert offline == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "minilm-l6", "whisper-tiny.en", "whisper-base"}
    assert list(models.available_models("image").name[:3]) == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert (table.size_mb > 0).all() and table.license.str.len().gt(0).all()


def test_torchvision_urls_in_the_table_are_torchvision_defaults():
    import torchvision

    for name, spec in models.specs("image").items():
        if spec.loader == "torchvision":
            assert torchvision.models.get_model_weights(name).DEFAULT.url == spec.where


def test_dead_network_online_is_an_offline_error_in_seconds(monkeypatch, tmp_path):
    """Online mode but no network: one quick probe instead of huggingface_hub's minute of retries."""
    import socket
    import time

    from tlkit.settings import OfflineError

    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    for var in ("TLKIT_OFFLINE", "HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    for name in ("bert-base-uncased", "openai/whisper-tiny"):
        start = time.perf_counter()
        with pytest.raises(OfflineError, match="could not be reached"):
            models.load_backbone(name)
        assert time.perf_counter() - start < 5.0
