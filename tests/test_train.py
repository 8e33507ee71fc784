"""Tests for tlkit.train: fit, evaluate, predict, lr_find, History (tiny models, CPU, a few seconds)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from tlkit import checkpoint  # noqa: E402
from tlkit.train import SCHEDULES, History, evaluate, fit, lr_find, predict, schedule_factor  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    plt.close("all")


def blobs(n: int = 256, seed: int = 0, flip: bool = False) -> TensorDataset:
    """Two well-separated Gaussian blobs in 2-D; `flip` swaps the labels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.7 + (y[:, None] * 2 - 1) * 1.5
    return TensorDataset(x, 1 - y if flip else y)


def tiny_net(dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 2))


def loaders(batch_size: int = 32, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    return (DataLoader(blobs(seed=seed), batch_size=batch_size, shuffle=True),
            DataLoader(blobs(128, seed=seed + 1), batch_size=64))


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------------------------------ fit
def test_fit_learns_a_separable_problem():
    torch.manual_seed(0)
    model = tiny_net()
    train_loader, val_loader = loaders()
    history = fit(model, train_loader, val_loader, num_epochs=4, lr=3e-2, device=CPU, progress=False, seed=0)
    assert history.num_epochs == 4
    assert history.val_accuracy[-1] > 0.9
    assert history.train_loss[-1] < history.train_loss[0]
    assert evaluate(model, val_loader, device=CPU).accuracy == pytest.approx(history.val_accuracy[-1])
    assert not model.training  # fit leaves the model in eval mode
    assert set(history.to_dataframe().columns) == set(History.METRICS)
    assert history.best_epoch is not None and "best epoch" in repr(history)


def test_fit_accepts_dict_batches_and_logits_outputs():
    class DictModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2, 2)

        def forward(self, features):
            return SimpleNamespace(logits=self.linear(features))

    data = blobs(64)
    batches = [{"features": data.tensors[0][i:i + 16], "labels": data.tensors[1][i:i + 16]} for i in range(0, 64, 16)]
    torch.manual_seed(0)
    history = fit(DictModel(), batches, batches, num_epochs=4, lr=0.1, device=CPU, schedule="constant", progress=False)
    assert history.val_accuracy[-1] > 0.9


def test_param_groups_keep_their_own_lr():
    torch.manual_seed(0)
    model = tiny_net()
    first, last = model[0], model[3]
    before_first, before_last = weights(first), weights(last)
    groups = [{"params": list(first.parameters()), "lr": 0.0, "name": "body"},
              {"params": list(last.parameters()), "lr": 1e-2, "name": "head"}]
    train_loader, _ = loaders()
    fit(model, train_loader, num_epochs=1, lr=1.0, device=CPU, param_groups=groups, progress=False)
    assert all(torch.equal(v, before_first[k]) for k, v in first.state_dict().items()), "lr=0 group must not move"
    assert not all(torch.equal(v, before_last[k]) for k, v in last.state_dict().items())


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_scales_each_group_lr(schedule):
    torch.manual_seed(0)
    model = tiny_net()
    optimizer = torch.optim.AdamW([{"params": model[0].parameters(), "lr": 1e-3},
                                   {"params": model[3].parameters(), "lr": 1e-2}])
    train_loader, _ = loaders()
    steps = len(train_loader)
    history = fit(model, train_loader, num_epochs=2, lr=1.0, device=CPU, optimizer=optimizer, schedule=schedule, progress=False)
    low, high = optimizer.param_groups
    assert (low["initial_lr"], high["initial_lr"]) == (1e-3, 1e-2)
    assert high["lr"] == pytest.approx(10 * low["lr"], rel=1e-9)  # the ratio survives the whole schedule
    # History.lr is the largest group's lr at the end of each epoch
    assert history.lr[0] == pytest.approx(1e-2 * schedule_factor(steps, 2 * steps, schedule, 0.1))


def test_schedule_factor_shapes():
    total = 100
    for schedule in SCHEDULES:
        factors = [schedule_factor(s, total, schedule, 0.1) for s in range(total)]
        assert max(factors) == pytest.approx(1.0, abs=0.02)
        assert factors[0] < 0.1 and all(0 <= f <= 1 for f in factors)
    assert schedule_factor(total - 1, total, "cosine") < 0.01
    assert schedule_factor(total - 1, total, "onecycle") < 0.01
    assert schedule_factor(total - 1, total, "constant") == 1.0
    assert schedule_factor(0, total, "constant", warmup_frac=0.0) == 1.0


