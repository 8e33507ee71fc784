"""Grad-CAM on tiny CNNs: shapes, range, hooks removed, no side effects, and a toy whose evidence sits in a known corner."""

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tlkit.explain import grad_cam, last_conv_layer, overlay_heatmap, plot_grad_cam

os.environ.setdefault("MPLBACKEND", "Agg")


def tiny_cnn(num_classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def brightness_detector() -> nn.Sequential:
    """Class 1 = "something bright", class 0 = "dark": a hand-set CNN whose evidence is wherever the bright pixels are."""
    conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    linear = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0] = 1 / 9  # channel 0 fires on bright pixels
        conv.weight[1] = -1 / 9  # channel 1 fires on dark-on-light (never, for these inputs)
        linear.weight.copy_(torch.tensor([[-1.0, 1.0], [1.0, -1.0]]))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def corner_images(size: int = 16, patch: int = 4) -> torch.Tensor:
    """Four black images, each with a bright square in a different corner: top-left, top-right, bottom-left, bottom-right."""
    x = torch.zeros(4, 1, size, size)
    x[0, :, :patch, :patch] = 1
    x[1, :, :patch, -patch:] = 1
    x[2, :, -patch:, :patch] = 1
    x[3, :, -patch:, -patch:] = 1
    return x


def test_shape_range_and_dtype():
    model, x = tiny_cnn(), torch.randn(5, 3, 20, 24)
    maps = grad_cam(model, x, model[3])
    assert maps.shape == (5, 20, 24) and maps.dtype == torch.float32 and maps.device.type == "cpu"
    assert maps.min() >= 0 and maps.max() <= 1
    assert torch.isfinite(maps).all()
    for m in maps:  # every non-flat map is stretched to reach 1 exactly
        assert m.max() == 0 or torch.isclose(m.max(), torch.tensor(1.0))


def test_heatmap_peaks_where_the_class_evidence_is():
    model, x = brightness_detector(), corner_images()
    assert model(x).argmax(1).tolist() == [1, 1, 1, 1]  # every image is "bright"
    maps = grad_cam(model, x, model[0])
    half = 8
    quadrants = [(slice(0, half), slice(0, half)), (slice(0, half), slice(half, None)),
                 (slice(half, None), slice(0, half)), (slice(half, None), slice(half, None))]
    for i, (rows, cols) in enumerate(quadrants):
        peak_row, peak_col = np.unravel_index(int(maps[i].argmax()), maps[i].shape)
        assert rows.start <= peak_row < (rows.stop or 16) and cols.start <= peak_col < (cols.stop or 16), f"image {i}: peak at {(peak_row, peak_col)}"
        share = maps[i][rows, cols].sum() / maps[i].sum()
        assert share > 0.8, f"image {i}: only {share:.0%} of the heat sits in the quadrant of the evidence"


def test_a_class_without_positive_evidence_gives_an_all_zero_map():
    model, x = brightness_detector(), corner_images()
    maps = grad_cam(model, x, model[0], class_idx=0)  # "dark": the bright patch only argues against it
    assert torch.equal(maps, torch.zeros_like(maps))


def test_hooks_removed_and_model_left_as_it_was():
    model, x = tiny_cnn(), torch.randn(2, 3, 12, 12)
    model.train()
    running_mean = model[1].running_mean.clone()
    grad_cam(model, x, model[3])
    assert not model[3]._forward_hooks and not model[3]._backward_hooks
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training, "the model's train/eval mode must be restored"
    assert all(p.grad is None for p in model.parameters()), "Grad-CAM must not leave gradients in the parameters"
    assert torch.equal(model[1].running_mean, running_mean), "Grad-CAM runs in eval mode: BatchNorm statistics unchanged"


def test_hooks_removed_when_it_fails():
    model, x = tiny_cnn(num_classes=3), torch.randn(2, 3, 12, 12)
    with pytest.raises(ValueError, match="0..2"):
        grad_cam(model, x, model[3], class_idx=7)
    assert not model[3]._forward_hooks


