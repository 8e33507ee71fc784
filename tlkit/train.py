"""Training: `fit`, its learning-rate schedules, checkpoints and resuming; also the home of evaluate/predict/lr_find.

`fit` is the loop lesson 01 writes by hand (forward, loss, backward, step: tlkit.loop.train_step) plus what a real
run needs: mixed precision on GPUs, gradient clipping, a per-batch learning-rate schedule that respects per-group
learning rates, early stopping, checkpoints you can resume from, and errors that say what to do.
Taught in lesson 01 (the loop by hand, then `fit`) and lesson 03 (schedules, lr_find, early stopping); resuming
is in no lesson yet (tests/test_train.py shows it).

`History`, `evaluate`, `predict` (tlkit.metrics) and `lr_find` (tlkit.lr_finder) are importable from here too.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from tlkit import checkpoint
from tlkit.device import seed_everything
from tlkit.distributed import barrier, is_main_process
from tlkit.loop import LossFn, Penalty, Step, amp_dtype, infer, is_classification, make_optimizer, train_epoch, trainable_parameters
from tlkit.lr_finder import LRFinderResult, lr_find
from tlkit.metrics import EvalResult, History, evaluate, predict
from tlkit.progress import progress_bar

__all__ = ["SCHEDULES", "MONITORS", "EvalResult", "History", "LRFinderResult", "LossFn", "Penalty",
           "evaluate", "fit", "lr_find", "predict", "schedule_factor"]

SCHEDULES = ("onecycle", "cosine", "constant")
MONITORS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25 / 1e4  # fractions of the peak lr, as in torch's OneCycleLR


# ==================================================================================================== schedule
def schedule_factor(step: int, total_steps: int, schedule: str = "onecycle", warmup_frac: float = 0.1) -> float:
    """The factor that multiplies every group's own lr at `step` (0-based). Plot it to see a schedule.

    onecycle: cosine warm-up from lr/25 to lr, then cosine down to lr/250000 (torch's OneCycleLR, momentum fixed).
    cosine: linear warm-up from ~0, then cosine to 0 (transformers' get_cosine_schedule_with_warmup; the Hugging
    Face Trainer's default is linear decay). constant: warm-up, then flat.
    """
    warmup = round(warmup_frac * total_steps)
    if step < warmup:
        if schedule == "onecycle":
            return ONECYCLE_START + (1 - ONECYCLE_START) * (1 - math.cos(math.pi * step / warmup)) / 2
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    end = ONECYCLE_END if schedule == "onecycle" else 0.0
    return end + (1 - end) * (1 + math.cos(math.pi * min(progress, 1.0))) / 2


def _make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_frac: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per batch: each param group's lr = its own lr x schedule_factor(step)."""
    def factor(step: int) -> float:
        return schedule_factor(step, total_steps, schedule, warmup_frac)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ================================================================================================ refusing nonsense
def _steps_per_epoch(loader: Iterable, max_steps: int | None) -> int:
    """Batches per epoch: len(loader), capped by max_steps; a clear error for empty loaders."""
    try:
        n = len(loader)  # type: ignore[arg-type]
    except TypeError:
        if max_steps is None:
            raise ValueError("train_loader has no len(); pass max_steps_per_epoch so the schedule knows the run's length.") from None
        return max_steps
    if n == 0:
        raise ValueError("train_loader is empty: check the dataset size and batch_size (drop_last=True with fewer "
                         "examples than batch_size gives no batches).")
    return min(n, max_steps) if max_steps else n


def _check_fit_args(a: dict[str, Any]) -> None:
    """Refuse settings that cannot work (or silently do harm), saying what to pass instead; `a` is fit's arguments."""
    rules = [
        (not isinstance(a["num_epochs"], int) or a["num_epochs"] < 1, f"num_epochs must be a whole number >= 1, got {a['num_epochs']!r}."),
        (not (isinstance(a["lr"], (int, float)) and 0 < a["lr"] < math.inf), f"lr must be a positive number (e.g. 1e-3), got {a['lr']!r}."),
        (a["schedule"] not in SCHEDULES, f"schedule must be one of {SCHEDULES}, got {a['schedule']!r}."),
        (not 0 <= a["warmup_frac"] < 1, f"warmup_frac is the fraction of steps spent warming up, in [0, 1); got {a['warmup_frac']!r}."),
        (a["monitor"] not in MONITORS, f"monitor must be one of {MONITORS}, got {a['monitor']!r}."),
        (a["grad_clip"] is not None and not a["grad_clip"] >= 0,
         f"grad_clip must be a positive norm (or None/0 for no clipping), got {a['grad_clip']!r}: a negative one flips the gradients."),
        (a["early_stopping_patience"] is not None and not (isinstance(a["early_stopping_patience"], int) and a["early_stopping_patience"] >= 0),
         f"early_stopping_patience counts epochs without improvement: a whole number >= 0 or None, got {a['early_stopping_patience']!r}."),
        (a["max_steps_per_epoch"] is not None and not (isinstance(a["max_steps_per_epoch"], int) and a["max_steps_per_epoch"] >= 1),
         f"max_steps_per_epoch must be a whole number >= 1 or None (the whole loader), got {a['max_steps_per_epoch']!r}."),
        (a["early_stopping_patience"] is not None and a["monitor"].startswith("val") and a["val_loader"] is None,
         "Early stopping watches a validation metric: pass val_loader, or monitor='train_loss'."),
        (a["resume"] and a["checkpoint_path"] is None, "resume=True needs checkpoint_path (the folder the interrupted run saved to)."),
        (a["optimizer"] is not None and a["param_groups"] is not None,
         "Pass either optimizer or param_groups, not both (fit builds AdamW from param_groups)."),
    ]
    for broken, message in rules:
        if broken:
            raise ValueError(message)


# ================================================================================================ epochs and runs
def _start_epoch(loader: Iterable, epoch: int, seed: int | None) -> None:
    """Make epoch `epoch`'s shuffling, augmentation and dropout depend on (seed, epoch) only: resumed runs match."""
    if seed is not None:
        seed_everything(seed + epoch)
        generator = getattr(loader, "generator", None)  # a DataLoader's private generator ignores the global seed
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed + epoch)
    for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if callable(getattr(sampler, "set_epoch", None)):  # tlkit's samplers, DistributedSampler
            sampler.set_epoch(epoch - 1)


def _validate(t: Step, val_loader: Iterable | None) -> tuple[float | None, float | None]:
    """Validation loss (never with the penalty) and accuracy, or (None, None) without a val_loader."""
    if val_loader is None:
        return None, None
    out = infer(t.model, val_loader, device=t.device, amp_dtype=t.amp_dtype, loss_fn=t.val_loss_fn or t.loss_fn)
    accuracy = None
    if out.labels is not None and is_classification(out.logits, out.labels):
        keep = out.labels != getattr(t.loss_fn, "ignore_index", -100)
        accuracy = float((out.logits.argmax(-1) == out.labels)[keep].float().mean())
    if out.loss is not None and not math.isfinite(out.loss):
        message = (f"The validation loss is {out.loss}: some validation batch gives a non-finite loss (check its inputs "
                   "and labels, or lower the lr); best_epoch and early stopping skip such epochs.")
        t.notes.append(message)
        warnings.warn(message, stacklevel=3)
    return out.loss, accuracy


def _out_of_patience(history: History, patience: int) -> bool:
    """True once `patience` epochs have passed without a better monitored value; notes it in the History."""
    epoch = history.num_epochs
    if epoch - (history.best_epoch or epoch) < patience:
        return False
    history.notes.append(f"stopped early after epoch {epoch}: no better {history.monitor} for {patience} epochs.")
    return True


def _last_metrics(history: History) -> dict[str, str]:
    """The last epoch's losses and accuracies, formatted for the progress bar."""
    names = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    return {name.replace("accuracy", "acc"): f"{getattr(history, name)[-1]:.4f}" for name in names
            if getattr(history, name)[-1] is not None}


def _resume(path: Any, t: Step, run: dict, history: History) -> History:
    """Load the last checkpoint into model/optimizer/scheduler/scaler/RNG; return its History (or `history` if none)."""
    if not checkpoint.checkpoint_exists(path):
        history.notes.append(f"resume=True but no checkpoint in {path} yet: started from scratch.")
        return history
    saved_run = checkpoint.checkpoint_info(path)["extra"].get("run", run)
    changed = [f"{k}: {saved_run[k]!r} then, {run[k]!r} now" for k in run if k in saved_run and saved_run[k] != run[k]]
    if changed:
        raise ValueError(f"The checkpoint in {path} was made with other settings ({'; '.join(changed)}): resume with "
                         "the same settings, or pass resume=False to start over.")
    state = checkpoint.load_checkpoint(path, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler,
                                       scaler=t.scaler, device=t.device)
    resumed = History.from_dict(state["history"])
    resumed.notes.append(f"resumed from {path} after epoch {state['epoch']}.")
    return resumed


def _save(path: Any, t: Step, epoch: int, history: History, run: dict) -> None:
    """Checkpoint after `epoch`: written by one process only (rank 0 under DDP); the others wait until it is there."""
    if is_main_process():
        checkpoint.save_checkpoint(path, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler, scaler=t.scaler,
                                   epoch=epoch, history=history, extra={"run": run}, best_epoch=history.best_epoch)
    barrier()


def _restore_best(model: nn.Module, history: History, best_state: dict | None, path: Any, device: torch.device) -> None:
    """Put the best epoch's weights back into the model (from memory, or from the checkpoint after a resume)."""
    best = history.best_epoch
    if best is None or best == history.num_epochs:
        return
    if best_state is not None:
        model.load_state_dict(best_state)
    elif path is not None and checkpoint.checkpoint_exists(path):
        checkpoint.load_best_weights(path, model, device=device)
    else:
        return
    history.restored_epoch = best
    history.notes.append(f"restored the best weights, from epoch {best} ({history.monitor}).")


def _build_step(model: nn.Module, a: dict[str, Any], device: torch.device, total_steps: int) -> tuple[Step, list[float]]:
    """The optimizer (AdamW unless given), schedule, grad scaler and loss for fit; also the groups' peak lrs."""
    trainable_parameters(model)  # fail early, with a clear message, when everything is frozen
    model.to(device)
    if a["channels_last"]:
        model.to(memory_format=torch.channels_last)  # faster convolutions on tensor-core GPUs
    dtype = amp_dtype(device, a["amp"])
    optimizer = a["optimizer"] or make_optimizer(model, lr=a["lr"], param_groups=a["param_groups"], weight_decay=a["weight_decay"])
    peak_lrs = [g["lr"] for g in optimizer.param_groups]  # before the scheduler scales them
    t = Step(model, optimizer, _make_scheduler(optimizer, a["schedule"], total_steps, a["warmup_frac"]),
             torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), a["loss_fn"] or nn.CrossEntropyLoss(),
             device, dtype, a["grad_clip"], a["channels_last"], penalty=a["penalty"])
    return t, peak_lrs


