"""What a run reports: the per-epoch `History` of `fit`, and `evaluate` / `predict` with their `EvalResult`.

History is taught in lesson 03 (best epoch, curves); evaluate in lesson 01; the confusion matrix and per-class
table in lesson 02; predict in lesson 04. All of them are importable from tlkit.train as well.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tlkit import plots
from tlkit.loop import LossFn, amp_dtype, infer, is_classification
from tlkit.progress import progress_bar


# ===================================================================================================== History
@dataclass
class History:
    """Per-epoch metrics of a `fit` run, with the best epoch, a DataFrame view, a plot and notes on what happened.

    Losses are the data loss (loss_fn, mean over labelled examples), without fit's `penalty`, so train and val compare.
    """

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


# ============================================================================================ evaluate, predict
@dataclass(repr=False)
class EvalResult:
    """Metrics and raw outputs of `evaluate` (lesson 01); the confusion matrix and per-class table from lesson 02 on."""

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


def _run(model: nn.Module, loader: Iterable, *, device: torch.device, amp: bool | None, loss_fn: LossFn | None,
         progress: bool, desc: str) -> Any:
    """tlkit.loop.infer with a progress bar, leaving the model in the train/eval mode it came in."""
    was_training = model.training
    with progress_bar(total=_length(loader), desc=desc, enabled=progress) as bar:
        out = infer(model.to(device), loader, device=device, amp_dtype=amp_dtype(device, amp), loss_fn=loss_fn, bar=bar)
    model.train(was_training)
    return out


def _length(loader: Iterable) -> int | None:
    """len(loader), or None for loaders without one."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


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
    out = _run(model, loader, device=torch.device(device), amp=amp, loss_fn=loss_fn or nn.CrossEntropyLoss(),
               progress=progress, desc="evaluate")
    if out.labels is None or not is_classification(out.logits, out.labels):
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
    out = _run(model, loader, device=torch.device(device), amp=amp, loss_fn=None, progress=progress, desc="predict")
    return out.logits.softmax(-1), out.labels


