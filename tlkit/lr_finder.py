"""The learning-rate finder: train briefly with a growing lr, record the loss, suggest a peak lr (lesson 03).

Importable from tlkit.train as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tlkit import checkpoint, plots
from tlkit.loop import LossFn, Step, amp_dtype, batchnorm_training, make_optimizer, train_step
from tlkit.progress import progress_bar


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
    optimizer = make_optimizer(model, lr=end_lr, param_groups=param_groups, weight_decay=0.0)
    top = max(g["lr"] for g in optimizer.param_groups)
    for g in optimizer.param_groups:  # keep the groups' ratios; the largest one sweeps start_lr -> end_lr
        g["lr"] = start_lr * g["lr"] / top
    growth = (end_lr / start_lr) ** (1 / (num_steps - 1))
    dtype = amp_dtype(device, amp)
    t = Step(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: growth**step),
             torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
             loss_fn or nn.CrossEntropyLoss(), device, dtype, grad_clip=None, check_loss_fn=False)
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    try:
        model.train()
        t.batchnorm_training = batchnorm_training(model)
        batches = _cycle(train_loader)
        with progress_bar(total=num_steps, desc="lr_find", enabled=progress) as bar:
            for step in range(num_steps):
                lr_now = max(g["lr"] for g in optimizer.param_groups)
                try:
                    loss, _, _ = train_step(t, next(batches), where=f"lr_find step {step + 1}")
                except FloatingPointError:
                    break  # the loss blew up: the sweep is over
                bar.update(1)
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
