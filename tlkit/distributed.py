"""Scale-out: run `tlkit.train.fit` unchanged on several GPUs (or CPU processes) with DistributedDataParallel.

torchrun starts one process per GPU and sets RANK, WORLD_SIZE and LOCAL_RANK; every process runs the same script:

    device = setup()                                   # joins the process group, picks cuda:LOCAL_RANK (or the CPU)
    model = wrap_model(model, device)                  # after freezing: DDP syncs only what is trainable then
    train_loader = distributed_loader(train_set, batch_size=64, shuffle=True, seed=0)   # a shard per process
    history = fit(model, train_loader, val_loader, num_epochs=5, lr=1e-3, device=device) # fit itself is unchanged
    if is_main_process(): save_model("model.safetensors", unwrap_model(model))
    cleanup()

Outside torchrun every function falls back to the single-process behaviour, so the same script runs everywhere.
Taught in bench/RESULTS.md ("Using several GPUs"), quoted in the README.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tlkit.data.splits import seeded_loader
from tlkit.device import get_device

BACKENDS = ("nccl", "gloo")


def launched_by_torchrun() -> bool:
    """True when this process was started by torchrun (or another launcher that sets WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_distributed() -> bool:
    """True when a process group is running (setup() was called under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes taking part (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's number, 0 .. world_size() - 1 (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    """True on rank 0: the one process that should print, plot and save files."""
    return rank() == 0


def setup(backend: str | None = None, device: torch.device | str | None = None) -> torch.device:
    """Join the process group torchrun prepared and return this process's device (cuda:LOCAL_RANK, else the CPU).

    backend: "nccl" for GPUs (the default there), "gloo" for CPUs. Outside torchrun: no process group, and the
    device is `device` or tlkit.device.get_device(). Call cleanup() at the end.
    """
    if not launched_by_torchrun():
        return torch.device(device) if device is not None else get_device()
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} (nccl for GPUs, gloo for CPUs), got {backend!r}.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want_gpu = backend != "gloo" and torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    if want_gpu:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                               "start torchrun with --nproc_per_node at most the number of GPUs.")
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    else:
        chosen = torch.device("cpu")
    if not is_distributed():
        dist.init_process_group(backend=backend or ("nccl" if chosen.type == "cuda" else "gloo"), init_method="env://")
    return chosen


def cleanup() -> None:
    """Leave the process group (call once, at the end of the script); does nothing without one."""
    if is_distributed():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device | str, *, sync_batchnorm: bool = False,
               find_unused_parameters: bool = False) -> nn.Module:
    """Move `model` to `device` and wrap it in DistributedDataParallel (no wrapping without a process group).

    Freeze first, then wrap: DDP only synchronises parameters that were trainable when it was built, so after
    unfreezing more layers call wrap_model(unwrap_model(model), device) again. `sync_batchnorm` pools BatchNorm
    statistics across GPUs (worth it only for small per-GPU batches).
    """
    device = torch.device(device)
    model = unwrap_model(model).to(device)
    if not is_distributed():
        return model
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("Every parameter is frozen, so DDP has nothing to synchronise: unfreeze something before wrap_model.")
    if sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside a DDP wrapper (for saving, freezing and tlkit.freeze.param_groups); others pass through."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class EpochShardSampler(DistributedSampler):
    """DistributedSampler that advances its own epoch on every pass, so a new shuffle needs no set_epoch() call.

    `fit` calls set_epoch(epoch - 1) before each epoch, so a resumed run gets the shards it would have had; a hand
    written loop that never calls it still reshuffles (the stock DistributedSampler repeats epoch 0's order forever).
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.passes = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the shuffle of `epoch` (0-based) on the next pass."""
        super().set_epoch(epoch)
        self.passes = epoch

    def __iter__(self) -> Iterator[int]:
        self.set_epoch(self.passes)
        self.passes += 1
        return super().__iter__()


def distributed_loader(dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                       drop_last: bool = False, **loader_kwargs: Any) -> DataLoader:
    """A DataLoader giving each process its own shard of `dataset` (batch_size is per process).

    The global batch is batch_size x world_size(): scale the lr with it, or halve batch_size when you double the
    GPUs to keep the single-GPU recipe. Without a process group it is tlkit.data.splits.seeded_loader (the same
    order as all the shards together).
    Use it for training; keep val_loader a plain DataLoader so every process sees the same validation scores.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if "sampler" in loader_kwargs or "batch_sampler" in loader_kwargs:
        raise ValueError("distributed_loader builds its own sampler; drop the sampler/batch_sampler argument.")
    if not is_distributed():
        return seeded_loader(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, **loader_kwargs)
    sampler = EpochShardSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **loader_kwargs)


def barrier() -> None:
    """Wait until every process gets here (e.g. until rank 0 has written a checkpoint); nothing without a process group."""
    if is_distributed():
        dist.barrier()


def all_reduce_mean(value: float | torch.Tensor, *, device: torch.device | str = "cpu") -> float:
    """The mean of a number over all processes (e.g. a shard's accuracy); the number itself without a process group."""
    if not is_distributed():
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64 if torch.device(device).type == "cpu" else torch.float32, device=device).clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / world_size()
