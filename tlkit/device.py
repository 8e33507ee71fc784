"""Device setup: choose cuda / mps / cpu, report the environment, seed everything, pick the autocast dtype.

Taught in lesson 00 (environment check). Nothing here runs at import time.
"""

from __future__ import annotations

import os
import platform
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch


class NoGPUError(RuntimeError):
    """Raised when a GPU was required but none is visible."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device(prefer: str | None = None, require_gpu: bool = False) -> torch.device:
    """Return the best device (cuda, then mps, then cpu), or `prefer` if given; refuse CPU when `require_gpu`.

    `require_gpu=True` is for runs where a silent CPU fallback would waste your time (a Colab notebook without
    a GPU runtime): it raises NoGPUError with the fix instead of quietly running 40x slower.
    The environment variable TLKIT_DEVICE (cpu, cuda, cuda:1, mps) overrides the automatic choice.
    """
    choice = prefer or os.environ.get("TLKIT_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise NoGPUError(f"Device {choice!r} was asked for but CUDA is not available; use prefer='cpu' or fix the GPU setup.")
        if device.type == "mps" and not _mps_available():
            raise NoGPUError(f"Device {choice!r} was asked for but Apple MPS is not available; use prefer='cpu'.")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif _mps_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if require_gpu and device.type == "cpu":
        raise NoGPUError(
            "No GPU found but require_gpu=True. On Colab: Runtime > Change runtime type > GPU, then rerun; "
            "locally: set require_gpu=False to run on the CPU (slower, but every lesson works)."
        )
    return device


def supports_bf16(device: torch.device) -> bool:
    """True where bfloat16 autocast is worth it: CUDA GPUs that report native bf16 (Ampere and newer).

    False on CPU and on Apple MPS: torch supports bf16 on MPS only from macOS 14 (autocast from torch 2.6), and
    M1/M2 chips emulate it without a speed-up, so MPS autocast uses float16 (see autocast_dtype).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype worth using on `device`: bf16 (else fp16) on CUDA, fp16 on MPS, None (plain fp32) on CPU.

    On most CPUs bf16 autocast is slower than fp32 (no native bf16 units), so we keep fp32 there.
    """
    if device.type == "cuda":
        return torch.bfloat16 if supports_bf16(device) else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def autocast(device: torch.device, enabled: bool = True) -> AbstractContextManager:
    """A context manager for mixed precision on `device` (a no-op where autocast_dtype is None or not enabled)."""
    dtype = autocast_dtype(device)
    if not enabled or dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); `deterministic=True` also asks cuDNN for repeatable kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@dataclass
class EnvironmentReport:
    """What a learner needs to know about the machine: device, memory, versions, precision support."""

    device: str
    device_name: str
    gpu_memory_gb: float | None
    torch_version: str
    cuda_version: str | None
    python_version: str
    cpu_threads: int
    bf16: bool
    autocast: str
    advice: list[str]

    def __str__(self) -> str:
        mem = f"{self.gpu_memory_gb:.1f} GB" if self.gpu_memory_gb is not None else "-"
        lines = [
            f"device          : {self.device} ({self.device_name})",
            f"GPU memory      : {mem}",
            f"torch / CUDA    : {self.torch_version} / {self.cuda_version or '-'}",
            f"python          : {self.python_version}",
            f"CPU threads     : {self.cpu_threads}",
            f"bf16 support    : {'yes' if self.bf16 else 'no'}",
            f"mixed precision : {self.autocast}",
        ]
        lines += [f"advice          : {a}" for a in self.advice]
        return "\n".join(lines)


def environment_report(device: torch.device | None = None) -> EnvironmentReport:
    """Collect an EnvironmentReport for `device` (default: get_device()); print it to read it."""
    device = device or get_device()
    name, mem = platform.processor() or platform.machine(), None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        name, mem = props.name, props.total_memory / 1024**3
    elif device.type == "mps":
        name = "Apple GPU (MPS)"
    dtype = autocast_dtype(device)
    advice = []
    if device.type == "cpu":
        advice.append("No GPU: every lesson runs on the CPU; expect the CPU times in the README's lesson map.")
    if device.type == "cuda" and mem is not None and mem < 8:
        advice.append("Small GPU: if you run out of memory, halve batch_size in the config cell.")
    return EnvironmentReport(
        device=str(device),
        device_name=name,
        gpu_memory_gb=mem,
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        python_version=platform.python_version(),
        cpu_threads=torch.get_num_threads(),
        bf16=supports_bf16(device),
        autocast=str(dtype).replace("torch.", "") if dtype else "off (fp32)",
        advice=advice,
    )
