"""Ship a fine-tuned model: safe saving with its preprocessing and labels, one-call prediction, ONNX export with a
parity test, CPU latency, and a model card.

A saved model is a folder that loading can never turn into code execution:

    model.safetensors   the weights (safetensors: tensors only, no pickle)
    config.json         model name, class names, preprocessing, metrics, the weights' SHA-256
    SHA256SUMS          the SHA-256 of config.json and model.safetensors (`sha256sum -c SHA256SUMS` checks it too)

Saving builds the new folder beside the old one and swaps it in (tlkit._support.atomic), so a kill or a full disk
leaves the previous complete export; loading checks SHA256SUMS. Pickled checkpoints (.pt, .pth, .pkl, ...) are
refused: unpickling a downloaded file can run any code it asks. Taught in lesson 07 (export and inference).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.util
import json
import os
import shutil
import statistics
import struct
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlkit._support.atomic import atomic_write, recover_dir, swap_in_dir, write_error_message
from tlkit._support.safeio import sha256_file
from tlkit.checkpoint import PICKLE_SUFFIXES, CheckpointError, load_model_weights, save_model

FORMAT_NAME = "tlkit-inference"
FORMAT_VERSION = 2  # 2: with SHA256SUMS; version 1 folders (weights digest in config.json only) still load
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "SHA256SUMS"
_MAX_SAFETENSORS_HEADER = 100 << 20  # safetensors itself refuses headers over 100 MB
CARD_SECTIONS = ("intended_use", "data", "metrics", "limits")
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # a raw pickle stream, or torch.save's zip archive holding one


class UnsafeFormatError(CheckpointError):
    """A model file whose loading could run code (a pickle) was refused."""


class ParityError(AssertionError):
    """An exported model's outputs differ from the PyTorch model's by more than the tolerance."""


# ---------------------------------------------------------------------------------------------- saving
def _sha256(path: Path) -> str:
    return sha256_file(path)


def _json_ready(name: str, value: Any) -> Any:
    """Return `value` if JSON can store it, else raise a TypeError naming the argument."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must hold only strings, numbers, lists and dicts (it is saved as JSON): {err}.") from err
    return value