# ========================================================================================================== fit
def fit(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    num_epochs: int,
    lr: float,
    device: torch.device | str,
    optimizer: torch.optim.Optimizer | None = None,
    param_groups: list[dict] | None = None,
    weight_decay: float = 0.01,
    loss_fn: LossFn | None = None,
    penalty: Penalty | None = None,
    schedule: str = "onecycle",
    warmup_frac: float = 0.1,
    amp: bool | None = None,
    grad_clip: float | None = 1.0,
    early_stopping_patience: int | None = None,
    monitor: str = "val_accuracy",
    checkpoint_path: Any = None,
    resume: bool = False,
    progress: bool = True,
    seed: int | None = None,
    max_steps_per_epoch: int | None = None,
    channels_last: bool = False,
) -> History:
    """Train `model` for `num_epochs` and return its History. Taught in lesson 01; schedules in lesson 03.

    Defaults: AdamW over the trainable parameters only (or over `param_groups`, e.g. from tlkit.freeze.param_groups,
    each with its own lr; `lr` and `weight_decay` fill in for groups without one); a per-batch schedule that scales
    every group's own lr; mixed precision where tlkit.device.autocast_dtype has a dtype (bf16 or fp16 on CUDA, fp16
    on MPS, none on CPU) when amp=None; gradient clipping at norm 1.0. `loss_fn(logits, labels)` is the data loss,
    used for training and validation; `penalty(model)` (e.g. L2-SP, tlkit.advisor.l2sp_penalty) is added to the
    training objective only, and no reported loss includes it. With `early_stopping_patience`, training stops after
    that many epochs without a better `monitor` value and the best weights are put back. With `checkpoint_path`,
    a checkpoint is saved after every epoch (by rank 0 only under DDP); `resume=True` continues from it with the
    same settings and lrs. Each epoch's sampler gets set_epoch(epoch - 1), and with `seed` everything random is
    reseeded with seed + epoch (also a DataLoader's own generator), so a resumed run matches an uninterrupted one.
    The model is left in eval mode.
    """
    args = dict(locals())  # every argument by name, for the checks and for building the step
    _check_fit_args(args)
    device = torch.device(device)
    steps = _steps_per_epoch(train_loader, max_steps_per_epoch)
    t, peak_lrs = _build_step(model, args, device, num_epochs * steps)
    run = {"num_epochs": num_epochs, "steps_per_epoch": steps, "schedule": schedule, "seed": seed, "lrs": peak_lrs}
    history = _resume(checkpoint_path, t, run, History(monitor=monitor)) if resume else History(monitor=monitor)
    best_state = None
    with progress_bar(total=(num_epochs - history.num_epochs) * steps, desc="fit", enabled=progress) as bar:
        for epoch in range(history.num_epochs + 1, num_epochs + 1):
            if history.stopped_early:
                break
            bar.set_description(f"epoch {epoch}/{num_epochs}")
            _start_epoch(train_loader, epoch, seed)
            start = time.perf_counter()
            train_loss, train_acc = train_epoch(t, train_loader, steps=steps, epoch=epoch, bar=bar)
            val_loss, val_acc = _validate(t, val_loader)
            history.append(train_loss=train_loss, train_accuracy=train_acc, val_loss=val_loss, val_accuracy=val_acc,
                           lr=max(g["lr"] for g in t.optimizer.param_groups), epoch_time=time.perf_counter() - start)
            history.notes += [note for note in t.notes if note not in history.notes]
            if early_stopping_patience is not None:
                if history.best_epoch == epoch:  # keep a copy of the best weights to put back at the end
                    best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                history.stopped_early = _out_of_patience(history, early_stopping_patience)
            if checkpoint_path is not None:
                _save(checkpoint_path, t, epoch, history, run)
            bar.set_postfix(_last_metrics(history))
    if early_stopping_patience is not None:
        _restore_best(model, history, best_state, checkpoint_path, device)
    model.eval()
    return history
