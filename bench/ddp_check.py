"""Benchmark 6: `fit` runs unchanged under torchrun with DistributedDataParallel, and learns what one process learns.

Launcher (default): trains a small model once in this process with the global batch (W x B), then starts
`torchrun --nproc-per-node W` on 127.0.0.1 where each process trains with batch B on its shard
(tlkit.distributed.setup / wrap_model / distributed_loader around an unchanged tlkit.train.fit), and compares the
final weights and validation scores. Averaging the gradients of W shards of B examples is the gradient of the
W x B batch, so the two runs must agree up to float rounding.

    .venv/bin/python -m bench.ddp_check                         # 2 CPU processes, gloo backend, 127.0.0.1
    .venv/bin/python -m bench.ddp_check --nproc 4 --device cuda # 4 GPUs, nccl
Worker mode (what torchrun runs): `--worker`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bench.common import BENCH_DIR, add_common_args, command_line, machine_info, save_result

NAME = "ddp_check"


def make_data(n_train: int, n_val: int = 128, features: int = 8, classes: int = 3, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """A seeded, learnable classification problem (labels from a random linear rule plus noise): (train, val)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(features, classes, generator=g)
    x = torch.randn(n_train + n_val, features, generator=g)
    y = (x @ w + 0.3 * torch.randn(len(x), classes, generator=g)).argmax(1)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def make_model(features: int = 8, classes: int = 3, seed: int = 0) -> nn.Module:
    """A small MLP with seeded initial weights (no dropout, no BatchNorm: runs are comparable step by step)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 32), nn.Tanh(), nn.Linear(32, classes))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train with fit: sharded across processes under torchrun, with the whole global batch otherwise."""
    from safetensors.torch import save_file

    from tlkit import distributed as ddp
    from tlkit.train import fit

    device = ddp.setup(backend="gloo" if args.device == "cpu" else None, device=args.device)
    train_set, val_set = make_data(args.train_size, seed=args.seed)
    model = ddp.wrap_model(make_model(seed=args.seed), device)
    if ddp.is_distributed():
        train_loader = ddp.distributed_loader(train_set, args.batch_size, shuffle=True, seed=args.seed)
    else:  # one process, the same shuffled order as the shards together: one "replica" of EpochShardSampler
        sampler = ddp.EpochShardSampler(train_set, shuffle=True, seed=args.seed, num_replicas=1, rank=0)
        train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    start = time.perf_counter()
    history = fit(model, train_loader, DataLoader(val_set, batch_size=64), num_epochs=args.epochs, lr=args.lr,
                  device=device, progress=False, seed=args.seed)
    seconds = time.perf_counter() - start
    out = {"world_size": ddp.world_size(), "batch_size_per_process": args.batch_size, "seconds": round(seconds, 3),
           "val_accuracy": history.val_accuracy, "val_loss": history.val_loss, "device": str(device)}
    if ddp.is_main_process():
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in ddp.unwrap_model(model).state_dict().items()}
        save_file(state, str(folder / "weights.safetensors"))
        (folder / "run.json").write_text(json.dumps(out, indent=2) + "\n")
    ddp.cleanup()
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(nproc: int, port: int, worker_args: list[str]) -> list[str]:
    """torchrun on this machine only: one node, a static rendezvous on 127.0.0.1."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "bench.ddp_check", "--worker", *worker_args]


def launch(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Run torchrun with args.nproc workers on a free local port; raise with its output if it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONWARNINGS="ignore")
    if platform.system() == "Linux" and args.device == "cpu":
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo talks over the loopback interface only
    worker_args = ["--device", args.device, "--batch-size", str(args.batch_size), "--epochs", str(args.epochs),
                   "--lr", str(args.lr), "--train-size", str(args.train_size), "--seed", str(args.seed), "--out", str(folder)]
    start = time.perf_counter()
    proc = subprocess.run(torchrun_command(args.nproc, free_port(), worker_args), cwd=BENCH_DIR.parent, env=env,
                          capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = json.loads((folder / "run.json").read_text())
    run["launch_seconds"] = round(time.perf_counter() - start, 2)
    return run


def compare(single_dir: Path, ddp_dir: Path) -> dict[str, float]:
    """Largest absolute difference between the two runs' final weights, and between their validation losses."""
    from safetensors.torch import load_file

    a, b = load_file(str(single_dir / "weights.safetensors")), load_file(str(ddp_dir / "weights.safetensors"))
    if a.keys() != b.keys():
        raise ValueError(f"The runs saved different tensors: {sorted(a)} vs {sorted(b)}.")
    ra, rb = (json.loads((d / "run.json").read_text()) for d in (single_dir, ddp_dir))
    return {"max_abs_weight_diff": max(float((a[k] - b[k]).abs().max()) for k in a),
            "max_abs_val_loss_diff": max(abs(x - y) for x, y in zip(ra["val_loss"], rb["val_loss"])),
            "same_val_accuracy": ra["val_accuracy"] == rb["val_accuracy"]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags shared by the launcher and the workers."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p)
    p.add_argument("--worker", action="store_true", help="train (what torchrun runs); without it: launch and compare")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8, help="per process; the single-process run uses nproc x this")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--train-size", type=int, default=128)
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed weight difference")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds before torchrun is given up")
    args = p.parse_args(argv)
    args.device = args.device or "cpu"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Launcher: single-process run, torchrun run, comparison; saves bench/results/ddp_check-<cpu|gpu>.json."""
    args = parse_args(argv)
    if args.worker:
        return train(args)
    if args.train_size % (args.nproc * args.batch_size):
        raise ValueError(f"--train-size ({args.train_size}) must be a multiple of nproc x batch-size ({args.nproc * args.batch_size}) "
                         "so that no process gets padded examples.")
    with tempfile.TemporaryDirectory(prefix="ddp_check_") as tmp:  # the two runs' weights: compared, then dropped
        work = Path(tmp)
        single_args = argparse.Namespace(**{**vars(args), "batch_size": args.nproc * args.batch_size, "out": str(work / "single")})
        single = train(single_args)
        distributed = launch(args, work / "ddp")
        diff = compare(work / "single", work / "ddp")
    result = {"benchmark": NAME, "command": command_line(f"bench.{NAME}", argv), "machine": machine_info(torch.device(args.device)),
              "settings": {k: v for k, v in vars(args).items() if k not in ("out",)}, "single": single, "ddp": distributed,
              "comparison": diff, "matches": bool(diff["max_abs_weight_diff"] <= args.tolerance and diff["same_val_accuracy"])}
    print(f"single process (batch {args.nproc * args.batch_size}) vs {args.nproc} processes (batch {args.batch_size} each): "
          f"max weight difference {diff['max_abs_weight_diff']:.2e}, val accuracy {single['val_accuracy'][-1]:.4f} vs "
          f"{distributed['val_accuracy'][-1]:.4f} -> {'match' if result['matches'] else 'MISMATCH'}")
    print("saved", save_result(NAME, result, args.out))
    return result


if __name__ == "__main__":
    main()
