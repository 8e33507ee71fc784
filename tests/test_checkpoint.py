"""Tests for tlkit.checkpoint: safetensors weights, weights_only state, atomic saves, clear refusals."""

from __future__ import annotations

import errno
import json
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from tlkit import checkpoint
from tlkit.checkpoint import (CheckpointError, checkpoint_info, load_best_weights, load_checkpoint, load_model_weights,
                              read_metadata, save_checkpoint, save_model)

CPU = torch.device("cpu")


def small_model(seed: int = 0, out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, out))


def trained(seed: int = 0):
    """A model, optimizer, scheduler after two steps (so the optimizer has state)."""
    model = small_model(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    for _ in range(2):
        model(torch.randn(6, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_roundtrip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    model, optimizer, scheduler = trained()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    history = {"train_loss": [0.5, 0.4]}
    save_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                    epoch=2, history=history, extra={"note": "hello"})
    expected = (torch.rand(3), np.random.rand(), random.random())

    fresh, fresh_opt, fresh_sched = small_model(seed=1), None, None
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda step: 0.5**step)
    info = load_checkpoint(tmp_path / "run", model=fresh, optimizer=fresh_opt, scheduler=fresh_sched, scaler=scaler, device=CPU)

    assert info["epoch"] == 2 and info["history"] == history and info["extra"] == {"note": "hello"}
    assert same_weights(model, fresh)  # BatchNorm running statistics included
    assert fresh_sched.last_epoch == scheduler.last_epoch and fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for state, fresh_state in zip(optimizer.state.values(), fresh_opt.state.values()):
        torch.testing.assert_close(fresh_state["exp_avg"], state["exp_avg"])
    got = (torch.rand(3), np.random.rand(), random.random())  # the RNG states are back where they were saved
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_state_file_is_plain_and_loads_with_weights_only(tmp_path):
    model, optimizer, scheduler = trained()
    save_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, scheduler=scheduler, epoch=1)
    record = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    state = torch.load(tmp_path / "run" / record["state_file"], weights_only=True)
    assert set(state) == {"optimizer", "scheduler", "scaler", "rng"}
    assert record["model_file"].endswith(".safetensors")


def test_tied_weights_survive_save_and_load(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight  # tied, as in language models

    torch.manual_seed(0)
    model = Tied()
    save_model(tmp_path / "tied.safetensors", model, {"name": "tied"})
    torch.manual_seed(1)
    fresh = Tied()
    metadata = load_model_weights(tmp_path / "tied.safetensors", fresh, CPU)
    assert metadata == {"name": "tied"}
    assert torch.equal(fresh.embed.weight, model.embed.weight) and fresh.out.weight is fresh.embed.weight


def test_save_model_metadata_and_argument_errors(tmp_path):
    model = small_model()
    path = save_model(tmp_path / "m.safetensors", model, {"classes": json.dumps(["a", "b", "c"])})
    assert json.loads(read_metadata(path)["classes"]) == ["a", "b", "c"]
    with pytest.raises(TypeError, match="str to str"):
        save_model(tmp_path / "x.safetensors", model, {"classes": ["a"]})
    with pytest.raises(ValueError, match=r"\.safetensors"):
        save_model(tmp_path / "x.pt", model, {})


def test_shape_mismatch_names_the_keys(tmp_path):
    save_model(tmp_path / "m.safetensors", small_model(out=3), {})
    with pytest.raises(CheckpointError, match=r"3\.weight: file \(3, 8\) vs model \(5, 8\)"):
        load_model_weights(tmp_path / "m.safetensors", small_model(out=5), CPU)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_model_weights(tmp_path / "m.safetensors", nn.Sequential(small_model(), nn.Linear(3, 2)), CPU)


def test_refuses_pickled_model_files(tmp_path):
    torch.save(small_model(), tmp_path / "full_model.pt")  # a pickled nn.Module: loading it could run code
    with pytest.raises(CheckpointError, match="pickled"):
        load_model_weights(tmp_path / "full_model.pt", small_model(), CPU)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(tmp_path / "full_model.pt", model=small_model(), device=CPU)


def _files(folder):
    """The model and state file names that a checkpoint's record names."""
    record = json.loads((folder / "checkpoint.json").read_text())
    return folder / record["model_file"], folder / record["state_file"]


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere", model=small_model(), device=CPU)
    model, optimizer, _ = trained()
    save_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, epoch=1)
    folder = checkpoint_info(tmp_path / "run")["folder"]
    weights, _ = _files(folder)

    weights.write_bytes(weights.read_bytes()[:40])  # cut off, as by a full disk
    with pytest.raises(CheckpointError, match=r"model-epoch0001-[0-9a-f]{8}\.safetensors does not match the SHA-256.*delete"):
        load_checkpoint(folder, model=small_model(), device=CPU)

    save_checkpoint(folder, model=model, optimizer=optimizer, epoch=1)
    _, state = _files(folder)
    state.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=r"state-epoch0001-[0-9a-f]{8}\.pt does not match the SHA-256"):
        load_checkpoint(folder, model=small_model(), optimizer=torch.optim.AdamW(small_model().parameters()), device=CPU)

    (folder / "checkpoint.json").write_text("{ broken")
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is corrupt"):
        load_checkpoint(folder, model=small_model(), device=CPU)