def save_for_inference(
    path_dir: str | os.PathLike,
    model: nn.Module,
    *,
    preprocessing: Mapping[str, Any],
    class_names: Sequence[str],
    model_name: str,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Save `model` for inference into the folder `path_dir`: model.safetensors, config.json, SHA256SUMS; return the folder.

    `preprocessing` says how a raw input becomes the model's input (see `preprocess_input`), `class_names` maps output
    indices to labels, `model_name` lets a build function rebuild the architecture, `metrics` records how good it is.
    Atomic: the new export is written and fsynced beside the old one, then swapped in; other files in an old export
    (a model card) are carried over. A failed write (a full disk) raises CheckpointError and leaves the old export.
    """
    folder = Path(path_dir)
    if folder.suffix.lower() in PICKLE_SUFFIXES | {".safetensors", ".json", ".onnx"}:
        raise ValueError(f"path_dir is a folder, not a file: use e.g. {folder.with_suffix('')} instead of {folder}.")
    names = list(class_names)
    if len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise ValueError(f"class_names must be a list of at least two strings, got {names!r}.")
    config = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model_name": str(model_name),
        "class_names": names,
        "num_classes": len(names),
        "preprocessing": _json_ready("preprocessing", dict(preprocessing)),
        "metrics": _json_ready("metrics", dict(metrics or {})),
        "weights_file": WEIGHTS_FILE,
        "saved_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{folder} is a file; pass a folder name for the export.")
    recover_dir(folder)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / CONFIG_FILE).is_file():
        raise FileExistsError(f"{folder} is not empty and holds no tlkit export, so saving would replace it: choose a new "
                              "or empty folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.new-", dir=folder.parent))
    try:
        _write_export(staging, folder, model, config)
        swap_in_dir(staging, folder)  # at every instant the old complete export or the new complete one is on disk
    except (OSError, CheckpointError) as err:
        cause = err.__cause__ if isinstance(err, CheckpointError) else err
        if not isinstance(cause, OSError):
            raise
        raise CheckpointError(write_error_message(folder, cause, "The previous export in that folder (if any) is intact.")) from cause
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_export(staging: Path, old: Path, model: nn.Module, config: dict[str, Any]) -> None:
    """Write weights, config.json and SHA256SUMS into `staging`, with copies of any other files of the `old` export."""
    weights = save_model(staging / WEIGHTS_FILE, model, {"format": FORMAT_NAME, "model_name": config["model_name"]})
    config["weights_sha256"] = _sha256(weights)
    atomic_write(staging / CONFIG_FILE, lambda tmp: tmp.write_text(json.dumps(config, indent=1), encoding="utf-8"))
    sums = "".join(f"{_sha256(staging / name)}  {name}\n" for name in (CONFIG_FILE, WEIGHTS_FILE))
    atomic_write(staging / MANIFEST_FILE, lambda tmp: tmp.write_text(sums, encoding="utf-8"))
    if old.is_dir():  # e.g. the model card: copied, so the old folder stays complete until the swap
        for item in old.iterdir():
            if item.name not in (CONFIG_FILE, WEIGHTS_FILE, MANIFEST_FILE):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)


def _read_manifest(folder: Path) -> dict[str, str]:
    """{file name: SHA-256} from a folder's SHA256SUMS; a clear error for a damaged one."""
    sums = {}
    for line in (folder / MANIFEST_FILE).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise CheckpointError(f"{folder / MANIFEST_FILE} is damaged (line {line!r}); save the model again.")
        sums[name] = digest.lower()
    return sums


def verify_export(path_dir: str | os.PathLike) -> dict[str, str]:
    """Check a saved folder's SHA256SUMS against its config.json and weights; return the digests, or raise CheckpointError."""
    folder = Path(path_dir)
    if not (folder / MANIFEST_FILE).is_file():
        raise CheckpointError(f"No {MANIFEST_FILE} in {folder}: the export is incomplete or was changed; save the model again.")
    sums = _read_manifest(folder)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if n not in sums]
    if missing:
        raise CheckpointError(f"{folder / MANIFEST_FILE} does not cover {missing}; save the model again.")
    for name, digest in sums.items():
        if Path(name).name != name:
            raise UnsafeFormatError(f"{MANIFEST_FILE} names {name!r}; only files inside the folder are checked.")
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the folder is incomplete, save the model again.")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path.name} does not match the SHA-256 in {MANIFEST_FILE}: the file was changed or "
                                  "damaged; save the model again.")
    return sums


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class InferenceModel:
    """A loaded model ready to predict: the network (eval mode, on `device`), its labels, preprocessing and config."""

    model: nn.Module
    class_names: list[str]
    preprocessing: dict[str, Any]
    config: dict[str, Any]
    device: torch.device