def test_early_stopping_restores_the_best_weights():
    # Validation labels are the training labels flipped: the better the model learns, the worse val gets.
    torch.manual_seed(0)
    model = tiny_net()
    train_loader = DataLoader(blobs(), batch_size=32, shuffle=True)
    val_loader = DataLoader(blobs(128, seed=1, flip=True), batch_size=64)
    history = fit(model, train_loader, val_loader, num_epochs=20, lr=1e-2, device=CPU, schedule="constant",
                  warmup_frac=0.0, early_stopping_patience=2, monitor="val_loss", progress=False, seed=0)
    best = history.best_epoch
    assert history.stopped_early and history.num_epochs == best + 2 < 20
    assert history.restored_epoch == best and any("restored the best weights" in n for n in history.notes)
    assert history.val_loss[-1] > history.val_loss[best - 1]
    assert evaluate(model, val_loader, device=CPU).loss == pytest.approx(history.val_loss[best - 1], abs=1e-6)


class NaNAfter(nn.Module):
    """A tiny classifier whose output turns NaN on its n-th training forward pass."""

    def __init__(self, n: int):
        super().__init__()
        self.linear, self.n, self.calls = nn.Linear(2, 2), n, 0

    def forward(self, x):
        out = self.linear(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.n:
                out = out * float("nan")
        return out


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = NaNAfter(n=6)
    train_loader = DataLoader(blobs(128), batch_size=32)  # 4 steps per epoch: call 6 is epoch 2, step 2
    with pytest.raises(FloatingPointError, match=r"epoch 2, step 2.*[Ll]ower the lr"):
        fit(model, train_loader, num_epochs=3, lr=1e-2, device=CPU, checkpoint_path=tmp_path / "run", progress=False)
    assert checkpoint.checkpoint_info(tmp_path / "run")["epoch"] == 1
    fresh = NaNAfter(n=10**9)
    checkpoint.load_checkpoint(tmp_path / "run", model=fresh, device=CPU)
    assert all(torch.isfinite(p).all() for p in fresh.parameters())


class InterruptAt:
    """Wraps a loader and raises KeyboardInterrupt part-way through its `epoch`-th pass (a simulated crash)."""

    def __init__(self, loader: DataLoader, epoch: int, after_batches: int):
        self.loader, self.epoch, self.after, self.passes = loader, epoch, after_batches, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        for i, batch in enumerate(self.loader):
            if self.passes == self.epoch and i == self.after:
                raise KeyboardInterrupt("simulated crash")
            yield batch


@pytest.mark.parametrize("seed", [7, None])
def test_resume_after_interruption_equals_an_uninterrupted_run(tmp_path, seed):
    def run(folder, loader_wrapper=None, init_seed=123, resume=False):
        torch.manual_seed(init_seed)
        model = tiny_net(dropout=0.3)  # dropout and shuffling both draw random numbers
        train_loader, val_loader = loaders(batch_size=16)
        if loader_wrapper is not None:
            train_loader = loader_wrapper(train_loader)
        history = fit(model, train_loader, val_loader, num_epochs=4, lr=1e-2, device=CPU, seed=seed,
                      checkpoint_path=tmp_path / folder, resume=resume, progress=False)
        return model, history

    straight_model, straight = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("interrupted", loader_wrapper=lambda loader: InterruptAt(loader, epoch=3, after_batches=5))
    assert checkpoint.checkpoint_info(tmp_path / "interrupted")["epoch"] == 2
    if seed is None:  # without a seed the resumed run relies on the RNG states saved in the checkpoint
        torch.manual_seed(999)
    resumed_model, resumed = run("interrupted", init_seed=999, resume=True)  # a new model, new optimizer

    assert resumed.num_epochs == 4 and any("resumed" in n for n in resumed.notes)
    np.testing.assert_allclose(resumed.train_loss, straight.train_loss, rtol=1e-5)
    np.testing.assert_allclose(resumed.val_loss, straight.val_loss, rtol=1e-5)
    for name, value in straight_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_resume_checks_settings_and_starts_fresh_without_checkpoint(tmp_path):
    train_loader, _ = loaders()
    history = fit(tiny_net(), train_loader, num_epochs=1, lr=1e-2, device=CPU, checkpoint_path=tmp_path / "run",
                  resume=True, progress=False)
    assert history.num_epochs == 1 and "started from scratch" in history.notes[0]
    with pytest.raises(ValueError, match="same settings"):
        fit(tiny_net(), train_loader, num_epochs=3, lr=1e-2, device=CPU, checkpoint_path=tmp_path / "run",
            resume=True, progress=False)


def test_fit_errors_say_what_to_do():
    train_loader, _ = loaders()
    with pytest.raises(ValueError, match="num_epochs"):
        fit(tiny_net(), train_loader, num_epochs=0, lr=1e-2, device=CPU, progress=False)
    with pytest.raises(ValueError, match="empty"):
        fit(tiny_net(), DataLoader(blobs(8), batch_size=16, drop_last=True), num_epochs=1, lr=1e-2, device=CPU, progress=False)
    frozen = tiny_net().requires_grad_(False)
    with pytest.raises(ValueError, match="frozen.*unfreeze"):
        fit(frozen, train_loader, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    five_classes = [(torch.randn(4, 2), torch.tensor([0, 1, 4, 3]))]
    with pytest.raises(ValueError, match="head has only 2 outputs"):
        fit(tiny_net(), five_classes, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    wrong_rows = [(torch.randn(4, 2), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="4 rows of logits for 2 labels"):
        fit(tiny_net(), wrong_rows, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    with pytest.raises(ValueError, match="val_loader"):
        fit(tiny_net(), train_loader, num_epochs=1, lr=1e-2, device=CPU, early_stopping_patience=1, progress=False)
    with pytest.raises(ValueError, match="schedule"):
        fit(tiny_net(), train_loader, num_epochs=1, lr=1e-2, device=CPU, schedule="linear", progress=False)


# ------------------------------------------------------------------------------------------ evaluate, predict
def test_evaluate_on_known_predictions():
    predicted = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 0])
    logits = nn.functional.one_hot(predicted, 3).float() * 5  # nn.Identity turns these "inputs" into the logits
    loader = DataLoader(TensorDataset(logits, labels), batch_size=4)
    result = evaluate(nn.Identity(), loader, device=CPU, class_names=["a", "b", "c"])
    assert result.accuracy == pytest.approx(4 / 6)
    np.testing.assert_array_equal(result.confusion, [[1, 0, 1], [0, 1, 0], [0, 1, 2]])
    assert result.macro_f1 == pytest.approx(2 / 3)
    assert result.per_class.loc["a", "precision"] == 1.0 and result.per_class.loc["a", "recall"] == 0.5
    assert list(result.per_class["support"]) == [2, 1, 3]
    np.testing.assert_array_equal(result.mistakes, [2, 5])
    expected_loss = nn.functional.cross_entropy(logits, labels).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-6)
    assert isinstance(result.plot_confusion(), matplotlib.figure.Figure)
    assert "accuracy=0.6667" in repr(result)

    probs, got_labels = predict(nn.Identity(), loader, device=CPU)
    assert probs.shape == (6, 3) and torch.equal(probs.argmax(1), predicted) and torch.equal(got_labels, labels)
    torch.testing.assert_close(probs.sum(1), torch.ones(6))


# --------------------------------------------------------------------------------------------------- lr_find
def test_lr_find_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    model.eval()
    before, rng_before = weights(model), torch.get_rng_state()
    train_loader, _ = loaders()
    result = lr_find(model, train_loader, device=CPU, num_steps=40, progress=False)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # weights and BatchNorm statistics
    assert not model.training and torch.equal(torch.get_rng_state(), rng_before)
    assert math.isfinite(result.suggestion) and 1e-7 <= result.suggestion <= 1.0
    assert len(result.lrs) == len(result.losses) >= 10 and np.all(np.diff(result.lrs) > 0)
    assert isinstance(result.plot(), matplotlib.figure.Figure)


def test_lr_find_keeps_param_group_ratios():
    torch.manual_seed(0)
    model = tiny_net()
    groups = [{"params": list(model[0].parameters()), "lr": 1e-4}, {"params": list(model[3].parameters()), "lr": 1e-3}]
    train_loader, _ = loaders()
    result = lr_find(model, train_loader, device=CPU, start_lr=1e-5, end_lr=1e-1, num_steps=20, param_groups=groups, progress=False)
    assert result.lrs[0] == pytest.approx(1e-5)  # the largest group starts at start_lr


def test_history_roundtrip_and_plot():
    history = History(monitor="val_loss")
    for i in range(3):
        history.append(train_loss=1.0 - i * 0.1, train_accuracy=0.5 + i * 0.1, val_loss=[0.9, 0.7, 0.8][i],
                       val_accuracy=0.6, lr=1e-3, epoch_time=0.1)
    assert history.best_epoch == 2
    again = History.from_dict(history.to_dict())
    assert again.to_dataframe().equals(history.to_dataframe()) and again.best_epoch == 2
    assert isinstance(history.plot(), matplotlib.figure.Figure)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_paths_train_and_resume(tmp_path, monkeypatch, dtype):
    # CPU autocast supports both dtypes, so the GPU code paths (fp16 needs a GradScaler, bf16 does not) run here.
    import tlkit.device
    import tlkit.loop

    monkeypatch.setattr(tlkit.device, "autocast_dtype", lambda device: dtype)
    monkeypatch.setattr(tlkit.loop, "autocast_dtype", lambda device: dtype)

    def run(folder, init_seed, wrap=None, resume=False):
        torch.manual_seed(init_seed)
        model = tiny_net(dropout=0.2)
        train_loader, val_loader = loaders()
        fit(model, wrap(train_loader) if wrap else train_loader, val_loader, num_epochs=3, lr=3e-2, device=CPU,
            seed=0, checkpoint_path=tmp_path / folder, resume=resume, progress=False)
        return model

    straight = run("straight", 0)
    scaler_state = torch.load(next((tmp_path / "straight").glob("state-*.pt")), weights_only=True)["scaler"]
    assert bool(scaler_state) == (dtype == torch.float16)  # a GradScaler only for fp16
    with pytest.raises(KeyboardInterrupt):
        run("interrupted", 0, wrap=lambda loader: InterruptAt(loader, epoch=2, after_batches=3))
    resumed = run("interrupted", 5, resume=True)
    assert evaluate(straight, loaders()[1], device=CPU).accuracy > 0.9
    for name, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_channels_last_and_max_steps_per_epoch():
    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head, self.train_calls = nn.Conv2d(1, 4, 3), nn.Linear(4, 2), 0

        def forward(self, x):
            self.train_calls += self.training
            return self.head(self.conv(x).mean((2, 3)))

    images = torch.randn(64, 1, 8, 8)
    labels = (images.mean((1, 2, 3)) > 0).long()
    model = Conv()
    history = fit(model, DataLoader(TensorDataset(images, labels), batch_size=8), num_epochs=2, lr=1e-2,
                  device=CPU, channels_last=True, max_steps_per_epoch=3, progress=False)
    assert model.train_calls == 6 and history.num_epochs == 2
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------- refusing nonsense (issue 11)
@pytest.mark.parametrize("setting, match", [
    ({"grad_clip": -1.0}, "flips the gradients"),
    ({"early_stopping_patience": -1}, "early_stopping_patience"),
    ({"warmup_frac": 1.0}, r"warmup_frac.*\[0, 1\)"),
    ({"warmup_frac": -0.1}, r"warmup_frac.*\[0, 1\)"),
    ({"max_steps_per_epoch": 0}, "max_steps_per_epoch"),
    ({"lr": 0.0}, "lr must be a positive number"),
    ({"lr": -1e-3}, "lr must be a positive number"),
])
def test_fit_refuses_nonsense_settings(setting, match):
    train_loader, val_loader = loaders()
    kwargs = {"num_epochs": 1, "lr": 1e-2, "device": CPU, "progress": False} | setting
    with pytest.raises(ValueError, match=match):
        fit(tiny_net(), train_loader, val_loader, **kwargs)


def test_resume_refuses_a_changed_lr(tmp_path):
    train_loader, _ = loaders()
    fit(tiny_net(), train_loader, num_epochs=2, max_steps_per_epoch=2, lr=1e-2, device=CPU, checkpoint_path=tmp_path / "run",
        progress=False)
    with pytest.raises(ValueError, match=r"lrs: \[0.01\] then, \[0.02\] now"):
        fit(tiny_net(), train_loader, num_epochs=2, max_steps_per_epoch=2, lr=2e-2, device=CPU,
            checkpoint_path=tmp_path / "run", resume=True, progress=False)


def test_nan_validation_loss_warns_and_is_noted():
    train_loader, _ = loaders()
    bad_val = [(torch.full((4, 2), float("nan")), torch.tensor([0, 1, 0, 1]))]
    with pytest.warns(UserWarning, match="validation loss is nan"):
        history = fit(tiny_net(), train_loader, bad_val, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    assert any("validation loss is nan" in note for note in history.notes)


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_a_lone_last_batch_with_batchnorm_names_drop_last():
    data = blobs(33)  # 33 = 32 + 1: the last batch holds one example
    with pytest.raises(ValueError, match=r"last batch holds 1.*drop_last=True"):
        fit(bn_net(), DataLoader(data, batch_size=32), num_epochs=1, lr=1e-2, device=CPU, progress=False)
    batches = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1])), (torch.randn(1, 2), torch.tensor([1]))]  # no DataLoader
    with pytest.raises(ValueError, match=r"batch of 1 example at epoch 1, step 2.*drop_last=True"):
        fit(bn_net(), batches, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    history = fit(bn_net(), DataLoader(data, batch_size=32, drop_last=True), num_epochs=1, lr=1e-2, device=CPU, progress=False)
    assert history.num_epochs == 1
    no_bn = fit(tiny_net(), DataLoader(data, batch_size=32), num_epochs=1, lr=1e-2, device=CPU, progress=False)
    assert no_bn.num_epochs == 1  # without BatchNorm a batch of one is fine


def test_all_ignored_labels_are_a_clear_error_not_nan():
    ignored = [(torch.randn(4, 2), torch.full((4,), -100))]
    with pytest.raises(ValueError, match="-100 \\(ignored\\).*NaN"):
        fit(tiny_net(), ignored, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    some_ignored = [(torch.randn(4, 2), torch.tensor([0, -100, 1, -100]))]
    history = fit(tiny_net(), some_ignored, some_ignored, num_epochs=1, lr=1e-2, device=CPU, progress=False)
    assert math.isfinite(history.train_loss[0]) and math.isfinite(history.val_loss[0])


def test_a_penalty_trains_but_stays_out_of_the_validation_loss():
    from tlkit import advisor

    train_loader, val_loader = loaders()

    def run(**how):
        torch.manual_seed(0)
        model = tiny_net()
        reference = advisor.snapshot_weights(model)
        history = fit(model, train_loader, val_loader, num_epochs=2, lr=5e-2, device=CPU, seed=0, progress=False,
                      **{k: (lambda f: f(model, reference))(v) for k, v in how.items()})
        drift = max(float((p.detach() - reference[n]).norm()) for n, p in model.named_parameters())
        return model, history, drift

    l2sp = lambda model, ref: (lambda m: advisor.l2sp_penalty(m, ref, alpha=50.0))  # noqa: E731
    plain_model, plain, plain_drift = run()
    model, history, drift = run(penalty=l2sp)
    assert drift < plain_drift / 2, "the penalty must pull the weights back towards the reference"
    clean = evaluate(model, val_loader, device=CPU).loss  # plain cross-entropy, no penalty
    assert history.val_loss[-1] == pytest.approx(clean, rel=1e-5)
    # lesson 06's way: the penalty inside loss_fn. Training still sees it; validation reports plain cross-entropy.
    inside = lambda model, ref: (lambda logits, y: nn.functional.cross_entropy(logits, y) + l2sp(model, ref)(model))  # noqa: E731
    with pytest.warns(UserWarning, match="penalty="):
        model, history, drift_inside = run(loss_fn=inside)
    assert drift_inside == pytest.approx(drift, rel=1e-4)
    assert history.val_loss[-1] == pytest.approx(evaluate(model, val_loader, device=CPU).loss, rel=1e-5)
    assert any("penalty=" in note for note in history.notes)


# -------------------------------------------------------------- resume matches, with tlkit's own loaders (issue 11)
def _crash_after(model: nn.Module, steps: int) -> None:
    """Raise KeyboardInterrupt at the `steps`-th training forward pass (a simulated crash; no parameters added)."""
    calls = {"n": 0}

    def hook(module, inputs):
        if module.training:
            calls["n"] += 1
            if calls["n"] > steps:
                raise KeyboardInterrupt("simulated crash")

    model.register_forward_pre_hook(hook)


def _animals_loaders():
    from tlkit.data.animals import load_animals

    try:
        data = load_animals(max_per_class=4, image_size=16, channels=1, augment=True)  # augmentation draws random numbers too
    except ModuleNotFoundError as err:
        pytest.skip(str(err))
    train_loader, val_loader, _ = data.loaders(batch_size=8, seed=3)
    return train_loader, val_loader


def _small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(16, 10))


LOADERS = {
    "animals, DataSplits.loaders": (_animals_loaders, _small_cnn),
    "distributed_loader": (lambda: (__import__("tlkit.distributed").distributed.distributed_loader(blobs(), 16, seed=1),
                                    DataLoader(blobs(64, seed=1), batch_size=64)), lambda: tiny_net(0.3)),
    "DataLoader with its own generator": (lambda: (DataLoader(blobs(), batch_size=16, shuffle=True,
                                                              generator=torch.Generator().manual_seed(5)),
                                                   DataLoader(blobs(64, seed=1), batch_size=64)), lambda: tiny_net(0.3)),
}


@pytest.mark.parametrize("seed", [11, None])
@pytest.mark.parametrize("name", list(LOADERS))
def test_resume_is_bit_identical_with_tlkit_loaders(tmp_path, name, seed):
    make_loaders, make_model = LOADERS[name]
    if name == "DataLoader with its own generator" and seed is None:
        pytest.skip("a DataLoader's private generator is reseeded only when fit has a seed (the docstring says so)")

    def run(folder, crash_at=None, resume=False):
        torch.manual_seed(0)
        model = make_model()
        if crash_at is not None:
            _crash_after(model, crash_at)
        train_loader, val_loader = make_loaders()  # fresh loaders, as after a restart
        history = fit(model, train_loader, val_loader, num_epochs=3, lr=1e-2, device=CPU, seed=seed,
                      checkpoint_path=tmp_path / folder, resume=resume, progress=False)
        return model, history, len(train_loader)

    straight_model, straight, steps = run("straight")
    with pytest.raises(KeyboardInterrupt):
        run("crashed", crash_at=steps + 1)  # crashes in epoch 2, after its first step
    assert checkpoint.checkpoint_info(tmp_path / "crashed")["epoch"] == 1
    torch.manual_seed(999)  # a restart: whatever state the RNG is in
    resumed_model, resumed, _ = run("crashed", resume=True)
    for metric in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert getattr(resumed, metric) == getattr(straight, metric), metric  # bit-identical, not approximately
    for key, value in straight_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


# --------------------------------------------------------------------------------- progress bars (issue 12)
def test_progress_bars_are_text_and_leave_nothing_behind(monkeypatch, capsys):
    import tqdm
    from tqdm.notebook import tqdm_notebook

    from tlkit.progress import progress_bar

    monkeypatch.delenv("TLKIT_PROGRESS", raising=False)
    bar = progress_bar(range(3), desc="x")
    assert isinstance(bar, tqdm.std.tqdm) and not isinstance(bar, tqdm_notebook) and bar.leave is False
    list(bar)
    train_loader, val_loader = loaders()
    fit(tiny_net(), train_loader, val_loader, num_epochs=1, lr=1e-2, device=CPU, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and err.rstrip(" ").endswith("\r"), "the bar must clear its line when it finishes"
    monkeypatch.setenv("TLKIT_PROGRESS", "off")
    assert progress_bar(range(3)).disable
    monkeypatch.setenv("TLKIT_PROGRESS", "sparkly")
    with pytest.raises(ValueError, match="TLKIT_PROGRESS"):
        progress_bar(range(3))


def test_no_tlkit_training_module_draws_widget_bars():
    import inspect

    from tlkit import loop, lr_finder, metrics, train

    for module in (train, loop, metrics, lr_finder):
        assert "tqdm.auto" not in inspect.getsource(module), f"{module.__name__} must use tlkit.progress.progress_bar"


# ------------------------------------------------------------------------------ docstrings that are true
def test_docstrings_claim_only_what_lessons_and_libraries_do():
    import json
    import re
    from pathlib import Path

    import tlkit.train as train_module

    solutions = Path(__file__).resolve().parents[1] / "solutions"

    def lesson_code(number: str) -> str:
        (path,) = solutions.glob(f"{number}_*.ipynb")
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")

    for obj in (train_module, train_module.fit):
        for number in re.findall(r"resum\w*[^.;]*lesson (\d\d)", obj.__doc__ or ""):
            assert "resume=" in lesson_code(number), f"{obj.__name__}'s docstring says lesson {number} teaches resuming"
    from transformers import TrainingArguments

    hf_default = TrainingArguments.__dataclass_fields__["lr_scheduler_type"].default
    claims_cosine = re.search(r"cosine[^.]*\(the Hugging Face default\)", schedule_factor.__doc__)
    assert not claims_cosine or str(getattr(hf_default, "value", hf_default)) == "cosine"
