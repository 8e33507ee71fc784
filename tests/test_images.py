"""tlkit.data.images: datasets by name, the offline default, clear errors for online ones without network."""

import pytest
import torch

from tlkit.data import images


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="animals \\(offline\\)"):
        images.load_image_dataset("imagenet")


def test_online_dataset_fails_clearly_offline_without_touching_the_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    from tlkit.settings import OfflineError

    with pytest.raises(OfflineError, match="dataset='animals'"):  # the course's one offline error (a RuntimeError)
        images.load_image_dataset("oxford_pets")
    assert not any(tmp_path.rglob("*.tar.gz")), "offline mode must not download anything"


def test_animals_default_matches_load_animals_and_renormalises_for_other_backbones():
    lite0 = images.load_image_dataset("animals", max_per_class=3, image_size=32)
    resnet = images.load_image_dataset("animals", model_name="resnet50", max_per_class=3, image_size=32)
    assert len(lite0.train) == len(resnet.train) == 30 and lite0.classes[0] == "bear"
    x_lite, y_lite = lite0.test[0]
    x_res, y_res = resnet.test[0]
    assert y_lite == y_res and x_lite.shape == x_res.shape == (3, 32, 32)
    assert float(x_lite.min()) >= -1.0 and float(x_lite.max()) <= 1.0
    pixels = x_lite * 0.5 + 0.5  # back to [0, 1], then ImageNet's normalisation for channel 0
    assert torch.allclose(x_res[0], (pixels[0] - 0.485) / 0.229, atol=1e-5)
