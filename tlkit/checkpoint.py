"""Save and resume training safely: weights in safetensors, everything else in plain tensors and JSON.

A training checkpoint is a folder:

    checkpoint.json                          the "commit record": epoch, file names, history, extra, and the
                                             SHA-256 of every file it names and of itself (JSON)
    model-epoch0003-1a2b3c4d.safetensors     model weights (safetensors: loading it can never run code)
    state-epoch0003-1a2b3c4d.pt              optimizer, scheduler, grad scaler and random-number states, saved
                                             with plain tensors/numbers/lists/dicts only, so
                                             `torch.load(weights_only=True)` reads it

Each save writes new file names (the 8 hex digits), each to a temporary name that is fsynced and renamed
(`os.replace` is atomic), and checkpoint.json is renamed last: a crash or a full disk at any moment leaves the
previous checkpoint complete, never half of each. Loading checks every SHA-256 and says which file is damaged.
We never unpickle arbitrary objects: pickled `.pt`/`.pth` "full model" files are refused (unpickling can run code).
Used by tlkit.train.fit(checkpoint_path=...) to resume an interrupted run; `save_model`/`load_model_weights` by
tlkit.export (lesson 07).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save_model as _st_save_model
from torch import nn

from tlkit._support.atomic import atomic_write, write_error_message
from tlkit._support.safeio import sha256_file

POINTER_NAME = "checkpoint.json"
FORMAT_NAME = "tlkit-checkpoint"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".tar"})
_EPOCH_FILE_RE = re.compile(r"^(model|state)-epoch\d+(-[0-9a-f]{8})?\.(safetensors|pt)$")


class CheckpointError(RuntimeError):
    """A checkpoint or weights file exists but cannot be used (corrupt, pickled, or made for another model)."""


# ----------------------------------------------------------------------------------------------- atomic writes
_atomic_write = atomic_write  # write to a temporary name, fsync, rename: see tlkit._support.atomic


def _write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON atomically."""
    text = json.dumps(data, indent=1, allow_nan=True)
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _existing_file(path: Path, what_to_do: str) -> Path:
    """Return `path` if it is a file, else raise FileNotFoundError that says what to do."""
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}: {what_to_do}")
    return path


def _corrupt(path: Path, err: Exception) -> CheckpointError:
    """The error for a file that exists but cannot be read."""
    return CheckpointError(
        f"{path} is corrupt or not the expected format ({type(err).__name__}: {err}); it was probably cut off by "
        "a crash or a full disk: delete it (for a checkpoint, the whole folder) and save or train again."
    )


# ----------------------------------------------------------------------------------------- plain model weights
def _refuse_pickle(path: Path) -> None:
    """Raise CheckpointError if `path` looks like a pickled PyTorch file."""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} looks like a pickled PyTorch file ({path.suffix}); tlkit only loads safetensors weights and "
            "tlkit checkpoint folders because unpickling can run code: if you trust the file, load it yourself with "
            "torch.load(path, weights_only=True) and call model.load_state_dict(...)."
        )


def save_model(path: str | os.PathLike, model: nn.Module, metadata: Mapping[str, str] | None = None) -> Path:
    """Save the model's weights (shared/tied weights handled) to a .safetensors file with string metadata, atomically.

    Used by the export lesson: `metadata` carries e.g. {"model_name": ..., "classes": json.dumps(classes)}.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"Model weights are saved as .safetensors files; got {path.name!r}: use e.g. {path.stem}.safetensors.")
    metadata = dict(metadata or {})
    bad = {k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))}
    if bad:
        raise TypeError(f"safetensors metadata must map str to str; these entries are not strings: {bad} (use json.dumps).")
    # save_model keeps one copy of tied tensors (e.g. embeddings tied to the output layer) and makes them contiguous.
    try:
        _atomic_write(path, lambda tmp: _st_save_model(model, str(tmp), metadata=dict(metadata)))
    except OSError as err:
        raise CheckpointError(write_error_message(path, err, f"The previous {path.name}, if any, is unchanged.")) from err
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """Read the string metadata stored in a .safetensors file (without loading the weights)."""
    path = _existing_file(Path(path), "Save weights with tlkit.checkpoint.save_model first, or check the path.")
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, err) from err


def _check_against_model(tensors: Mapping[str, torch.Tensor], model: nn.Module, path: Path) -> None:
    """Raise CheckpointError naming every key whose shape differs, and every missing or unexpected key."""
    expected = model.state_dict()
    mismatched = [f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                  for k, v in tensors.items() if k in expected and v.shape != expected[k].shape]
    unexpected = sorted(k for k in tensors if k not in expected)
    # safetensors stores tied weights once: a missing key sharing memory with a stored key is fine.
    stored_ptrs = {expected[k].data_ptr() for k in tensors if k in expected}
    missing = sorted(k for k, v in expected.items() if k not in tensors and v.data_ptr() not in stored_ptrs)
    problems = []
    if mismatched:
        problems.append("shape mismatch for " + "; ".join(mismatched))
    if missing:
        problems.append(f"missing keys {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else ""))
    if problems:
        raise CheckpointError(
            f"The weights in {path} do not fit this {type(model).__name__}: " + "; ".join(problems)
            + ". Build the model with the same architecture and number of classes as when it was saved."
        )


def load_model_weights(path: str | os.PathLike, model: nn.Module, device: torch.device | str = "cpu") -> dict[str, str]:
    """Load safetensors weights into `model` (checking every key and shape) and return the file's metadata."""
    path = Path(path)
    _refuse_pickle(path)
    _existing_file(path, "save weights with tlkit.checkpoint.save_model first, or check the path.")
    try:
        tensors = load_file(str(path), device=str(device))
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise _corrupt(path, err) from err
    _check_against_model(tensors, model, path)
    model.load_state_dict(tensors, strict=False)  # strictness was checked above, tied weights included
    names = model.state_dict().keys()  # safetensors notes each dropped tied name in the metadata: hide those
    return {k: v for k, v in metadata.items() if k not in names}


