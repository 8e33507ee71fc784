"""Training and evaluation: `fit`, `evaluate`, `predict`, `lr_find` and the `History` they report.

`fit` is the plain PyTorch loop that lesson 01 writes by hand (forward, loss, backward, step), plus what a real
run needs: mixed precision on GPUs, gradient clipping, a learning-rate schedule that respects per-group learning
rates, early stopping, checkpoints you can resume from, and errors that say what to do.
Taught in lesson 01 (the loop by hand, then `fit`) and lesson 03 (schedules, lr_find, resuming).

Batches are `(inputs, labels)` tuples or dicts of tensors with a "labels" key; the model returns logits (B, C)
or an object with `.logits` (Hugging Face models).
"""

from __future__ import annotations

import itertools
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from tlkit import checkpoint, plots
from tlkit.device import autocast, autocast_dtype, seed_everything

SCHEDULES = ("onecycle", "cosine", "constant")
MONITORS = ("val_accuracy", "val_loss", "train_accuracy", "train_loss")
ONECYCLE_START, ONECYCLE_END = 1 / 25, 1 / 25 / 1e4  # fractions of the peak lr, as in torch's OneCycleLR

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ===================================================================================================== History
@dataclass
class History:
    """Per-epoch metrics of a `fit` run, with the best epoch, a DataFrame view, a plot and notes on what happened."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float | None] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    monitor: str = "val_accuracy"
    stopped_early: bool = False
    restored_epoch: int | None = None
    notes: list[str] = field(default_factory=list)

    METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time")

    @property
    def num_epochs(self) -> int:
        """How many epochs were recorded."""
        return len(self.train_loss)

    @property
    def best_epoch(self) -> int | None:
        """The epoch (1, 2, ...) with the best `monitor` value (earliest on ties); None if it was never measured."""
        values = [(v, epoch) for epoch, v in enumerate(getattr(self, self.monitor), start=1) if v is not None and math.isfinite(v)]
        if not values:
            return None
        pick = min if _lower_is_better(self.monitor) else max
        return pick(values, key=lambda pair: pair[0])[1]

    def append(self, **metrics: float | None) -> None:
        """Record one epoch: one value for each name in METRICS."""
        for name in self.METRICS:
            getattr(self, name).append(metrics[name])

    def to_dataframe(self) -> pd.DataFrame:
        """One row per epoch (index `epoch` from 1), one column per metric."""
        frame = pd.DataFrame({name: getattr(self, name) for name in self.METRICS}, dtype=float)
        frame.index = pd.RangeIndex(1, self.num_epochs + 1, name="epoch")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (saved in checkpoints)."""
        return {name: list(getattr(self, name)) for name in (*self.METRICS, "notes")} | {
            "monitor": self.monitor, "stopped_early": self.stopped_early, "restored_epoch": self.restored_epoch}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Rebuild a History saved with `to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def plot(self, ax: Any = None) -> Any:
        """Loss and accuracy curves (tlkit.plots.plot_history); returns the Figure."""
        return plots.plot_history(self, ax=ax)

    def __repr__(self) -> str:
        best = self.best_epoch
        head = f"History({self.num_epochs} epochs, monitor={self.monitor}, best epoch={best}"
        if best is not None:
            head += f" ({self.monitor}={getattr(self, self.monitor)[best - 1]:.4f})"
        lines = [head + ")"]
        if self.num_epochs:
            lines.append(self.to_dataframe().dropna(axis=1, how="all").to_string(float_format=lambda v: f"{v:.4g}"))
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def _lower_is_better(metric: str) -> bool:
    """Losses go down, accuracies go up."""
    return metric.endswith("loss")


# ====================================================================================== batches, forward, loss
def _move(x: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a tensor to `device` (channels-last memory for image batches if asked); other values pass through."""
    if not isinstance(x, torch.Tensor):
        return x
    if channels_last and x.ndim == 4:
        return x.to(device, memory_format=torch.channels_last, non_blocking=True)
    return x.to(device, non_blocking=True)


def _split_batch(batch: Any, device: torch.device, channels_last: bool = False) -> tuple[Any, torch.Tensor | None]:
    """(inputs on `device`, labels as they came) from an (x, y) tuple, a dict with "labels", or a bare tensor.

    Labels stay where the loader put them (usually the CPU) so that checking them never waits for the GPU.
    """
    if isinstance(batch, Mapping):
        inputs = {k: _move(v, device) for k, v in batch.items() if k != "labels"}
        labels = batch.get("labels")
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, labels = _move(batch[0], device, channels_last), batch[1]
    elif isinstance(batch, torch.Tensor):
        inputs, labels = _move(batch, device, channels_last), None
    else:
        raise TypeError(f"A batch must be an (inputs, labels) pair or a dict with a 'labels' key; got {type(batch).__name__}.")
    return inputs, (torch.as_tensor(labels) if labels is not None else None)


def _forward(model: nn.Module, inputs: Any) -> torch.Tensor:
    """Run the model and return its logits (a plain tensor, or the `.logits` of a Hugging Face output)."""
    out = model(**inputs) if isinstance(inputs, Mapping) else model(inputs)
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, Mapping):
        logits = out.get("logits")
    if logits is None:
        raise TypeError(f"The model returned {type(out).__name__}; fit expects a logits tensor or an output with .logits.")
    return logits


def _is_classification(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """True for (B, C) logits with (B,) integer class labels: then accuracy means something."""
    return logits.ndim == 2 and labels.ndim == 1 and not labels.is_floating_point()


def _check_labels(logits: torch.Tensor, labels: torch.Tensor) -> None:
    """Catch the two classic head/label mistakes with a clear message (on a GPU they end in a cryptic device assert)."""
    if not _is_classification(logits, labels):
        return
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"The model returned {logits.shape[0]} rows of logits for {labels.shape[0]} labels; "
                         "the model must return one row per example (check a flatten or a pooling step).")
    top = int(labels.max()) if labels.numel() else -1  # labels are still on the CPU: no GPU sync
    if top >= logits.shape[1]:
        raise ValueError(f"A label is {top} but the head has only {logits.shape[1]} outputs; "
                         f"give the head at least {top + 1} outputs (one per class).")


def _compute_loss(loss_fn: LossFn, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """loss_fn(logits, labels), with errors that say which shapes did not fit."""
    try:
        loss = loss_fn(logits, labels)
    except (RuntimeError, ValueError) as err:
        if isinstance(err, torch.cuda.OutOfMemoryError):
            raise
        raise ValueError(f"loss_fn could not compare model output {tuple(logits.shape)} with labels {tuple(labels.shape)}: "
                         f"for classification return (batch, num_classes) logits and (batch,) class indices ({err}).") from err
    if loss.ndim != 0:
        raise ValueError(f"loss_fn returned shape {tuple(loss.shape)}; it must return one number (use reduction='mean').")
    return loss


# =========================================================================================== optimizer, schedule
def _trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that will learn (requires_grad=True); a clear error if there are none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("Everything is frozen, so there is nothing to train: call tlkit.freeze.unfreeze(model) "
                         "or tlkit.freeze.unfreeze_last(model, 1) first.")
    return params


def _make_optimizer(model: nn.Module, *, lr: float, param_groups: list[dict] | None, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only, or over `param_groups` (each group keeps its own "lr")."""
    params = _trainable(model)
    if param_groups is None:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in param_groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("param_groups holds no trainable parameter: build them after unfreezing (tlkit.freeze.param_groups).")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def schedule_factor(step: int, total_steps: int, schedule: str = "onecycle", warmup_frac: float = 0.1) -> float:
    """The factor that multiplies every group's own lr at `step` (0-based). Plot it to see a schedule.

    onecycle: cosine warm-up from lr/25 to lr, then cosine down to lr/250000 (torch's OneCycleLR, momentum fixed).
    cosine: linear warm-up from ~0, then cosine to 0 (the Hugging Face default). constant: warm-up, then flat.
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


def _amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype to train with: None means plain fp32 (always on CPU)."""
    if amp is False:
        return None
    dtype = autocast_dtype(device)
    if amp and dtype is None:
        warnings.warn(f"amp=True, but {device} has no fast mixed precision: training in fp32.", stacklevel=3)
    return dtype


# ====================================================================================================== steps
@dataclass
class _Trainer:
    """What one training step needs, bundled so the helpers below stay short."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: LossFn
    device: torch.device
    amp_dtype: torch.dtype | None
    grad_clip: float | None
    channels_last: bool = False

    def params(self) -> list[torch.Tensor]:
        """Every parameter the optimizer updates (for gradient clipping)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def _train_step(t: _Trainer, batch: Any, where: str) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """One optimisation step on one batch; returns (loss, number correct or None, batch size), still on the device."""
    inputs, labels = _split_batch(batch, t.device, t.channels_last)
    if labels is None:
        raise ValueError("Training batches need labels: (inputs, labels) pairs or dicts with a 'labels' key (not 'label').")
    with autocast(t.device, enabled=t.amp_dtype is not None):
        logits = _forward(t.model, inputs)
    _check_labels(logits, labels)
    labels = labels.to(t.device, non_blocking=True)
    loss = _compute_loss(t.loss_fn, logits.float(), labels)
    if not torch.isfinite(loss):  # the one GPU sync per step: the price of stopping at the first bad step
        raise FloatingPointError(f"The loss became {loss.item()} at {where}: training diverged. Lower the lr "
                                 "(try 10x smaller) or keep grad_clip on; the model keeps the weights from before this step "
                                 "and the last checkpoint (if you set checkpoint_path) is untouched.")
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()  # the scaler only scales for fp16; with bf16/fp32 it passes the loss through
    if t.grad_clip:
        t.scaler.unscale_(t.optimizer)
        nn.utils.clip_grad_norm_(t.params(), t.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    correct = (logits.argmax(-1) == labels).sum() if _is_classification(logits, labels) else None
    return loss.detach(), correct, len(labels)


def _train_epoch(t: _Trainer, loader: Iterable, *, epoch: int, steps: int, progress: bool) -> tuple[float, float | None]:
    """One pass over at most `steps` batches of the loader; returns (mean loss, accuracy or None)."""
    t.model.train()
    loss_sum, correct, seen = 0.0, 0, 0  # sums stay on the device (no waiting for the GPU) until the epoch ends
    bar = tqdm(itertools.islice(loader, steps), total=steps, desc=f"epoch {epoch}", leave=False, disable=not progress)
    for step, batch in enumerate(bar, start=1):
        loss, right, n = _train_step(t, batch, where=f"epoch {epoch}, step {step}")
        loss_sum, seen = loss_sum + loss * n, seen + n
        correct = correct + right if right is not None and correct is not None else None
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    if seen == 0:
        raise ValueError("train_loader gave no batches this epoch: check the dataset size and batch_size.")
    return float(loss_sum) / seen, (float(correct) / seen if correct is not None else None)


@dataclass
class _Outputs:
    """Everything one pass of inference produced, on the CPU."""

    logits: torch.Tensor
    labels: torch.Tensor | None
    loss: float | None


@torch.inference_mode()
def _infer(model: nn.Module, loader: Iterable, *, device: torch.device, amp_dtype: torch.dtype | None,
           loss_fn: LossFn | None = None, progress: bool = False, desc: str = "eval") -> _Outputs:
    """Run the model over a loader in eval mode; collect logits, labels and the mean loss."""
    model.eval()
    all_logits, all_labels, loss_sum = [], [], 0.0
    for batch in tqdm(loader, desc=desc, leave=False, disable=not progress):
        inputs, labels = _split_batch(batch, device)
        with autocast(device, enabled=amp_dtype is not None):
            logits = _forward(model, inputs).float()
        if labels is not None:
            _check_labels(logits, labels)
            all_labels.append(labels.cpu())
            if loss_fn is not None:
                loss_sum = loss_sum + _compute_loss(loss_fn, logits, labels.to(device)) * len(labels)
        all_logits.append(logits)
    if not all_logits:
        raise ValueError("The loader is empty: check the dataset size and batch_size (drop_last=True drops a lone short batch).")
    labels = torch.cat(all_labels) if all_labels else None
    loss = float(loss_sum) / len(labels) if labels is not None and loss_fn is not None else None
    return _Outputs(torch.cat(all_logits).cpu(), labels, loss)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    """Fraction of correct argmax predictions (None when labels are not class indices)."""
    if labels is None or not _is_classification(logits, labels):
        return None
    return float((logits.argmax(-1) == labels).float().mean())


# ======================================================================================================== fit
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


def _check_fit_args(num_epochs: int, schedule: str, monitor: str, val_loader: Any, patience: int | None,
                    checkpoint_path: Any, resume: bool, optimizer: Any, param_groups: Any) -> None:
    """Refuse argument combinations that cannot work, saying what to pass instead."""
    if not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a whole number >= 1, got {num_epochs!r}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if monitor not in MONITORS:
        raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}.")
    if patience is not None and monitor.startswith("val") and val_loader is None:
        raise ValueError("Early stopping watches a validation metric: pass val_loader, or monitor='train_loss'.")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path (the folder the interrupted run saved to).")
    if optimizer is not None and param_groups is not None:
        raise ValueError("Pass either optimizer or param_groups, not both (fit builds AdamW from param_groups).")


def _validate(t: _Trainer, val_loader: Iterable | None) -> tuple[float | None, float | None]:
    """Validation loss and accuracy, or (None, None) without a val_loader."""
    if val_loader is None:
        return None, None
    out = _infer(t.model, val_loader, device=t.device, amp_dtype=t.amp_dtype, loss_fn=t.loss_fn)
    return out.loss, _accuracy(out.logits, out.labels)


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
    return {name: f"{getattr(history, name)[-1]:.4f}" for name in names if getattr(history, name)[-1] is not None}


def _resume(path: Any, t: _Trainer, run: dict, history: History) -> History:
    """Load the last checkpoint into model/optimizer/scheduler/scaler/RNG; return its History (or `history` if none)."""
    if not checkpoint.checkpoint_exists(path):
        history.notes.append(f"resume=True but no checkpoint in {path} yet: started from scratch.")
        return history
    saved_run = checkpoint.checkpoint_info(path)["extra"].get("run", run)
    if saved_run != run:
        raise ValueError(f"The checkpoint in {path} was made with {saved_run} but this call has {run}: resume with "
                         "the same settings, or pass resume=False to start over.")
    state = checkpoint.load_checkpoint(path, model=t.model, optimizer=t.optimizer, scheduler=t.scheduler,
                                       scaler=t.scaler, device=t.device)
    resumed = History.from_dict(state["history"])
    resumed.notes.append(f"resumed from {path} after epoch {state['epoch']}.")
    return resumed


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
    """Train `model` for `num_epochs` and return its History. Taught in lesson 01; schedules and resuming in lesson 03.

    Defaults: AdamW over the trainable parameters only (or over `param_groups`, e.g. from tlkit.freeze.param_groups,
    each with its own lr; `lr` and `weight_decay` fill in for groups without one), a per-batch schedule that scales every group's own lr, mixed precision where the device
    has it (amp=None), gradient clipping at 1.0. With `early_stopping_patience`, training stops after that many
    epochs without a better `monitor` value and the best weights are put back. With `checkpoint_path` a
    checkpoint is saved after every epoch; `resume=True` continues from it, and with `seed` the resumed run
    matches an uninterrupted one (data order and dropout are reseeded each epoch with seed + epoch).
    The model is left in eval mode.
    """
    _check_fit_args(num_epochs, schedule, monitor, val_loader, early_stopping_patience, checkpoint_path, resume, optimizer, param_groups)
    device = torch.device(device)
    steps = _steps_per_epoch(train_loader, max_steps_per_epoch)
    _trainable(model)  # fail early, with a clear message, when everything is frozen
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # faster convolutions on tensor-core GPUs
    amp_dtype = _amp_dtype(device, amp)
    if optimizer is None:
        optimizer = _make_optimizer(model, lr=lr, param_groups=param_groups, weight_decay=weight_decay)
    t = _Trainer(model, optimizer, _make_scheduler(optimizer, schedule, num_epochs * steps, warmup_frac),
                 torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
                 loss_fn or nn.CrossEntropyLoss(), device, amp_dtype, grad_clip, channels_last)
    run = {"num_epochs": num_epochs, "steps_per_epoch": steps, "schedule": schedule, "seed": seed}
    history = History(monitor=monitor)
    if resume:
        history = _resume(checkpoint_path, t, run, history)
    best_state = None
    epochs = tqdm(range(history.num_epochs + 1, num_epochs + 1), desc="fit", disable=not progress)
    for epoch in epochs:
        if history.stopped_early:
            break
        if seed is not None:
            seed_everything(seed + epoch)  # same shuffling and dropout for epoch n, resumed or not
        start = time.perf_counter()
        train_loss, train_acc = _train_epoch(t, train_loader, epoch=epoch, steps=steps, progress=progress)
        val_loss, val_acc = _validate(t, val_loader)
        history.append(train_loss=train_loss, train_accuracy=train_acc, val_loss=val_loss, val_accuracy=val_acc,
                       lr=max(g["lr"] for g in optimizer.param_groups), epoch_time=time.perf_counter() - start)
        if early_stopping_patience is not None:
            if history.best_epoch == epoch:  # keep a copy of the best weights to put back at the end
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            history.stopped_early = _out_of_patience(history, early_stopping_patience)
        if checkpoint_path is not None:
            checkpoint.save_checkpoint(checkpoint_path, model=model, optimizer=optimizer, scheduler=t.scheduler, scaler=t.scaler,
                                       epoch=epoch, history=history, extra={"run": run}, best_epoch=history.best_epoch)
        epochs.set_postfix(_last_metrics(history))
    if early_stopping_patience is not None:
        _restore_best(model, history, best_state, checkpoint_path, device)
    model.eval()
    return history


# ============================================================================================ evaluate, predict
@dataclass(repr=False)
class EvalResult:
    """Metrics and raw outputs of `evaluate`. Taught in lesson 01 (confusion matrix) and used in every lesson after."""

    accuracy: float
    macro_f1: float
    loss: float
    per_class: pd.DataFrame
    confusion: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    class_names: list[str]

    @property
    def mistakes(self) -> np.ndarray:
        """Indices of the wrongly predicted examples (for showing them)."""
        return np.flatnonzero(self.predictions != self.labels)

    def plot_confusion(self, normalize: bool = True, ax: Any = None) -> Any:
        """The confusion matrix as a picture (tlkit.plots.plot_confusion_matrix); returns the Figure."""
        return plots.plot_confusion_matrix(self.confusion, self.class_names, normalize=normalize, ax=ax)

    def __repr__(self) -> str:
        return (f"EvalResult(accuracy={self.accuracy:.4f}, macro_f1={self.macro_f1:.4f}, loss={self.loss:.4f}, "
                f"n={len(self.labels)}, classes={len(self.class_names)})")


def _metrics(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-class precision/recall/F1/support table and the confusion matrix (sklearn)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # slow import: only here

    classes = list(range(probs.shape[1]))
    preds = probs.argmax(1)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    table = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support},
                         index=pd.Index(class_names, name="class"))
    return table, confusion_matrix(labels, preds, labels=classes)


def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str,
    class_names: list[str] | None = None,
    amp: bool | None = None,
    loss_fn: LossFn | None = None,
    progress: bool = False,
) -> EvalResult:
    """Accuracy, macro F1, loss, per-class table and confusion matrix of `model` on a labelled loader."""
    device = torch.device(device)
    was_training = model.training
    out = _infer(model.to(device), loader, device=device, amp_dtype=_amp_dtype(device, amp),
                 loss_fn=loss_fn or nn.CrossEntropyLoss(), progress=progress)
    model.train(was_training)
    if out.labels is None or not _is_classification(out.logits, out.labels):
        raise ValueError("evaluate needs (B, C) logits and integer class labels in every batch.")
    probs, labels = out.logits.softmax(-1).numpy(), out.labels.numpy()
    names = list(class_names) if class_names is not None else [str(i) for i in range(probs.shape[1])]
    if len(names) != probs.shape[1]:
        raise ValueError(f"Got {len(names)} class_names but the model has {probs.shape[1]} outputs; pass one name per output.")
    table, cm = _metrics(probs, labels, names)
    return EvalResult(accuracy=float((probs.argmax(1) == labels).mean()), macro_f1=float(table["f1"].mean()),
                      loss=float(out.loss), per_class=table, confusion=cm, predictions=probs.argmax(1),
                      labels=labels, probabilities=probs, class_names=names)


def predict(
    model: nn.Module, loader: Iterable, *, device: torch.device | str, amp: bool | None = None, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities (N, C) for every example of `loader`, and its labels (None if the batches have none)."""
    device = torch.device(device)
    was_training = model.training
    out = _infer(model.to(device), loader, device=device, amp_dtype=_amp_dtype(device, amp), progress=progress, desc="predict")
    model.train(was_training)
    return out.logits.softmax(-1), out.labels


# ====================================================================================================== lr_find
@dataclass(repr=False)
class LRFinderResult:
    """The learning-rate sweep: lrs tried, smoothed losses, and a suggested lr. Taught in lesson 03."""

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: float
    method: str

    def plot(self, ax: Any = None) -> Any:
        """Loss against lr with the suggestion marked (tlkit.plots.plot_lr_find); returns the Figure."""
        return plots.plot_lr_find(self.lrs, self.losses, self.suggestion, ax=ax)

    def __repr__(self) -> str:
        return f"LRFinderResult(suggestion={self.suggestion:.2e} ({self.method}), {len(self.lrs)} steps from {self.lrs[0]:.1e} to {self.lrs[-1]:.1e})"


def _suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    """Steepest descent of the smoothed loss before its minimum; the minimum's lr / 10 if the curve is too short."""
    skip = len(losses) // 10  # the first points of a moving average are noisy
    lowest = int(np.argmin(losses))
    if lowest - skip >= 4:
        slopes = np.gradient(losses[skip: lowest + 1], np.log(lrs[skip: lowest + 1]))
        return float(lrs[skip + int(np.argmin(slopes))]), "steepest descent"
    return float(lrs[lowest] / 10), "minimum / 10"


def _cycle(loader: Iterable) -> Iterator:
    """Yield batches from `loader` again and again (the sweep may need more steps than one epoch has)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("train_loader is empty: check the dataset size and batch_size.")


def lr_find(
    model: nn.Module,
    train_loader: Iterable,
    *,
    device: torch.device | str,
    start_lr: float = 1e-7,
    end_lr: float = 1.0,
    num_steps: int = 100,
    param_groups: list[dict] | None = None,
    loss_fn: LossFn | None = None,
    amp: bool | None = None,
    progress: bool = True,
) -> LRFinderResult:
    """Train briefly with an lr growing from start_lr to end_lr, record the loss, then put the model back as it was.

    With param_groups the sweep keeps their lr ratios and the lrs reported are the largest group's.
    The model's weights, buffers, train/eval mode and the random-number states are restored afterwards.
    """
    if not 0 < start_lr < end_lr or num_steps < 2:
        raise ValueError(f"Need 0 < start_lr < end_lr and num_steps >= 2; got {start_lr}, {end_lr}, {num_steps}.")
    device = torch.device(device)
    model.to(device)
    saved_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_rng, was_training = checkpoint.rng_state(), model.training
    optimizer = _make_optimizer(model, lr=end_lr, param_groups=param_groups, weight_decay=0.0)
    top = max(g["lr"] for g in optimizer.param_groups)
    for g in optimizer.param_groups:  # keep the groups' ratios; the largest one sweeps start_lr -> end_lr
        g["lr"] = start_lr * g["lr"] / top
    growth = (end_lr / start_lr) ** (1 / (num_steps - 1))
    amp_dtype = _amp_dtype(device, amp)
    t = _Trainer(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: growth**step),
                 torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
                 loss_fn or nn.CrossEntropyLoss(), device, amp_dtype, grad_clip=None)
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    try:
        model.train()
        batches = _cycle(train_loader)
        for step in tqdm(range(num_steps), desc="lr_find", leave=False, disable=not progress):
            lr_now = max(g["lr"] for g in optimizer.param_groups)
            try:
                loss, _, _ = _train_step(t, next(batches), where=f"lr_find step {step + 1}")
            except FloatingPointError:
                break  # the loss blew up: the sweep is over
            smooth = 0.98 * smooth + 0.02 * loss.item()  # exponential moving average, bias-corrected below
            value = smooth / (1 - 0.98 ** (step + 1))
            lrs.append(lr_now)
            losses.append(value)
            best = min(best, value)
            if value > 4 * best:
                break
    finally:
        model.load_state_dict(saved_weights)
        model.train(was_training)
        checkpoint.set_rng_state(saved_rng)
    if len(lrs) < 2:
        raise FloatingPointError(f"The loss was not finite even at lr={start_lr:g}: check the data and the model before tuning the lr.")
    suggestion, method = _suggest_lr(np.array(lrs), np.array(losses))
    return LRFinderResult(np.array(lrs), np.array(losses), suggestion, method)