def test_class_idx_none_int_and_per_image():
    model, x = tiny_cnn(), torch.randn(3, 3, 12, 12)
    predicted = model.eval()(x).argmax(1)
    assert torch.equal(grad_cam(model, x, model[3]), grad_cam(model, x, model[3], class_idx=predicted.tolist()))
    single = grad_cam(model, x, model[3], class_idx=2)
    per_image = grad_cam(model, x, model[3], class_idx=[2, 2, 2])
    assert torch.allclose(single, per_image)
    with pytest.raises(ValueError, match="one per image"):
        grad_cam(model, x, model[3], class_idx=[0, 1])


def test_works_when_every_parameter_is_frozen():
    model, x = brightness_detector(), corner_images()
    for p in model.parameters():
        p.requires_grad_(False)
    maps = grad_cam(model, x, model[0])
    assert maps.max() == 1 and maps[0, 0, 0] > maps[0, -1, -1]


def test_model_returning_an_object_with_logits():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = brightness_detector()

        def forward(self, x):
            return SimpleNamespace(logits=self.net(x))

    model = Wrapped()
    assert grad_cam(model, corner_images(), model.net[0]).shape == (4, 16, 16)


def test_bad_arguments_explain_themselves():
    model = tiny_cnn()
    with pytest.raises(ValueError, match="not a module of model"):
        grad_cam(model, torch.randn(1, 3, 8, 8), nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="batch dimension"):
        grad_cam(model, torch.randn(3, 8, 8), model[3])
    with pytest.raises(ValueError, match=r"\(B, K, h, w\)"):
        grad_cam(model, torch.randn(1, 3, 8, 8), model[6])  # Flatten's output is (B, K)
    assert not model[6]._forward_hooks


def test_last_conv_layer():
    model = tiny_cnn()
    assert last_conv_layer(model) is model[3]
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv_layer(nn.Linear(2, 2))


def test_overlay_heatmap_shapes_ranges_and_alpha():
    image = torch.rand(3, 16, 16) * 2 - 1  # a normalised image in [-1, 1]
    heat = torch.zeros(4, 4)
    heat[0, 0] = 1
    out = overlay_heatmap(image, heat)
    assert out.shape == (16, 16, 3) and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    plain = overlay_heatmap(image, heat, alpha=0.0)
    stretched = (image - image.min()) / (image.max() - image.min())
    assert np.allclose(plain, stretched.permute(1, 2, 0).numpy(), atol=1e-6)
    grey = overlay_heatmap(np.full((10, 12), 0.5), np.zeros((10, 12)), alpha=0.0)
    assert grey.shape == (10, 12, 3) and np.allclose(grey, 0.5)
    with pytest.raises(ValueError, match="one heat map"):
        overlay_heatmap(image, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="alpha"):
        overlay_heatmap(image, heat, alpha=2)


def test_plot_grad_cam_draws_images_and_overlays():
    import matplotlib.pyplot as plt

    model, x = brightness_detector(), corner_images()
    fig = plot_grad_cam(x, grad_cam(model, x, model[0]), titles=["tl", "tr", "bl", "br"])
    assert len(fig.axes) == 8 and fig.axes[0].get_title() == "tl"
    plt.close(fig)
    with pytest.raises(ValueError, match="one heat map per image"):
        plot_grad_cam(x, torch.zeros(3, 16, 16))


class WithSpareLayers(nn.Module):
    """A CNN holding one conv that forward never calls, and one whose output it computes but throws away."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.unused, self.discarded = tiny_cnn(), nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)

    def forward(self, x):
        self.discarded(x)  # e.g. a debugging branch: on no path to the logits
        return self.body(x)


def test_a_layer_off_the_path_to_the_logits_is_explained():
    """Before: a bare KeyError('activation') or autograd's "not used in the graph" error."""
    model = WithSpareLayers()
    with pytest.raises(ValueError, match="did not run in model's forward pass"):
        grad_cam(model, torch.randn(1, 3, 8, 8), model.unused)
    with pytest.raises(ValueError, match="does not depend on target_layer"):
        grad_cam(model, torch.randn(1, 3, 8, 8), model.discarded)
    assert not model.unused._forward_hooks and not model.discarded._forward_hooks
    assert grad_cam(model, torch.randn(2, 3, 8, 8), model.body[3]).shape == (2, 8, 8)