# ---------------------------------------------------------------------------------------------- random states
def rng_state() -> dict[str, Any]:
    """The random-number states of Python, NumPy and torch (CPU and every CUDA device) as plain tensors and numbers."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore random-number states saved by `rng_state` (CUDA ones only if the same number of GPUs is visible)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ------------------------------------------------------------------------------------------ training checkpoints
def _plain_history(history: Any) -> dict | None:
    """A History object or dict as a JSON-able dict."""
    if history is None:
        return None
    return history.to_dict() if hasattr(history, "to_dict") else dict(history)


def _remove_stale_files(folder: Path, keep: set[str]) -> None:
    """Delete epoch files (model-/state-epochNNNN) that the new checkpoint.json no longer names."""
    for f in folder.iterdir():
        if _EPOCH_FILE_RE.match(f.name) and f.name not in keep:
            f.unlink(missing_ok=True)


def _record_digest(record: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint record's canonical JSON, leaving out the digest itself."""
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def _earlier_weights(folder: Path, best_epoch: int) -> tuple[str, str | None] | None:
    """(file name, SHA-256) of the weights the current record keeps for `best_epoch`, or None if it keeps none."""
    try:
        _, record = _read_record(folder)
    except (FileNotFoundError, CheckpointError):
        return None
    digests = record.get("sha256") or {}
    for epoch_key, file_key in (("epoch", "model_file"), ("best_epoch", "best_model_file")):
        name = record.get(file_key)
        if record.get(epoch_key) == best_epoch and name and (folder / name).is_file():
            return name, digests.get(name)
    return None


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    epoch: int,
    history: Any = None,
    extra: Mapping[str, Any] | None = None,
    best_epoch: int | None = None,
) -> Path:
    """Save a training checkpoint into the folder `path` (atomically); return the path of its checkpoint.json.

    `epoch` is the number of finished epochs. `extra` must be JSON-serialisable. `best_epoch` (<= epoch) keeps the
    weights saved at that earlier epoch too, so early stopping can restore them after a resume (load_best_weights).
    Every save writes new file names, and checkpoint.json (with the SHA-256 of each file and of itself) last, so a
    crash or a full disk at any moment leaves the previous checkpoint loadable; a failed write raises CheckpointError.
    """
    folder = Path(path)
    if folder.suffix.lower() in PICKLE_SUFFIXES | {".safetensors", ".json"}:
        raise ValueError(f"checkpoint_path is a folder, not a file: use e.g. {folder.with_suffix('')} instead of {folder}.")
    token = uuid.uuid4().hex[:8]  # never overwrite a file the current checkpoint.json names
    model_file, state_file = f"model-epoch{epoch:04d}-{token}.safetensors", f"state-epoch{epoch:04d}-{token}.pt"
    best_file, best_sha = model_file, None
    if best_epoch not in (None, epoch):
        earlier = _earlier_weights(folder, int(best_epoch))
        if earlier is None:
            raise ValueError(f"best_epoch={best_epoch} but {folder} keeps no weights of that epoch; save every epoch to keep the best one.")
        best_file, best_sha = earlier
    record = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "epoch": int(epoch), "model_file": model_file,
              "state_file": state_file, "best_epoch": int(best_epoch or epoch), "best_model_file": best_file,
              "history": _plain_history(history), "extra": dict(extra or {}), "saved_at": time.strftime("%Y-%m-%d %H:%M:%S"),
              "torch_version": torch.__version__}
    try:
        json.dumps(record)
    except TypeError as err:
        raise TypeError(f"history and extra must be JSON-serialisable (numbers, strings, lists, dicts): {err}.") from err
    state = {
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_state(),
    }
    written = []
    try:
        written.append(save_model(folder / model_file, model, {"epoch": str(epoch)}))
        written.append(_atomic_write(folder / state_file, lambda tmp: torch.save(state, tmp)))
        record["sha256"] = {model_file: sha256_file(folder / model_file), state_file: sha256_file(folder / state_file)}
        if best_file != model_file:
            record["sha256"][best_file] = best_sha or sha256_file(folder / best_file)
        record["record_sha256"] = _record_digest(record)
        _write_json(folder / POINTER_NAME, record)  # the commit: from here on, the new checkpoint is the checkpoint
    except (OSError, CheckpointError) as err:
        for f in written:
            f.unlink(missing_ok=True)  # files no record names
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(write_error_message(folder, err, "The previous checkpoint in that folder (if any) is intact.")) from err
    _remove_stale_files(folder, {model_file, state_file, best_file})
    return folder / POINTER_NAME