def test_corrupt_files_of_an_old_record_without_digests_are_still_explained(tmp_path):
    model, optimizer, _ = trained()
    save_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, epoch=1)
    record = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    del record["sha256"], record["record_sha256"]  # as written before checkpoints carried digests
    (tmp_path / "run" / "checkpoint.json").write_text(json.dumps(record))
    weights, _ = _files(tmp_path / "run")
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"is corrupt.*delete"):
        load_checkpoint(tmp_path / "run", model=small_model(), device=CPU)


def test_the_record_covers_itself_and_every_file(tmp_path):
    model, optimizer, _ = trained()
    save_checkpoint(tmp_path / "run", model=model, optimizer=optimizer, epoch=1, history={"loss": [0.5]})
    pointer = tmp_path / "run" / "checkpoint.json"
    record = json.loads(pointer.read_text())
    assert set(record["sha256"]) == {record["model_file"], record["state_file"]}
    record["epoch"] = 7  # an edited (or bit-flipped) record must not be trusted
    pointer.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not match its own SHA-256"):
        checkpoint_info(tmp_path / "run")


def test_resaving_the_same_epoch_never_overwrites_the_files_the_record_names(tmp_path, monkeypatch):
    """Before: a re-save of epoch 1 replaced model-epoch0001 first, so a crash before the record left a mismatch."""
    first, optimizer, _ = trained(seed=0)
    save_checkpoint(tmp_path / "run", model=first, optimizer=optimizer, epoch=1)
    monkeypatch.setattr(checkpoint, "_write_json", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(CheckpointError, match="previous checkpoint"):
        save_checkpoint(tmp_path / "run", model=small_model(seed=3), optimizer=optimizer, epoch=1)
    monkeypatch.undo()
    loaded = small_model(seed=9)
    load_checkpoint(tmp_path / "run", model=loaded, device=CPU)
    assert same_weights(loaded, first)
    assert len(list((tmp_path / "run").glob("model-*"))) == 1, "the unnamed new files are removed"


def test_a_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    first, optimizer, _ = trained(seed=0)
    save_checkpoint(tmp_path / "run", model=first, optimizer=optimizer, epoch=1)

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a file")  # the process dies mid-write
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    second, optimizer2, _ = trained(seed=5)
    with pytest.raises(CheckpointError, match=r"disk is full.*free some space.*previous checkpoint.*intact") as info:
        save_checkpoint(tmp_path / "run", model=second, optimizer=optimizer2, epoch=2)
    assert isinstance(info.value.__cause__, OSError)  # explained, with the original error kept as the cause
    monkeypatch.undo()

    assert checkpoint_info(tmp_path / "run")["epoch"] == 1
    loaded = small_model(seed=9)
    load_checkpoint(tmp_path / "run", model=loaded, optimizer=torch.optim.AdamW(loaded.parameters()), device=CPU)
    assert same_weights(loaded, first)
    assert not list((tmp_path / "run").glob("*.tmp")), "temporary files must be cleaned up"
    assert len(list((tmp_path / "run").glob("model-*"))) == 1, "the new weights no record names are removed"


def test_save_model_explains_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "_st_save_model", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space")))
    with pytest.raises(CheckpointError, match="disk is full"):
        save_model(tmp_path / "w.safetensors", small_model())
    assert not list(tmp_path.iterdir())


def test_best_epoch_weights_are_kept(tmp_path):
    models = [small_model(seed=s) for s in range(3)]
    for epoch, model in enumerate(models, start=1):
        save_checkpoint(tmp_path / "run", model=model, epoch=epoch, best_epoch=1)
    names = sorted(re.sub(r"-[0-9a-f]{8}\.", ".", p.name) for p in (tmp_path / "run").iterdir())
    assert names == ["checkpoint.json", "model-epoch0001.safetensors", "model-epoch0003.safetensors", "state-epoch0003.pt"]
    loaded = small_model(seed=7)
    assert load_best_weights(tmp_path / "run", loaded, device=CPU) == 1
    assert same_weights(loaded, models[0])