def is_safetensors(path: str | os.PathLike) -> bool:
    """True if `path` parses as safetensors: an 8-byte little-endian header length, then that many bytes of JSON
    describing tensors (dtype, shape, data_offsets) that fit inside the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return False
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_SAFETENSORS_HEADER, size - 8):
                return False
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(header, dict):
        return False
    data = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not (isinstance(info, dict) and {"dtype", "shape", "data_offsets"} <= set(info)):
            return False
        begin, stop = info["data_offsets"]
        if not 0 <= begin <= stop <= data:
            return False
    return True


def refuse_unsafe(path: str | os.PathLike) -> Path:
    """Raise UnsafeFormatError if `path` is a pickle (by its suffix, or by its bytes when it is not safetensors); return it.

    A real safetensors file is recognised by parsing its header, never by its first byte: the header length is
    little-endian, so a header of 0x0b80 bytes starts with 0x80, the same byte as a pickle.
    """
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise UnsafeFormatError(
            f"{path.name} is a pickle-based PyTorch file ({path.suffix}): loading it can run any code it contains, so tlkit "
            "refuses it. If you trust its source, convert it once: model.load_state_dict(torch.load(path, weights_only=True)), "
            "then tlkit.export.save_for_inference(...) writes safetensors."
        )
    if path.is_file() and not is_safetensors(path):
        with open(path, "rb") as f:
            head = f.read(4)
        if any(head.startswith(m) for m in _PICKLE_MAGIC):
            raise UnsafeFormatError(f"{path.name} holds a pickle (or torch.save archive) under a {path.suffix or 'bare'} name; "
                                    "refusing to load it: save the model again with tlkit.export.save_for_inference.")
    return path


def _read_config(folder: Path) -> dict[str, Any]:
    """Find and check config.json; explain what is wrong with a folder that is not a saved model."""
    if folder.is_file():
        refuse_unsafe(folder)
        raise ValueError(f"{folder} is a file; pass the folder that tlkit.export.save_for_inference wrote.")
    recover_dir(folder)  # a save killed between its two renames left the old export at its backup name
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix.lower() in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            refuse_unsafe(folder / pickles[0])
        raise FileNotFoundError(f"No {CONFIG_FILE} in {folder}: save the model with tlkit.export.save_for_inference first, or check the path.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{config_path} is not valid JSON ({err}); save the model again.") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{config_path} was not written by tlkit.export.save_for_inference (format {FORMAT_NAME!r} expected).")
    return config


def load_for_inference(
    path_dir: str | os.PathLike, build_fn: Callable[[dict[str, Any]], nn.Module], device: torch.device | str = "cpu"
) -> InferenceModel:
    """Load a folder written by save_for_inference: `build_fn(config)` builds the architecture, safetensors fills it.

    Refuses pickles (.pt/.pth/.pkl/...), a config.json or weights whose SHA-256 differs from SHA256SUMS (CheckpointError),
    and weights that do not fit the architecture. Example build_fn: `lambda cfg: build_classifier(cfg["model_name"], cfg["num_classes"], pretrained=False)`.
    """
    folder = Path(path_dir)
    config = _read_config(folder)
    name = config.get("weights_file", WEIGHTS_FILE)
    if Path(name).name != name or not name.endswith(".safetensors"):
        raise UnsafeFormatError(f"config.json names weights {name!r}; only a .safetensors file inside the folder is loaded.")
    weights = refuse_unsafe(folder / name)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the folder is incomplete, save the model again.")
    if config.get("version", 1) >= 2 or (folder / MANIFEST_FILE).exists():
        verify_export(folder)  # version 1 folders had no SHA256SUMS: their config's weights digest is checked below
    expected = config.get("weights_sha256")
    if expected and _sha256(weights) != expected:
        raise CheckpointError(f"{weights.name} does not match the SHA-256 in config.json: the file was changed or damaged; save the model again.")
    model = build_fn(config)
    if not isinstance(model, nn.Module):
        raise TypeError(f"build_fn must return an nn.Module, got {type(model).__name__}.")
    device = torch.device(device)
    load_model_weights(weights, model, device)
    return InferenceModel(model.to(device).eval(), list(config["class_names"]), dict(config.get("preprocessing", {})), config, device)


# ---------------------------------------------------------------------------------------------- prediction
def preprocess_input(preprocessing: Mapping[str, Any], raw: Any, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Turn one raw input into a batch of one, as the saved `preprocessing` says.

    kind "image": a grey or RGB image (numpy/tensor/PIL, uint8 0-255 or float 0-1) -> resized to `size` (bilinear),
    `channels` channels, (x - mean) / std; uint8 images are rounded after resizing, like tlkit.data.animals.
    kind "tensor": `raw` already is the model's input for one example; it only gains a batch dimension.
    """
    kind = preprocessing.get("kind")
    if kind == "tensor":
        return torch.as_tensor(raw).unsqueeze(0).to(device)
    if kind != "image":
        raise ValueError(f"Unknown preprocessing kind {kind!r}; tlkit knows 'image' and 'tensor': pass predict_one(..., preprocess=your_function).")
    array = np.asarray(raw)
    is_uint8 = array.dtype == np.uint8
    x = torch.as_tensor(array, dtype=torch.float32)
    if x.ndim == 3 and x.shape[-1] in (1, 3, 4) and x.shape[0] not in (1, 3):
        x = x[..., :3].permute(2, 0, 1)  # H, W, C -> C, H, W
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"Expected one image [H, W] or [H, W, C], got shape {tuple(array.shape)}.")
    size = int(preprocessing["size"])
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        if is_uint8:
            x = x.round().clamp(0, 255)
    if is_uint8:
        x = x / 255.0
    channels = int(preprocessing.get("channels", x.shape[0]))
    if x.shape[0] == 1 and channels == 3:
        x = x.expand(3, -1, -1)
    elif x.shape[0] != channels:
        x = x.mean(dim=0, keepdim=True) if channels == 1 else x
    mean = torch.as_tensor(preprocessing.get("mean", 0.0), dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(preprocessing.get("std", 1.0), dtype=torch.float32).reshape(-1, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous().to(device)


@dataclass
class Prediction:
    """One input's predicted label, its probability, and the `k` most probable labels."""

    label: str
    probability: float
    top_k: list[tuple[str, float]]


@torch.no_grad()
def predict_one(
    loaded: InferenceModel, raw: Any, *, preprocess: Callable[[Any], Any] | None = None, top_k: int = 3
) -> Prediction:
    """Raw input in, label out: preprocess (the saved recipe, or `preprocess`), run the model, softmax, top k."""
    x = preprocess(raw) if preprocess is not None else preprocess_input(loaded.preprocessing, raw, device=loaded.device)
    if isinstance(x, Mapping):
        out = loaded.model(**{k: v.to(loaded.device) for k, v in x.items()})
    else:
        out = loaded.model(x.to(loaded.device))
    logits = getattr(out, "logits", out)
    if logits.ndim != 2 or logits.shape[0] != 1:
        raise ValueError(f"Expected logits of shape (1, classes) for one input, got {tuple(logits.shape)}; preprocess must return a batch of one.")
    if logits.shape[1] != len(loaded.class_names):
        raise ValueError(f"The model outputs {logits.shape[1]} classes but the config names {len(loaded.class_names)}.")
    probs = logits.float().softmax(dim=-1)[0].cpu()
    values, indices = probs.topk(min(top_k, len(probs)))
    ranked = [(loaded.class_names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
    return Prediction(ranked[0][0], ranked[0][1], ranked)


# ---------------------------------------------------------------------------------------------- ONNX
def _has_onnxscript() -> bool:
    return importlib.util.find_spec("onnxscript") is not None


def _model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer; the CPU for a model that has neither (e.g. nn.Identity)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _pass_on(caught: list[warnings.WarningMessage]) -> None:
    """Re-emit the exporter's warnings, tracer warnings with a sentence on what they mean; only deprecation notices go."""
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, FutureWarning)):
            continue  # the exporters' notices about their own future, not about this model
        message = str(w.message)
        if issubclass(w.category, torch.jit.TracerWarning):
            message = (f"{message} -- the traced ONNX graph may be right only for inputs like example_input; check "
                       "onnx_parity on other inputs (other batch sizes too), or use exporter='dynamo'.")
        warnings.warn_explicit(message, w.category, w.filename, w.lineno)


def export_onnx(
    model: nn.Module,
    example_input: torch.Tensor,
    path: str | os.PathLike,
    dynamic_batch: bool = True,
    *,
    opset: int = 17,
    exporter: str = "auto",
) -> Path:
    """Export `model` (in eval mode, on the CPU) to an ONNX file with input "input" and output "logits"; return the path.

    `dynamic_batch`: any batch size at run time (otherwise only example_input's). `exporter`: "torchscript" (the
    classic tracer, needs nothing extra), "dynamo" (torch.export based, needs the onnxscript package), or "auto"
    (dynamo when onnxscript is installed). Check the result with onnx_parity. Taught in lesson 07.
    """
    import onnx

    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ValueError(f"exporter must be 'auto', 'torchscript' or 'dynamo', got {exporter!r}.")
    use_dynamo = exporter == "dynamo" or (exporter == "auto" and _has_onnxscript())
    if use_dynamo and not _has_onnxscript():
        raise ModuleNotFoundError("The dynamo ONNX exporter needs onnxscript: `pip install onnxscript`, or use exporter='torchscript'.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    device = _model_device(model)
    model.eval().cpu()
    x = example_input.detach().cpu()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if use_dynamo:
                shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
                torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                                  opset_version=opset, dynamic_shapes=shapes, external_data=False)
            else:
                axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"],
                                  opset_version=opset, dynamic_axes=axes, do_constant_folding=True)
    finally:
        model.to(device).train(was_training)
    _pass_on(caught)
    onnx.checker.check_model(str(path))
    return path


def onnx_session(path: str | os.PathLike, num_threads: int | None = None) -> Any:
    """An onnxruntime CPU InferenceSession for `path` (`num_threads` defaults to torch's thread count, for fair timings)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run an onnxruntime session on one input batch and return its first output as a numpy array."""
    x = inputs.detach().cpu().numpy() if isinstance(inputs, torch.Tensor) else np.asarray(inputs)
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32, copy=False)})[0]


