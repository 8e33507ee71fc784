"""tlkit.distributed: single-process fallbacks, sharding, and fit under torchrun matching a single-process run."""

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from tlkit import distributed as ddp


@pytest.fixture()
def no_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture()
def one_process_group(monkeypatch):
    """A real gloo process group of one process on 127.0.0.1 (what torchrun would set up, minus the other ranks)."""
    from bench.ddp_check import free_port

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    device = ddp.setup(backend="gloo", device="cpu")
    yield device
    ddp.cleanup()


def _dataset(n=12):
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 2)


def test_without_torchrun_everything_is_single_process(no_torchrun):
    assert not ddp.launched_by_torchrun() and not ddp.is_distributed()
    assert ddp.setup(device="cpu") == torch.device("cpu")
    assert (ddp.world_size(), ddp.rank(), ddp.is_main_process()) == (1, 0, True)
    model = nn.Linear(2, 2)
    assert ddp.wrap_model(model, "cpu") is model and ddp.unwrap_model(model) is model
    assert ddp.all_reduce_mean(torch.tensor(0.25)) == 0.25


def test_plain_loader_is_seeded_and_complete(no_torchrun):
    orders = [torch.cat([x for x, _ in ddp.distributed_loader(_dataset(), 4, shuffle=True, seed=3)]).flatten().tolist()
              for _ in range(2)]
    assert orders[0] == orders[1] and sorted(orders[0]) == list(range(12)) and orders[0] != list(range(12))


def test_shards_are_disjoint_cover_the_data_and_reshuffle_each_pass():
    samplers = [ddp.EpochShardSampler(_dataset(), shuffle=True, seed=0, num_replicas=2, rank=r) for r in (0, 1)]
    first = [list(s) for s in samplers]
    assert set(first[0]).isdisjoint(first[1]) and sorted(first[0] + first[1]) == list(range(12))
    second = [list(s) for s in samplers]
    assert second != first, "the sampler must advance its epoch by itself (fit never calls set_epoch)"
    again = [list(ddp.EpochShardSampler(_dataset(), shuffle=True, seed=0, num_replicas=2, rank=r)) for r in (0, 1)]
    assert again == first  # same seed, same first epoch


def test_helpful_errors(no_torchrun, monkeypatch):
    with pytest.raises(ValueError, match="batch_size"):
        ddp.distributed_loader(_dataset(), 0)
    with pytest.raises(ValueError, match="sampler"):
        ddp.distributed_loader(_dataset(), 2, sampler=None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="nccl for GPUs, gloo for CPUs"):
        ddp.setup(backend="mpi")


def test_fit_runs_unchanged_on_a_wrapped_model(one_process_group):
    from tlkit.train import fit

    assert ddp.is_distributed() and ddp.world_size() == 1 and one_process_group == torch.device("cpu")
    torch.manual_seed(0)
    model = ddp.wrap_model(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 2)), one_process_group)
    assert isinstance(model, DistributedDataParallel) and isinstance(ddp.unwrap_model(model), nn.Sequential)
    loader = ddp.distributed_loader(_dataset(), 4, shuffle=True)
    history = fit(model, loader, DataLoader(_dataset(), batch_size=6), num_epochs=2, lr=1e-2, device="cpu", progress=False)
    assert history.num_epochs == 2 and history.val_accuracy[-1] is not None
    assert ddp.all_reduce_mean(0.5) == 0.5
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="unfreeze"):
        ddp.wrap_model(frozen, "cpu")
    assert dist.get_backend() == "gloo"


def test_two_gloo_processes_match_one_process(tmp_path):
    """torchrun, 2 CPU processes on 127.0.0.1: the same weights as one process with the doubled batch."""
    from bench import ddp_check

    result = ddp_check.main(["--out", str(tmp_path), "--nproc", "2", "--timeout", "240"])
    assert result["ddp"]["world_size"] == 2 and result["single"]["world_size"] == 1
    assert result["comparison"]["max_abs_weight_diff"] < 1e-4
    assert result["matches"]
    assert result["ddp"]["val_accuracy"][-1] > 0.6, "the check model should learn (chance is 0.33)"
    assert (tmp_path / "ddp_check-cpu.json").is_file()


WORKER = '''
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tlkit import checkpoint, distributed as ddp
from tlkit.train import fit

out = Path(sys.argv[1])
device = ddp.setup(backend="gloo", device="cpu")
real_save = checkpoint.save_checkpoint


def logged_save(*args, **kwargs):
    with open(out / f"saves-rank{ddp.rank()}.txt", "a") as f:
        f.write("saved\\n")
    return real_save(*args, **kwargs)


checkpoint.save_checkpoint = logged_save
torch.manual_seed(0)
data = TensorDataset(torch.arange(32, dtype=torch.float32)[:, None] / 32, torch.arange(32) % 2)
model = ddp.wrap_model(nn.Linear(1, 2), device)
history = fit(model, ddp.distributed_loader(data, 4, seed=0), DataLoader(data, batch_size=16), num_epochs=2, lr=1e-2,
              device=device, checkpoint_path=out / "ckpt", progress=False, seed=0)
(out / f"done-rank{ddp.rank()}.txt").write_text(str(history.num_epochs))
ddp.cleanup()
'''


def test_under_ddp_only_rank_0_writes_checkpoints(tmp_path):
    """2 gloo processes on 127.0.0.1 run fit with checkpoint_path: rank 0 saves each epoch, rank 1 never does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bench.ddp_check import free_port

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", GLOO_SOCKET_IFNAME="lo",
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script), str(tmp_path)]
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert [(tmp_path / f"done-rank{r}.txt").read_text() for r in (0, 1)] == ["2", "2"]
    assert (tmp_path / "saves-rank0.txt").read_text().count("saved") == 2
    assert not (tmp_path / "saves-rank1.txt").exists(), "rank 1 wrote a checkpoint: only rank 0 may"
    assert checkpoint_epoch(tmp_path / "ckpt") == 2


def checkpoint_epoch(path) -> int:
    from tlkit import checkpoint

    return checkpoint.checkpoint_info(path)["epoch"]


def test_fit_sets_the_epoch_of_samplers_so_a_resumed_run_gets_the_same_shards():
    sampler = ddp.EpochShardSampler(_dataset(), shuffle=True, seed=0, num_replicas=2, rank=0)
    first, second = list(sampler), list(sampler)
    sampler.set_epoch(1)  # what fit does before epoch 2 of a resumed run
    assert list(sampler) == second and list(sampler) != second  # and it keeps advancing by itself afterwards
    single = ddp.distributed_loader(_dataset(), 12, seed=0)  # no process group: the shards' order, all in one
    both = ddp.EpochShardSampler(_dataset(), shuffle=True, seed=0, num_replicas=1, rank=0)
    assert next(iter(single))[0].flatten().long().tolist() == list(both)