def _verified(folder: Path, record: Mapping[str, Any], name: str) -> Path:
    """The file `name` of a checkpoint, after checking it exists and has the SHA-256 its record holds."""
    path = _existing_file(folder / name, "the checkpoint folder is incomplete: delete it and train again.")
    expected = (record.get("sha256") or {}).get(name)
    if expected is not None and sha256_file(path) != expected:
        raise CheckpointError(f"{path} does not match the SHA-256 in {POINTER_NAME}: the file was changed or damaged "
                              "(a full disk, a bad copy); delete the checkpoint folder and train again.")
    return path


def _read_record(path: str | os.PathLike) -> tuple[Path, dict]:
    """Find and read checkpoint.json for a checkpoint folder (or the json file itself); clear errors otherwise."""
    path = Path(path)
    if path.is_file() and path.name != POINTER_NAME:
        _refuse_pickle(path)
        if path.suffix == ".safetensors":
            raise CheckpointError(f"{path} is a plain weights file, not a training checkpoint: use tlkit.checkpoint.load_model_weights.")
        raise CheckpointError(f"{path} is not a tlkit checkpoint: pass the checkpoint folder that fit(checkpoint_path=...) wrote.")
    folder = path.parent if path.name == POINTER_NAME else path
    if not (folder / POINTER_NAME).is_file():
        raise FileNotFoundError(f"No checkpoint in {folder}: train with fit(..., checkpoint_path={str(folder)!r}) first, or check the folder name.")
    pointer = folder / POINTER_NAME
    try:
        record = json.loads(pointer.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _corrupt(pointer, err) from err
    if not isinstance(record, dict) or record.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{pointer} is not a tlkit checkpoint record: pass a folder written by tlkit.checkpoint.save_checkpoint.")
    if "record_sha256" in record and record["record_sha256"] != _record_digest(record):
        raise CheckpointError(f"{pointer} does not match its own SHA-256: it was edited or damaged; delete the checkpoint "
                              "folder and train again (or restore the file from a copy).")
    return folder, record


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint's record (epoch, best_epoch, history, extra) without loading any weights."""
    folder, record = _read_record(path)
    return {"epoch": record["epoch"], "best_epoch": record.get("best_epoch", record["epoch"]),
            "history": record.get("history"), "extra": record.get("extra") or {}, "folder": folder}


def checkpoint_exists(path: str | os.PathLike) -> bool:
    """True if `path` is a folder holding a tlkit checkpoint record."""
    return (Path(path) / POINTER_NAME).is_file()


def _load_state(file: Path) -> dict:
    """Read the optimizer/scheduler/RNG state file with weights_only=True (no code can run)."""
    _existing_file(file, "the checkpoint folder is incomplete: delete it and train again.")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged zip/pickle stream; all mean "corrupt"
        raise _corrupt(file, err) from err


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    device: torch.device | str,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint folder into model (and optimizer, scheduler, scaler, RNG states); return epoch, history, extra.

    The returned dict has keys epoch, best_epoch, history (a dict, or None), extra (a dict) and folder.
    """
    folder, record = _read_record(path)
    load_model_weights(_verified(folder, record, record["model_file"]), model, device)
    state = _load_state(_verified(folder, record, record["state_file"]))
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("scaler", scaler)):
        saved = state.get(name)
        if obj is None or not saved:  # a disabled GradScaler saves {}: nothing to restore
            continue
        try:
            obj.load_state_dict(saved)
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"The {name} state in {folder} does not fit this {name} ({err}): freeze the same layers "
                                  "and build the same optimizer as the interrupted run, or start over with resume=False.") from err
    if restore_rng:
        set_rng_state(state["rng"])
    return checkpoint_info(folder)


def load_best_weights(path: str | os.PathLike, model: nn.Module, *, device: torch.device | str) -> int:
    """Load the best epoch's weights kept in a checkpoint folder into `model`; return that epoch number."""
    folder, record = _read_record(path)
    best_file = _verified(folder, record, record.get("best_model_file", record["model_file"]))
    load_model_weights(best_file, model, device)
    return int(record.get("best_epoch", record["epoch"]))
