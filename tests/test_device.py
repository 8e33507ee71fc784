"""Device setup: a CPU machine is reported honestly, a required GPU that is missing is a clear error, seeding repeats."""

import random

import numpy as np
import pytest
import torch

from tlkit import device as D
from tlkit.settings import cache_dir, smoke_mode


def test_cpu_is_chosen_when_there_is_no_gpu(monkeypatch):
    monkeypatch.delenv("TLKIT_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(D, "_mps_available", lambda: False)
    assert D.get_device().type == "cpu"
    with pytest.raises(D.NoGPUError, match="Change runtime type"):
        D.get_device(require_gpu=True)


def test_asking_for_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(D.NoGPUError, match="CUDA is not available"):
        D.get_device("cuda")


def test_env_override(monkeypatch):
    monkeypatch.setenv("TLKIT_DEVICE", "cpu")
    assert D.get_device().type == "cpu"


def test_cpu_autocast_is_off_and_report_reads_well():
    cpu = torch.device("cpu")
    assert D.autocast_dtype(cpu) is None
    with D.autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    text = str(D.environment_report(cpu))
    assert "device          : cpu" in text and torch.__version__ in text and "No GPU" in text


def test_seed_everything_repeats_all_generators():
    D.seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    D.seed_everything(3)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())


def test_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_SMOKE", "yes")
    assert smoke_mode()
    monkeypatch.setenv("TLKIT_SMOKE", "0")
    assert not smoke_mode()
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    assert cache_dir("x") == tmp_path / "x" and (tmp_path / "x").is_dir()


def test_precision_choice_per_device_matches_the_docstrings():
    mps, cpu = torch.device("mps"), torch.device("cpu")
    assert not D.supports_bf16(mps) and D.autocast_dtype(mps) == torch.float16  # MPS: fp16 autocast, never bf16
    assert not D.supports_bf16(cpu) and D.autocast_dtype(cpu) is None