@torch.no_grad()
def onnx_parity(
    model: nn.Module, onnx_path: str | os.PathLike, inputs: torch.Tensor, atol: float = 1e-4, *, raise_on_failure: bool = True
) -> float:
    """Run the PyTorch model and the ONNX file (onnxruntime) on the same inputs; return the largest absolute difference.

    Raises ParityError when the shapes differ or the difference exceeds `atol` (unless raise_on_failure=False).
    Taught in lesson 07.
    """
    was_training = model.training
    model.eval()
    try:
        out = model(inputs.to(_model_device(model)))
        expected = getattr(out, "logits", out).float().cpu().numpy()
    finally:
        model.train(was_training)
    actual = run_onnx(onnx_session(onnx_path), inputs)
    if actual.shape != expected.shape:
        if raise_on_failure:
            raise ParityError(f"The ONNX model returned shape {actual.shape} but PyTorch {expected.shape}; export again (dynamic_batch=True for other batch sizes).")
        return float("inf")
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))) if expected.size else 0.0
    if raise_on_failure and not diff <= atol:
        raise ParityError(f"The ONNX outputs differ from PyTorch's by up to {diff:.3g} (tolerance {atol:g}); the export does not "
                          "match the model: export again from the final weights, in eval mode.")
    return diff


# ---------------------------------------------------------------------------------------------- latency
def measure_latency(
    fn: Callable[[Any], Any], inputs: Any, repeats: int = 20, *, warmup: int = 3, device: torch.device | str | None = None
) -> dict[str, float]:
    """Time `fn(inputs)`: median, mean, p90 and min in milliseconds, and per-item median for a batch. Taught in lesson 07.

    Warm-up calls are not timed (the first calls pay for memory allocation and kernel selection); on a GPU `device`,
    each call is synchronised before the clock stops.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}.")
    sync = torch.cuda.synchronize if device is not None and torch.device(device).type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            fn(inputs)
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(inputs)
            sync()
            times.append((time.perf_counter() - start) * 1e3)
    batch = len(inputs) if hasattr(inputs, "__len__") and not isinstance(inputs, (str, bytes, Mapping)) else 1
    ordered = sorted(times)
    median = statistics.median(times)
    return {"median_ms": median, "mean_ms": statistics.fmean(times), "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
            "min_ms": ordered[0], "batch_size": batch, "per_item_ms": median / max(batch, 1), "repeats": repeats}


# ---------------------------------------------------------------------------------------------- model card
def _markdown(value: Any) -> str:
    """A card section's body: text as is, a list as bullets, a dict as a two-column table."""
    if isinstance(value, Mapping):
        rows = [f"| {k} | {f'{v:.4g}' if isinstance(v, float) else v} |" for k, v in value.items()]
        return "\n".join(["| | |", "|---|---|", *rows])
    if isinstance(value, (list, tuple)):
        return "\n".join(f"- {item}" for item in value)
    return str(value)


def write_model_card(path: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Write a Markdown model card: intended use, data, metrics, limits (required), and any other sections given.

    Values may be text, a list (bullets) or a dict (a table, e.g. metrics). Keys: model_name (the title), summary,
    intended_use, out_of_scope, data, preprocessing, training, metrics, limits, how_to_use, license... Taught in lesson 07.
    """
    missing = [k for k in CARD_SECTIONS if not info.get(k)]
    if missing:
        raise ValueError(f"A model card must say {', '.join(CARD_SECTIONS)}; info lacks {missing}: add them (measured numbers for metrics).")
    title = info.get("model_name", "Model")
    lines = [f"# Model card: {title}", ""]
    if info.get("summary"):
        lines += [str(info["summary"]), ""]
    order = ["intended_use", "out_of_scope", "data", "preprocessing", "training", "metrics", "limits"]
    rest = [k for k in info if k not in order and k not in ("model_name", "summary")]
    for key in [k for k in order if info.get(k)] + rest:
        lines += [f"## {key.replace('_', ' ').capitalize()}", "", _markdown(info[key]), ""]
    lines.append(f"*Card written {_dt.date.today().isoformat()} with tlkit.export.write_model_card.*")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
