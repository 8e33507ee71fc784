"""Tests for tlkit.plots: every plot returns a Figure, draws what it should, and accepts an existing Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from tlkit import plots  # noqa: E402
from tlkit.train import History  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def small_history() -> History:
    history = History()
    for i in range(4):
        history.append(train_loss=1 / (i + 1), train_accuracy=0.5 + 0.1 * i, val_loss=1.2 / (i + 1),
                       val_accuracy=[0.5, 0.7, 0.8, 0.75][i], lr=1e-3, epoch_time=1.0)
    return history


def test_plot_history_draws_train_and_val_curves():
    fig = plots.plot_history(small_history())
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    labels = [line.get_label() for line in acc_ax.get_lines()]
    assert labels[:2] == ["train", "val"] and any("best (epoch 3)" in label for label in labels)
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(), [1, 1 / 2, 1 / 3, 1 / 4])


def test_plot_history_accepts_a_dict_and_given_axes():
    _, (a, b) = plt.subplots(1, 2)
    fig = plots.plot_history({"train_loss": [1.0, 0.5], "val_loss": [None, None]}, ax=(a, b))
    assert fig is a.figure and len(a.get_lines()) == 1  # the unmeasured val curve is skipped


def test_plot_confusion_matrix_normalises_rows():
    cm = np.array([[8, 2], [1, 9]])
    fig = plots.plot_confusion_matrix(cm, ["cat", "dog"])
    image = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(image, [[0.8, 0.2], [0.1, 0.9]])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "0.80" in texts and "0.90" in texts
    raw = plots.plot_confusion_matrix(cm, ["cat", "dog"], normalize=False)
    assert "9" in [t.get_text() for t in raw.axes[0].texts]
    with pytest.raises(ValueError, match="one name per class"):
        plots.plot_confusion_matrix(cm, ["cat"])


def test_plot_image_grid_unnormalises_colour_and_grey():
    colour = torch.zeros(5, 3, 8, 8)  # normalised 0 with mean=std=0.5 is mid-grey 0.5
    fig = plots.plot_image_grid(colour, titles=[f"img {i}" for i in range(5)], ncols=3,
                                title_colors=["green", "red", "green", "green", "red"])
    canvas = fig.axes[0].get_images()[0].get_array()
    assert canvas.ndim == 3 and np.isclose(canvas, 0.5).any()
    assert [t.get_text() for t in fig.axes[0].texts] == [f"img {i}" for i in range(5)]
    grey = plots.plot_image_grid(torch.ones(4, 1, 6, 6), mean=0.1307, std=0.3081)
    assert grey.axes[0].get_images()[0].get_array().ndim == 2
    uint8 = plots.plot_image_grid(torch.full((2, 6, 6), 255, dtype=torch.uint8))
    assert uint8.axes[0].get_images()[0].get_array().max() == 1.0
    with pytest.raises(ValueError, match="C = 1 or 3"):
        plots.plot_image_grid(torch.zeros(2, 5, 4, 4))


def test_plot_spectrogram_has_time_in_seconds():
    fig = plots.plot_spectrogram(torch.randn(1, 40, 100), sr=16000, hop_length=160, title="keyword")
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((0, 1.0)) and ax.get_title() == "keyword"


def test_plot_data_efficiency_mean_line_band_and_log_axis():
    rows = [{"method": m, "labels_per_class": k, "seed": s, "accuracy": base + 0.01 * k + 0.01 * s}
            for m, base in (("linear probe", 0.5), ("fine-tune", 0.4)) for k in (1, 5, 20) for s in range(3)]
    fig = plots.plot_data_efficiency(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 2 and len(ax.collections) == 2
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.52, 0.56, 0.71])  # mean over seeds 0, 1, 2
    n_labels = pd.DataFrame(rows).rename(columns={"labels_per_class": "n_labels"})
    assert plots.plot_data_efficiency(n_labels).axes[0].get_xlabel() == "labelled examples"
    with pytest.raises(ValueError, match="missing"):
        plots.plot_data_efficiency(pd.DataFrame({"method": ["a"], "seed": [0]}))


def test_plot_data_efficiency_labels_only_the_measured_ticks():
    rows = [{"method": "m", "labels_per_class": k, "seed": 0, "accuracy": 0.5} for k in (5, 20)]
    fig = plots.plot_data_efficiency(pd.DataFrame(rows))
    fig.canvas.draw()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "20"]
    assert not any(t.get_text() for t in ax.get_xticklabels(minor=True)), "log-axis minor ticks must stay unlabelled"


def test_plot_lr_find_marks_the_suggestion():
    lrs = np.logspace(-6, 0, 50)
    losses = 2 - np.tanh(np.log10(lrs) + 3)
    fig = plots.plot_lr_find(lrs, losses, suggestion=1e-3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "1.0e-03" in ax.get_legend().get_texts()[0].get_text()


def test_plot_embedding_2d_one_colour_per_class():
    features = torch.cat([torch.randn(20, 16) + 3, torch.randn(20, 16) - 3])
    labels = torch.tensor([0] * 20 + [1] * 20)
    fig = plots.plot_embedding_2d(features, labels, ["cat", "dog"])
    ax = fig.axes[0]
    assert len(ax.collections) == 2 and [t.get_text() for t in ax.get_legend().get_texts()] == ["cat", "dog"]


def test_plots_draw_into_a_given_axes():
    fig, ax = plt.subplots()
    assert plots.plot_confusion_matrix(np.eye(3), ax=ax) is fig
    fig2, ax2 = plt.subplots()
    assert plots.plot_lr_find([1e-3, 1e-2], [1.0, 0.5], ax=ax2) is fig2


def test_taught_in_claims_name_a_lesson_that_uses_the_function():
    import inspect
    import json
    import re
    from pathlib import Path

    solutions = Path(__file__).resolve().parents[1] / "solutions"
    for name, function in inspect.getmembers(plots, inspect.isfunction):
        for number in re.findall(r"Taught in lesson (\d\d)", function.__doc__ or ""):
            (path,) = solutions.glob(f"{number}_*.ipynb")
            code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
            assert name in code, f"plots.{name} says it is taught in lesson {number}, which never calls it"
