"""What every benchmark shares: the machine it ran on, a timer that waits for the GPU, and JSON results on disk."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PLOTS_DIR = BENCH_DIR / "plots"


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    """The 1-minute load average (how many processes wanted the CPUs), None where the OS does not say."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def git_commit() -> str | None:
    """The checked-out commit, read from .git without running git (None outside a checkout)."""
    git = BENCH_DIR.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = git / head[5:]
            return ref.read_text().strip()[:12] if ref.is_file() else None
        return head[:12]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict[str, Any]:
    """Where and when a benchmark ran: date, device, GPU or CPU model, cores, threads, load, versions."""
    info: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": git_commit(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 1024**3, 1), cuda=torch.version.cuda)
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timer measures the work and not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(record: dict[str, float], name: str, device: torch.device) -> Iterator[None]:
    """Store the block's wall time in record[name + "_s"] and this process's CPU time in record[name + "_cpu_s"].

    The GPU is synchronised on both ends. CPU time (all threads of this process) barely moves when other programs
    share the cores, so on a busy machine compare CPU-time ratios as well as wall-time ratios.
    """
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    yield
    synchronize(device)
    record[f"{name}_s"] = round(time.perf_counter() - start, 3)
    record[f"{name}_cpu_s"] = round(time.process_time() - cpu_start, 3)


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reproduces this run, as a reader would type it from the repository root."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join([".venv/bin/python -m", module, *args])


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """--device, --out and --seed, the same in every benchmark."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the best available)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="folder for the JSON result (default bench/results)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 wastes least on a machine shared with others")


def save_result(name: str, result: dict[str, Any], out: str | Path) -> Path:
    """Write `result` as out/<name>-<device type>.json (one file per benchmark and kind of machine)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    kind = "gpu" if str(result.get("machine", {}).get("device", "cpu")).startswith("cuda") else "cpu"
    path = folder / f"{name}-{kind}.json"
    result["machine"]["load_average_end"] = load_average()
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def load_result(name: str, kind: str = "cpu", folder: str | Path = RESULTS_DIR) -> dict[str, Any] | None:
    """Read a saved result (None if that benchmark has not been run on that kind of machine)."""
    path = Path(folder) / f"{name}-{kind}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def resolve_device(name: str | None, threads: int | None = None) -> torch.device:
    """The device to benchmark on: `name` if given, else the best available one; `threads` caps torch's CPU threads."""
    from tlkit.device import get_device

    if threads:
        torch.set_num_threads(threads)
    return get_device(prefer=name)


def warm_up(model: torch.nn.Module, example: torch.Tensor | dict[str, torch.Tensor], device: torch.device) -> float:
    """One forward+backward and one inference pass, untimed, so the first method measured pays no start-up cost.

    `example` is an input batch, or a dict of keyword inputs (a tokenised text batch). The first passes of a fresh
    process are slow (kernel libraries loaded and tuned lazily: ~20 s on a busy 2-core
    machine); without this, whichever recipe runs first looks worse. Gradients are cleared; returns seconds spent.
    """
    def forward() -> torch.Tensor:
        if isinstance(example, dict):
            out = model(**{k: v.to(device) for k, v in example.items()})
            return out.logits if hasattr(out, "logits") else out
        return model(example.to(device))

    start = time.perf_counter()
    was_training = model.training
    model.to(device).train()
    forward().float().sum().backward()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model.eval()
        forward()
    model.train(was_training)
    synchronize(device)
    return round(time.perf_counter() - start, 2)
