"""The course's pictures: training curves, confusion matrices, image grids, spectrograms, data-efficiency curves.

Each function draws into `ax` when you pass one (so you can combine plots), otherwise makes a new figure, and
returns the matplotlib Figure. In a notebook, assign it (`fig = plot_history(history)`) or end the line with `;`:
a bare Figure as the cell's last value is shown twice by Jupyter. Used from lesson 01 on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter, ScalarFormatter


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """Return (figure, axes): the given axes and its figure, or a new figure with one axes."""
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")  # constrained: labels never cut off
    return fig, ax


def _numpy(x: Any) -> np.ndarray:
    """A torch tensor, list or array as a NumPy array on the CPU."""
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------------- training curves
def _history_frame(history: Any) -> pd.DataFrame:
    """A History, DataFrame or dict of per-epoch lists as a DataFrame indexed by epoch (1, 2, ...)."""
    if hasattr(history, "to_dataframe"):
        return history.to_dataframe()
    frame = history.copy() if isinstance(history, pd.DataFrame) else pd.DataFrame(dict(history))
    if frame.index.name != "epoch":
        frame.index = pd.RangeIndex(1, len(frame) + 1, name="epoch")
    return frame


def _plot_pair(ax: Axes, frame: pd.DataFrame, metric: str, best_epoch: int | None) -> None:
    """Draw train_<metric> and val_<metric> (where measured) on one axes."""
    for split, style in (("train", "-o"), ("val", "-s")):
        column = f"{split}_{metric}"
        if column in frame and frame[column].notna().any():
            ax.plot(frame.index, frame[column].astype(float), style, label=split, markersize=4)
    if best_epoch is not None:
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best (epoch {best_epoch})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()


def plot_history(history: Any, ax: Axes | Sequence[Axes] | None = None) -> Figure:
    """Loss and accuracy per epoch, train vs validation, best epoch marked. Taught in lesson 02 (used again in 03 and 05).

    `ax` may be a pair of Axes (loss, accuracy); one Axes gets the loss only.
    """
    frame = _history_frame(history)
    best = getattr(history, "best_epoch", None)
    if ax is None:
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    elif isinstance(ax, Axes):
        fig, ax_loss, ax_acc = ax.figure, ax, None
    else:
        ax_loss, ax_acc = ax
        fig = ax_loss.figure
    _plot_pair(ax_loss, frame, "loss", best)
    ax_loss.set_title("loss")
    if ax_acc is not None:
        _plot_pair(ax_acc, frame, "accuracy", best)
        ax_acc.set_title("accuracy")
    return fig


# ---------------------------------------------------------------------------------------------- confusion matrix
def plot_confusion_matrix(
    cm: Any, class_names: Sequence[str] | None = None, normalize: bool = True, ax: Axes | None = None
) -> Figure:
    """Confusion matrix, rows = true class, columns = predicted; `normalize` shows each row as fractions (recall)."""
    counts = _numpy(cm).astype(float)
    n = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    if counts.shape != (n, n) or len(names) != n:
        raise ValueError(f"Expected a square confusion matrix and one name per class; got {counts.shape} and {len(names)} names.")
    rows = counts.sum(axis=1, keepdims=True)
    shown = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0) if normalize else counts
    size = max(4.0, 0.45 * n + 2)
    fig, ax = _axes(ax, (size + 1, size))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix" + (" (each row sums to 1)" if normalize else ""))
    if n <= 20:  # numbers in the cells stay readable up to about 20 classes
        threshold = shown.max() / 2 if shown.size else 0
        for i in range(n):
            for j in range(n):
                text = f"{shown[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if shown[i, j] > threshold else "black")
    return fig


# ------------------------------------------------------------------------------------------------ image grids
def _channel_stat(value: float | Sequence[float], channels: int) -> torch.Tensor:
    """A mean/std given as one number or one per channel, shaped (1, C, 1, 1) to broadcast over a batch."""
    stat = torch.as_tensor(value, dtype=torch.float32).flatten()
    if stat.numel() not in (1, channels):
        raise ValueError(f"mean/std need 1 or {channels} values (one per channel); got {stat.numel()}.")
    return stat.expand(channels).reshape(1, channels, 1, 1)


def _images_hwc(images: Any, mean: float | Sequence[float], std: float | Sequence[float]) -> np.ndarray:
    """Normalised CHW images (a batch tensor or a list) as un-normalised (N, H, W, C) floats in [0, 1]."""
    batch = torch.stack([torch.as_tensor(_numpy(im)) for im in images]) if isinstance(images, (list, tuple)) else torch.as_tensor(_numpy(images))
    if batch.ndim == 3:  # (N, H, W) greyscale
        batch = batch.unsqueeze(1)
    if batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise ValueError(f"Expected images shaped (N, C, H, W) with C = 1 or 3 (or (N, H, W)); got {tuple(batch.shape)}.")
    if batch.dtype == torch.uint8:  # raw pixels: no normalisation to undo
        batch = batch.float() / 255
    else:
        channels = batch.shape[1]
        batch = batch.float() * _channel_stat(std, channels) + _channel_stat(mean, channels)
    return batch.clamp(0, 1).permute(0, 2, 3, 1).numpy()


def plot_image_grid(
    images: Any,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    mean: float | Sequence[float] = 0.5,
    std: float | Sequence[float] = 0.5,
    ax: Axes | None = None,
    title_colors: Sequence[str] | None = None,
) -> Figure:
    """Show a batch of normalised CHW images in a grid (undoing x = (img - mean) / std), optional titles and colours.

    `title_colors` (e.g. "green"/"red" for right/wrong predictions) colours each title. Greyscale works too.
    """
    pictures = _images_hwc(images, mean, std)
    n, h, w, c = pictures.shape
    if titles is not None and len(titles) != n:
        raise ValueError(f"Got {n} images but {len(titles)} titles; pass one title per image.")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    pad, title_h = max(1, h // 16), (max(4, h // 4) if titles is not None else 0)
    cell_h, cell_w = h + pad + title_h, w + pad
    canvas = np.ones((nrows * cell_h + pad, ncols * cell_w + pad, c), dtype=np.float32)
    fig, ax = _axes(ax, (1.3 * ncols, 1.3 * nrows * cell_h / cell_w))
    for i, picture in enumerate(pictures):
        row, col = divmod(i, ncols)
        y, x = pad + row * cell_h + title_h, pad + col * cell_w
        canvas[y:y + h, x:x + w] = picture
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.text(x + w / 2, y - 1, str(titles[i]), ha="center", va="bottom", fontsize=8, color=color)
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.axis("off")
    return fig


# ------------------------------------------------------------------------------------------------- spectrogram
def plot_spectrogram(
    spec: Any, sr: int, hop_length: int, title: str | None = None, ax: Axes | None = None, y_label: str = "mel bin"
) -> Figure:
    """A (log-)spectrogram shaped (bins, frames) with time in seconds on the x axis. Taught in lesson 05."""
    image = _numpy(spec).squeeze()
    if image.ndim != 2:
        raise ValueError(f"Expected a spectrogram shaped (bins, frames); got shape {_numpy(spec).shape}.")
    fig, ax = _axes(ax, (8, 3))
    seconds = image.shape[1] * hop_length / sr
    shown = ax.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, image.shape[0]))
    fig.colorbar(shown, ax=ax, pad=0.01)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(y_label)
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------- data efficiency
def plot_data_efficiency(results: pd.DataFrame, ax: Axes | None = None, metric: str = "accuracy") -> Figure:
    """Accuracy against labelled examples per method: mean over seeds as a line, min-max over seeds shaded, log x."""
    x_col = "labels_per_class" if "labels_per_class" in results else "n_labels"
    missing = {"method", x_col, metric} - set(results.columns)
    if missing:
        raise ValueError(f"results needs columns method, labels_per_class (or n_labels), seed, {metric}; missing {sorted(missing)}.")
    fig, ax = _axes(ax, (7, 4.5))
    for method, rows in results.groupby("method", sort=False):
        stats = rows.groupby(x_col)[metric].agg(["mean", "min", "max"]).sort_index()
        line, = ax.plot(stats.index, stats["mean"], "-o", label=str(method))
        ax.fill_between(stats.index, stats["min"], stats["max"], color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ticks = sorted(results[x_col].unique())
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())  # only our ticks get labels (no stray "6x10^0" between 5 and 20)
    ax.set_xlabel("labelled examples per class" if x_col == "labels_per_class" else "labelled examples")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs labelled data (line: mean over seeds, band: min to max)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ------------------------------------------------------------------------------------------------ lr finder
def plot_lr_find(lrs: Any, losses: Any, suggestion: float | None = None, ax: Axes | None = None) -> Figure:
    """Loss against learning rate (log scale) from lr_find, with the suggested lr marked (LRFinderResult.plot, lesson 03)."""
    lrs, losses = _numpy(lrs).astype(float), _numpy(losses).astype(float)
    fig, ax = _axes(ax, (6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    if suggestion is not None and len(lrs):
        y = float(np.interp(np.log(suggestion), np.log(lrs), losses))
        ax.axvline(suggestion, color="red", linestyle="--", linewidth=1)
        ax.plot([suggestion], [y], "ro", label=f"suggested lr = {suggestion:.1e}")
        ax.legend()
    ax.grid(alpha=0.3, which="both")
    return fig


# ---------------------------------------------------------------------------------------------- feature maps
def plot_embedding_2d(
    features: Any, labels: Any, class_names: Sequence[str] | None = None, ax: Axes | None = None
) -> Figure:
    """Project features (N, D) to 2-D with PCA and scatter them coloured by class: do the classes separate?"""
    from sklearn.decomposition import PCA  # sklearn imports slowly; only this plot needs it

    points, classes = _numpy(features).reshape(len(features), -1).astype(np.float64), _numpy(labels).astype(int)
    if len(points) != len(classes) or len(points) < 2:
        raise ValueError(f"Need at least 2 feature rows and one label per row; got {len(points)} rows and {len(classes)} labels.")
    pca = PCA(n_components=2).fit(points)
    xy = pca.transform(points)
    fig, ax = _axes(ax, (6, 5))
    cmap = plt.get_cmap("tab10" if classes.max() < 10 else "tab20")
    for k in np.unique(classes):
        name = class_names[k] if class_names is not None else str(k)
        ax.scatter(*xy[classes == k].T, s=8, alpha=0.7, color=cmap(k % cmap.N), label=name)
    explained = 100 * pca.explained_variance_ratio_.sum()
    ax.set_title(f"features projected with PCA ({explained:.0f}% of the variance shown)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if len(np.unique(classes)) <= 20:
        ax.legend(markerscale=2, fontsize=8, loc="best")
    return fig
