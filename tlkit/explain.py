"""What is the model looking at? Grad-CAM heat maps, and an overlay to plot them on the image.

Grad-CAM (Selvaraju et al., 2017) asks one convolutional layer: "which of your feature maps raise this class's
score, and where are they active?". A forward hook keeps the layer's activations A (B, K, h, w); the gradient of
the class score with respect to A, averaged over the positions, weighs each of the K maps; the weighted sum,
clipped at zero, is a coarse (h, w) map of the evidence, upsampled to the image. Taught in lesson 03.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def last_conv_layer(model: nn.Module) -> nn.Module:
    """The last nn.Conv2d of `model` in registration order: a reasonable Grad-CAM target when you have no better one."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layer; pass target_layer= a module whose output is (B, K, h, w).")
    return convs[-1]


def _logits(output: Any) -> torch.Tensor:
    """The (B, C) logits of a model's output: a tensor, or an object with `.logits`."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError(f"Expected the model to return logits (B, C) or an object with .logits, got {type(output).__name__}.")
    return logits


def _target_classes(class_idx: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """One class index per image: the predicted class (None), the same class for all (int), or one each (sequence)."""
    batch, num_classes = logits.shape
    if class_idx is None:
        idx = logits.argmax(dim=1)
    elif isinstance(class_idx, (int, np.integer)):
        idx = torch.full((batch,), int(class_idx), dtype=torch.long, device=logits.device)
    else:
        idx = torch.as_tensor(class_idx, dtype=torch.long, device=logits.device).flatten()
        if len(idx) != batch:
            raise ValueError(f"class_idx has {len(idx)} entries for a batch of {batch} images; pass one per image, one int, or None.")
    if idx.min() < 0 or idx.max() >= num_classes:
        raise ValueError(f"class_idx must lie in 0..{num_classes - 1} (the model has {num_classes} classes), got {idx.tolist()}.")
    return idx


def _normalise_per_map(cam: torch.Tensor) -> torch.Tensor:
    """Scale each (H, W) map of (B, H, W) to [0, 1]; a flat map (no positive evidence anywhere) becomes all zeros."""
    flat = cam.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp_min(1e-12)[:, None, None]
    out = (cam - low[:, None, None]) / span
    return torch.where((high - low)[:, None, None] > 1e-12, out, torch.zeros_like(out))


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target_layer: nn.Module,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Grad-CAM heat maps (B, H, W) in [0, 1], one per image of `images` (B, C, H, W), on the CPU.

    `target_layer` is a module inside `model` whose output is a (B, K, h, w) feature map (the last convolutional
    stage sees the most abstract features at the coarsest grid). `class_idx`: None explains each image's predicted
    class, an int the same class for all, a sequence one class per image. The model runs in eval mode (restored
    afterwards); its parameters' .grad stay untouched and the hooks are removed even if something fails.
    Taught in lesson 03.
    """
    if images.ndim != 4:
        raise ValueError(f"Expected a batch of images (B, C, H, W), got shape {tuple(images.shape)}; add a batch dimension with images[None].")
    if not any(m is target_layer for m in model.modules()):
        raise ValueError("target_layer is not a module of model; pass a layer of this model, e.g. model.backbone.conv_head.")
    if device is None:
        first = next(iter((*model.parameters(), *model.buffers())), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    saved: dict[str, torch.Tensor] = {}

    def keep_activation(module: nn.Module, inputs: tuple, output: Any) -> Any:
        if not isinstance(output, torch.Tensor) or output.ndim != 4:
            raise ValueError(f"Grad-CAM needs a layer whose output is (B, K, h, w); {type(module).__name__} gave "
                             f"{getattr(output, 'shape', type(output).__name__)}: choose a convolutional layer.")
        saved["activation"] = output
        output.register_hook(lambda grad: saved.__setitem__("gradient", grad))  # the backward hook: dScore/dA
        return output.clone()  # later in-place ops (ReLU(inplace=True)) then change the copy, not the saved A

    was_training = model.training
    handle = target_layer.register_forward_hook(keep_activation)
    try:
        model.eval()
        with torch.enable_grad():
            # The input asks for gradients so that A has a graph even when every layer below it is frozen.
            x = images.detach().to(device).float().requires_grad_(True)
            logits = _logits(model(x))
            classes = _target_classes(class_idx, logits)
            score = logits.gather(1, classes[:, None]).sum()  # images are independent: one backward for the batch
            if "activation" not in saved:
                raise ValueError(f"target_layer ({type(target_layer).__name__}) did not run in model's forward pass, so it "
                                 "has no activations to explain: pass a layer the forward pass uses.")
            gradient = torch.autograd.grad(score, saved["activation"], allow_unused=True)[0]
            if gradient is None:
                raise ValueError(f"The class score does not depend on target_layer ({type(target_layer).__name__})'s output "
                                 "(e.g. a skipped branch): choose a layer on the path to the logits.")
    finally:
        handle.remove()
        model.train(was_training)
    activation, gradient = saved["activation"].detach(), gradient.detach()
    weights = gradient.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): how much each feature map raises the score
    cam = F.relu((weights * activation).sum(dim=1, keepdim=True))  # (B, 1, h, w): positive evidence only
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _normalise_per_map(cam).cpu()


def _image_array(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """An image as float (H, W, 3) in [0, 1]: accepts (C, H, W) tensors, (H, W) or (H, W, C) arrays, any value range."""
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3):
        raise ValueError(f"Expected an image (C, H, W), (H, W) or (H, W, C) with 1 or 3 channels, got shape {array.shape}.")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:  # normalised inputs (e.g. [-1, 1]): stretch back to [0, 1] for display
        array = (array - low) / max(high - low, 1e-12)
    return array


def overlay_heatmap(image: torch.Tensor | np.ndarray, heatmap: torch.Tensor | np.ndarray, alpha: float = 0.45,
                    cmap: str = "jet") -> np.ndarray:
    """Blend a heat map (h, w) in [0, 1] over `image` for plt.imshow: float (H, W, 3) in [0, 1]. Taught in lesson 03."""
    import matplotlib

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha is the heat map's opacity and must be in [0, 1], got {alpha}.")
    base = _image_array(image)
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32))
    if heat.ndim != 2:
        raise ValueError(f"Expected one heat map (H, W), got shape {tuple(heat.shape)}; pass heatmaps[i], not the batch.")
    if tuple(heat.shape) != base.shape[:2]:
        heat = F.interpolate(heat[None, None], size=base.shape[:2], mode="bilinear", align_corners=False)[0, 0]
    colours = matplotlib.colormaps[cmap](heat.clamp(0, 1).numpy())[..., :3]
    return ((1 - alpha) * base + alpha * colours).clip(0, 1).astype(np.float32)


def plot_grad_cam(images: torch.Tensor, heatmaps: torch.Tensor, titles: Sequence[str] | None = None,
                  alpha: float = 0.45) -> Any:
    """Two rows per image batch: the images, then their heat maps overlaid; returns the matplotlib Figure."""
    import matplotlib.pyplot as plt

    if len(images) != len(heatmaps):
        raise ValueError(f"Got {len(images)} images but {len(heatmaps)} heat maps; pass one heat map per image.")
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.1), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_image_array(images[i]))
        axes[1, i].imshow(overlay_heatmap(images[i], heatmaps[i], alpha=alpha))
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.tight_layout()
    return fig
