"""Feature caching: run a frozen backbone over a dataset once, keep its features, train heads in seconds.

A frozen backbone gives the same features for the same image every epoch, so computing them again each epoch is
pure waste (unless augmentation changes the inputs). A cached file is used only when the SHA-256 of every input
(the whole dataset, in the loader's order) and of every weight of the backbone match the ones it was made from.
Taught in lesson 02.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, RandomSampler, TensorDataset
from tlkit.progress import progress_bar

from tlkit._support.atomic import atomic_write, write_error_message
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


def _check_key(cache_key: str) -> str:
    if not _KEY_RE.match(cache_key):
        raise ValueError(f"cache_key {cache_key!r} must be 1-120 letters, digits, '.', '_' or '-' (it becomes a file name).")
    return cache_key


def _update(h: "hashlib._Hash", value: Any) -> None:
    """Feed a tensor, array, number, string, or a list/tuple/dict of them into the hash `h`, type and shape included."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{value.dtype}{tuple(value.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, np.ndarray) or hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        array = np.ascontiguousarray(np.asarray(value))
        h.update(f"A{array.dtype}{array.shape}".encode())
        h.update(array.tobytes())
    elif isinstance(value, (str, bytes, int, float, bool, np.generic)) or value is None:
        h.update(f"{type(value).__name__}:{value!r};".encode())
    elif isinstance(value, Mapping):
        for k in sorted(value, key=str):
            h.update(f"K{k!r}".encode())
            _update(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"L{len(value)}".encode())
        for v in value:
            _update(h, v)
    else:
        raise TypeError(f"Cannot fingerprint a dataset item of type {type(value).__name__}; items must be tensors, arrays, "
                        "numbers, strings or lists/dicts of them (or pass no cache_key).")


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash (12 hex digits) of every name, dtype, shape and value in a model's state dict: any changed weight changes it."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        _update(h, tensor)
    return h.hexdigest()[:12]


def data_fingerprint(dataset: Any, order: Any = None) -> str:
    """SHA-256 of every item of `dataset` (all of it, streamed), and of the index `order` it is read in when given.

    Fast paths: a TensorDataset's tensors, or a dataset's `tensors()` method; otherwise each item dataset[i] is hashed.
    """
    h = hashlib.sha256()
    tensors = getattr(dataset, "tensors", None)
    if isinstance(dataset, TensorDataset):
        _update(h, list(dataset.tensors))
    elif callable(tensors):
        _update(h, list(tensors()))
    else:
        for i in range(len(dataset)):
            _update(h, dataset[i])
    if order is not None:
        _update(h, torch.as_tensor(list(order), dtype=torch.int64))
    return h.hexdigest()


def _modules_in(backbone: Any) -> list[torch.nn.Module]:
    """The nn.Modules behind a backbone: itself, or those a function or object closes over (one level deep)."""
    if isinstance(backbone, torch.nn.Module):
        return [backbone]
    found = [getattr(backbone, "__self__", None)]
    found += [c.cell_contents for c in (getattr(backbone, "__closure__", None) or ()) if c.cell_contents is not None]
    found += list(getattr(backbone, "args", ())) + list(vars(backbone).values() if hasattr(backbone, "__dict__") else [])
    return [m for m in found if isinstance(m, torch.nn.Module)]


def cache_digest(backbone: Any, loader: DataLoader) -> str:
    """The SHA-256 that a cached feature file must match: all weights of the backbone and all inputs, in loader order."""
    h = hashlib.sha256()
    for module in _modules_in(backbone):
        h.update(model_fingerprint(module).encode())
    order = None if isinstance(loader.sampler, RandomSampler) else loader.sampler
    h.update(data_fingerprint(loader.dataset, order).encode())
    return h.hexdigest()


def _cache_path(cache_key: str, digest: str) -> Path:
    return cache_dir("features") / f"{_check_key(cache_key)}@{digest[:16]}.safetensors"


def _read_cache(path: Path, digest: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Cached (features, labels), or None (after a warning) when the file is damaged or made from other data."""
    try:
        cached = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        if meta.get("digest") == digest and len(cached["features"]) == len(cached["labels"]) == meta.get("n"):
            return cached["features"], cached["labels"]
        reason = "it was made from other data or weights"
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        reason = f"it is damaged ({type(err).__name__}: {err}), e.g. cut off by a full disk or a killed run"
    warnings.warn(f"Ignoring the feature cache {path.name}: {reason}; computing the features again.", stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def _write_cache(path: Path, feats: torch.Tensor, labels: torch.Tensor, digest: str) -> None:
    """Save features atomically; a failed write (a full disk) is explained as a warning, the features are still returned."""
    meta = json.dumps({"n": len(feats), "dim": int(feats.shape[1]), "digest": digest})
    try:
        atomic_write(path, lambda tmp: save_file({"features": feats.contiguous(), "labels": labels.contiguous()}, str(tmp),
                                                 metadata={"meta": meta}))
    except OSError as err:
        warnings.warn(write_error_message(path, err, "The features were computed and are returned, but not cached."), stacklevel=3)
        return
    for stale in path.parent.glob(f"{path.name.split('@')[0]}@*.safetensors"):
        if stale != path:
            stale.unlink(missing_ok=True)  # the same key made from older data or weights


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
        for batch in progress_bar(loader, desc="features", enabled=progress):
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
    """compute_features, cached on disk under cache_dir("features") when a `cache_key` is given.

    The file is used only if its SHA-256 of the inputs (every item of loader.dataset, in the loader's order) and of
    the backbone's weights (an nn.Module, or the modules a function closes over) matches; changing one pixel or one
    weight computes the features again. What no digest can see, the key must name: the collate function (e.g. a
    tokeniser's max_length) and preprocessing inside a backbone function. A damaged file is recomputed with a warning.
    """
    if cache_key is None:
        return compute_features(backbone, loader, device=device, progress=progress)
    _check_key(cache_key)
    digest = cache_digest(backbone, loader)
    path = _cache_path(cache_key, digest)
    if path.exists():
        cached = _read_cache(path, digest)
        if cached is not None:
            return cached
    feats, labels = compute_features(backbone, loader, device=device, progress=progress)
    _write_cache(path, feats, labels, digest)
    return feats, labels


def features_loader(features: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, shuffle: bool = False) -> DataLoader:
    """A DataLoader over cached (features, labels), for training a head in seconds."""
    if len(features) != len(labels):
        raise ValueError(f"features and labels differ in length ({len(features)} vs {len(labels)}); pass matching tensors.")
    return DataLoader(TensorDataset(features, labels), batch_size=batch_size, shuffle=shuffle)
