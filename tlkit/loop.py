"""One training step and one pass over a loader: the loop lesson 01 writes by hand, with errors that say what to do.

`train_step` is forward, loss, backward, optimiser step (plus mixed precision and gradient clipping); `train_epoch`
runs it over a loader; `infer` runs a model in eval mode and collects logits, labels and the mean loss.
`tlkit.train.fit` builds a `Step` and calls these. Batches are `(inputs, labels)` pairs or dicts of tensors with a
"labels" key; the model returns logits (B, C), or an object with `.logits` (Hugging Face models).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlkit.device import autocast, autocast_dtype

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Penalty = Callable[[nn.Module], torch.Tensor]
IGNORE_INDEX = -100  # the label cross-entropy skips (nn.CrossEntropyLoss's default ignore_index)


# ========================================================================================== batches and labels
def _move(x: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move a tensor to `device` (channels-last memory for image batches if asked); other values pass through."""
    if not isinstance(x, torch.Tensor):
        return x
    if channels_last and x.ndim == 4:
        return x.to(device, memory_format=torch.channels_last, non_blocking=True)
    return x.to(device, non_blocking=True)


def split_batch(batch: Any, device: torch.device, channels_last: bool = False) -> tuple[Any, torch.Tensor | None]:
    """(inputs on `device`, labels left where the loader put them, so checking them never waits for the GPU)."""
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


def forward(model: nn.Module, inputs: Any) -> torch.Tensor:
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


def is_classification(logits: torch.Tensor, labels: torch.Tensor) -> bool:
    """True for (B, C) logits with (B,) integer class labels: then accuracy means something."""
    return logits.ndim == 2 and labels.ndim == 1 and not labels.is_floating_point()


def ignore_index(loss_fn: Any) -> int:
    """The label value `loss_fn` skips (its `ignore_index`, else -100 as in cross-entropy)."""
    return int(getattr(loss_fn, "ignore_index", IGNORE_INDEX))


def check_labels(logits: torch.Tensor, labels: torch.Tensor, ignore: int = IGNORE_INDEX) -> None:
    """Catch the classic head/label mistakes with a clear message (on a GPU they end in a cryptic device assert)."""
    if labels.is_floating_point() or labels.numel() == 0:
        return
    if bool((labels == ignore).all()):  # labels are on the CPU: no GPU sync
        raise ValueError(f"Every label in this batch is {ignore} (ignored), so the loss is 0/0 = NaN: check the labelling "
                         "(e.g. a tokenizer that marks every token -100) or drop such batches.")
    if not is_classification(logits, labels):
        return
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(f"The model returned {logits.shape[0]} rows of logits for {labels.shape[0]} labels; "
                         "the model must return one row per example (check a flatten or a pooling step).")
    top = int(labels.max())
    if top >= logits.shape[1]:
        raise ValueError(f"A label is {top} but the head has only {logits.shape[1]} outputs; "
                         f"give the head at least {top + 1} outputs (one per class).")


def compute_loss(loss_fn: LossFn, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
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


# ======================================================================================== what a step updates
def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that will learn (requires_grad=True); a clear error if there are none."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("Everything is frozen, so there is nothing to train: call tlkit.freeze.unfreeze(model) "
                         "or tlkit.freeze.unfreeze_last(model, 1) first.")
    return params


