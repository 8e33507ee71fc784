"""Feature caching: run a frozen backbone over a dataset once, keep its features, train heads in seconds.

A frozen backbone gives the same features for the same image every epoch, so computing them again each epoch is
pure waste (unless augmentation changes the inputs). Taught in lesson 02.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from tlkit.settings import cache_dir

_KEY_RE = re.compile(r"^[A-Za-z0-9._-]{1,120}$")


def _split_batch(batch: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
    """Return (inputs on device, labels on CPU) for a (x, y) tuple or a dict batch with a "labels" key."""
    if isinstance(batch, dict):
        if "labels" not in batch:
            raise ValueError(f"A dict batch needs a 'labels' key; got keys {sorted(batch)}.")
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        return inputs, batch["labels"]
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0].to(device), batch[1]
    raise ValueError("Batches must be (inputs, labels) pairs or dicts with a 'labels' key.")


def _cache_path(cache_key: str):
    if not _KEY_RE.match(cache_key):
        raise ValueError(f"cache_key {cache_key!r} must be 1-120 letters, digits, '.', '_' or '-' (it becomes a file name).")
    return cache_dir("features") / f"{cache_key}.safetensors"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of a model's parameter names, shapes and values: changes when the weights change."""
    h = hashlib.sha256()
    for name, p in model.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        if p.numel():
            h.update(p.detach().float().flatten()[:: max(1, p.numel() // 64)].cpu().numpy().tobytes())
    return h.hexdigest()[:12]


@torch.no_grad()
def compute_features(
    backbone: Callable[..., torch.Tensor], loader: DataLoader, *, device: torch.device, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `backbone` over every batch of `loader` (no gradients) and return (features [N, D], labels [N]) on the CPU."""
    was_training = getattr(backbone, "training", None)
    if hasattr(backbone, "eval"):
        backbone.eval()  # type: ignore[union-attr]
    feats, labels = [], []
    try:
        for batch in tqdm(loader, desc="features", disable=not progress, leave=False):
            inputs, y = _split_batch(batch, device)
            out = backbone(**inputs) if isinstance(inputs, dict) else backbone(inputs)
            if not isinstance(out, torch.Tensor) or out.ndim != 2:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"The backbone must return a (batch, features) tensor, got {shape}; pool or flatten its output first.")
            feats.append(out.float().cpu())
            labels.append(torch.as_tensor(y).cpu())
    finally:
        if was_training:
            backbone.train()  # type: ignore[union-attr]
    if not feats:
        raise ValueError("The loader yielded no batches; check that the dataset is not empty.")
    return torch.cat(feats), torch.cat(labels)


def extract_features(
    backbone: Callable[..., torch.Tensor],
    loader: DataLoader,
    *,
    device: torch.device,
    cache_key: str | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """compute_features, cached on disk under cache_dir("features")/<cache_key>.safetensors when a key is given.

    The key must name both the model and the data (e.g. f"lite0-{model_fingerprint(model)}-animals-train-seed0"):
    a stale key returns stale features. A corrupt cache file is recomputed, never trusted.
    """
    path = _cache_path(cache_key) if cache_key else None
    if path is not None and path.exists():
        try:
            cached = load_file(str(path))
            if len(cached["features"]) == len(loader.dataset):  # type: ignore[arg-type]
                return cached["features"], cached["labels"]
        except Exception:
            path.unlink(missing_ok=True)  # unreadable cache: recompute below
    feats, labels = compute_features(backbone, loader, device=device, progress=progress)
    if path is not None:
        tmp = path.with_suffix(".tmp")
        save_file({"features": feats.contiguous(), "labels": labels.contiguous()}, str(tmp),
                  metadata={"meta": json.dumps({"n": len(feats), "dim": feats.shape[1]})})
        tmp.replace(path)
    return feats, labels


def features_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, shuffle: bool = False) -> DataLoader:
    """A DataLoader over cached (features, labels), for training a head in seconds."""
    if len(features) != len(labels):
        raise ValueError(f"features and labels differ in length ({len(features)} vs {len(labels)}); pass matching tensors.")
    return DataLoader(TensorDataset(features, labels), batch_size=batch_size, shuffle=shuffle)
