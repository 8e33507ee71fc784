"""The model registry: every modality listed, defaults offline, unknown names list the known ones."""

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