def make_optimizer(model: nn.Module, *, lr: float, param_groups: list[dict] | None, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only, or over `param_groups` (each group keeps its own "lr")."""
    params = trainable_parameters(model)
    if param_groups is None:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    groups = [dict(g, params=[p for p in g["params"] if p.requires_grad]) for g in param_groups]
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise ValueError("param_groups holds no trainable parameter: build them after unfreezing (tlkit.freeze.param_groups).")
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def amp_dtype(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """The autocast dtype to train with (tlkit.device.autocast_dtype); None means plain fp32 (always on CPU)."""
    if amp is False:
        return None
    dtype = autocast_dtype(device)
    if amp and dtype is None:
        warnings.warn(f"amp=True, but {device} has no fast mixed precision: training in fp32.", stacklevel=3)
    return dtype


# ============================================================================================ the training step
@dataclass
class Step:
    """What one training step needs. `penalty(model)` (e.g. L2-SP) joins the training objective, never a reported loss."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: LossFn
    device: torch.device
    amp_dtype: torch.dtype | None
    grad_clip: float | None
    channels_last: bool = False
    penalty: Penalty | None = None
    val_loss_fn: LossFn | None = None  # the loss validation reports; None: loss_fn
    notes: list[str] = field(default_factory=list)
    check_loss_fn: bool = True  # look once whether loss_fn hides a weight penalty
    batchnorm_training: bool = False  # set by train_epoch: a batch of one cannot be normalised then


def _loss_reads_weights(t: Step, logits: torch.Tensor, labels: torch.Tensor) -> None:
    """If loss_fn depends on the weights, not only on the logits (a regulariser inside it), keep it out of validation."""
    t.check_loss_fn = False
    if not t.loss_fn(logits.detach(), labels).requires_grad:
        return
    t.val_loss_fn = nn.CrossEntropyLoss(ignore_index=ignore_index(t.loss_fn))
    message = ("loss_fn depends on the model's weights, not only on its outputs (a regulariser such as L2-SP inside it): "
               "validation reports plain cross-entropy instead, so the penalty stays out of val_loss. Pass the regulariser "
               "as fit(..., penalty=lambda model: ...) and keep loss_fn for the data term.")
    t.notes.append(message)
    warnings.warn(message, stacklevel=4)


def train_step(t: Step, batch: Any, where: str) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """One optimisation step on one batch; returns (data loss, number correct or None, labels counted), on the device."""
    inputs, labels = split_batch(batch, t.device, t.channels_last)
    if labels is None:
        raise ValueError("Training batches need labels: (inputs, labels) pairs or dicts with a 'labels' key (not 'label').")
    if t.batchnorm_training and len(labels) == 1:
        raise ValueError(f"A batch of 1 example at {where}, and the model has BatchNorm in training mode, which cannot "
                         "normalise a single example: pass drop_last=True to the training DataLoader (or freeze BatchNorm "
                         "with tlkit.freeze.freeze_batchnorm).")
    with autocast(t.device, enabled=t.amp_dtype is not None):
        logits = forward(t.model, inputs)
    ignore = ignore_index(t.loss_fn)
    check_labels(logits, labels, ignore)
    counted = int((labels != ignore).sum()) if not labels.is_floating_point() else len(labels)  # CPU: no sync
    labels = labels.to(t.device, non_blocking=True)
    loss = compute_loss(t.loss_fn, logits.float(), labels)
    if t.check_loss_fn:
        _loss_reads_weights(t, logits.float(), labels)
    objective = loss + t.penalty(t.model) if t.penalty is not None else loss
    if not torch.isfinite(objective):  # the one GPU sync per step: the price of stopping at the first bad step
        raise FloatingPointError(f"The loss became {objective.item()} at {where}: training diverged. Lower the lr "
                                 "(try 10x smaller) or keep grad_clip on; the model keeps the weights from before this step "
                                 "and the last checkpoint (if you set checkpoint_path) is untouched.")
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(objective).backward()  # the scaler only scales for fp16; with bf16/fp32 it passes the loss through
    if t.grad_clip:
        t.scaler.unscale_(t.optimizer)
        nn.utils.clip_grad_norm_([p for g in t.optimizer.param_groups for p in g["params"]], t.grad_clip)
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    correct = ((logits.argmax(-1) == labels) & (labels != ignore)).sum() if is_classification(logits, labels) else None
    return loss.detach(), correct, counted


def _refuse_lone_last_batch(loader: Iterable, steps: int) -> None:
    """Before training: a DataLoader whose last batch will hold one example, with BatchNorm training, cannot work."""
    if not isinstance(loader, DataLoader) or loader.batch_size is None or loader.drop_last:
        return
    try:
        n = len(loader.sampler)  # type: ignore[arg-type]
    except TypeError:
        return
    if n % loader.batch_size == 1 and steps == len(loader):
        raise ValueError(f"The training set has {n} examples, so with batch_size={loader.batch_size} the last batch holds 1 "
                         "example, and the model's BatchNorm cannot normalise a single example in training mode: pass "
                         "drop_last=True to the training DataLoader (or pick a batch_size that does not leave 1 over).")


def batchnorm_training(model: nn.Module) -> bool:
    """True if a BatchNorm layer of `model` is in training mode (frozen ones stay in eval mode)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def train_epoch(t: Step, loader: Iterable, *, steps: int, epoch: int, bar: Any = None) -> tuple[float, float | None]:
    """One pass over at most `steps` batches of the loader; returns (mean data loss, accuracy or None)."""
    t.model.train()
    t.batchnorm_training = batchnorm_training(t.model)
    if t.batchnorm_training:
        _refuse_lone_last_batch(loader, steps)
    loss_sum, correct, seen = 0.0, 0, 0  # sums stay on the device (no waiting for the GPU) until the epoch ends
    for step, batch in enumerate(itertools.islice(loader, steps), start=1):
        loss, right, n = train_step(t, batch, where=f"epoch {epoch}, step {step}")
        loss_sum, seen = loss_sum + loss * n, seen + n
        correct = correct + right if right is not None and correct is not None else None
        if bar is not None:
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    if seen == 0:
        raise ValueError("train_loader gave no batches (or only ignored labels) this epoch: check the dataset size and batch_size.")
    return float(loss_sum) / seen, (float(correct) / seen if correct is not None else None)


# ================================================================================================== inference
@dataclass
class Outputs:
    """Everything one pass of inference produced, on the CPU."""

    logits: torch.Tensor
    labels: torch.Tensor | None
    loss: float | None


@torch.inference_mode()
def infer(model: nn.Module, loader: Iterable, *, device: torch.device, amp_dtype: torch.dtype | None,
          loss_fn: LossFn | None = None, bar: Any = None) -> Outputs:
    """Run the model over a loader in eval mode; collect logits, labels and the mean loss (weighted by labels counted)."""
    model.eval()
    all_logits, all_labels, loss_sum, counted = [], [], 0.0, 0
    ignore = ignore_index(loss_fn)
    for batch in loader:
        inputs, labels = split_batch(batch, device)
        with autocast(device, enabled=amp_dtype is not None):
            logits = forward(model, inputs).float()
        if labels is not None:
            check_labels(logits, labels, ignore)
            all_labels.append(labels.cpu())
            if loss_fn is not None:
                n = int((labels != ignore).sum()) if not labels.is_floating_point() else len(labels)
                loss_sum, counted = loss_sum + compute_loss(loss_fn, logits, labels.to(device)) * n, counted + n
        all_logits.append(logits)
        if bar is not None:
            bar.update(1)
    if not all_logits:
        raise ValueError("The loader is empty: check the dataset size and batch_size (drop_last=True drops a lone short batch).")
    labels = torch.cat(all_labels) if all_labels else None
    loss = float(loss_sum) / counted if counted else None
    return Outputs(torch.cat(all_logits).cpu(), labels, loss)
