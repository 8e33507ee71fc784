"""Draw the benchmark plots (bench/plots/*.png) and a headline table (bench/results/summary.md) from the JSON results.

    .venv/bin/python -m bench.report
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import PLOTS_DIR, RESULTS_DIR, load_result

KINDS = ("cpu", "gpu")
COLORS = {"tutorial": "#9e9e9e", "tlkit": "#1f77b4", "trainer": "#9e9e9e", "padded": "#9e9e9e", "unpadded": "#1f77b4"}


def _figure(ncols: int, title: str) -> tuple[Any, Any]:
    """A row of `ncols` axes with a title (matplotlib off-screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 3.6), squeeze=False)
    fig.suptitle(title, fontsize=11)
    return fig, axes[0]


def _bars(ax: Any, labels: list[str], values: list[float], colors: list[str], fmt: str, ylabel: str, log: bool = False) -> None:
    """Labelled bars with their values written on top."""
    bars = ax.bar(labels, values, color=colors)
    for bar, v in zip(bars, values):
        ax.annotate(fmt.format(v), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=8)


def _machine(r: dict[str, Any]) -> str:
    """'CPU AMD EPYC, 2 cores' or the GPU's name, and the date."""
    m = r["machine"]
    where = m.get("gpu") or f"{m['cpu']}, {m['cpu_cores']} cores"
    return f"{where}, {m['date'][:10]}"


def plot_recipe(r: dict[str, Any], path: Path) -> None:
    """Training wall time (log) and test accuracy, tutorial vs tlkit, per regime."""
    runs = r["runs"]
    names = [n for n in ("tutorial_features", "tlkit_features", "tutorial_finetune", "tlkit_finetune") if n in runs]
    labels = [n.replace("_", "\n") for n in names]
    colors = [COLORS[n.split("_")[0]] for n in names]
    seeds = r.get("settings", {}).get("seeds") or [r.get("settings", {}).get("seed", 0)]
    fig, (a, b) = _figure(2, f"Recipe vs the PyTorch tutorial ({_machine(r)}; mean of {len(seeds)} seed{'s' * (len(seeds) > 1)})")
    _bars(a, labels, [runs[n]["train_s"] for n in names], colors, "{:.0f} s", "training wall time (s, log)", log=True)
    _bars(b, labels, [100 * runs[n]["test_accuracy"] for n in names], colors, "{:.1f}%", "test accuracy (%)")
    b.set_ylim(0, 105)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_loop(r: dict[str, Any], path: Path) -> None:
    """Samples/s of every loop variant, with the ceiling as a line."""
    rates = r["samples_per_s"]
    fig, (a,) = _figure(1, f"Training-loop throughput ({_machine(r)})")
    colors = ["#cccccc" if k.startswith("ceiling") else "#9e9e9e" if k.startswith("naive") else "#1f77b4" for k in rates]
    _bars(a, [k.replace("_", "\n", 1) for k in rates], list(rates.values()), colors, "{:.0f}", "samples/s")
    gpu = str(r["machine"]["device"]).startswith("cuda")
    a.axhline(0.85 * r["summary"]["ceiling"], color="red", lw=1, ls="--", label="85% of the ceiling" + ("" if gpu else " (a GPU target)"))
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_text(r: dict[str, Any], path: Path) -> None:
    """Throughput and test accuracy, Trainer vs fit."""
    runs = r["runs"]
    names = ["trainer", "tlkit"]
    fig, (a, b) = _figure(2, f"MiniLM fine-tuning: fit vs Trainer ({_machine(r)})")
    _bars(a, names, [runs[n]["samples_per_s"] for n in names], [COLORS[n] for n in names], "{:.1f}", "training samples/s")
    _bars(b, names, [100 * runs[n]["test_accuracy"] for n in names], [COLORS[n] for n in names], "{:.1f}%", "test accuracy (%)")
    b.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_whisper(r: dict[str, Any], path: Path) -> None:
    """Milliseconds per clip (log) and probe accuracy, padded vs unpadded."""
    s, acc = r["summary"], r["test_accuracy"]
    fig, (a, b) = _figure(2, f"Whisper encoder features: 30 s padding vs unpadded ({_machine(r)})")
    labels, colors = ["padded to 30 s", "unpadded (tlkit)"], [COLORS["padded"], COLORS["unpadded"]]
    _bars(a, labels, [s["ms_per_clip_padded_30s"], s["ms_per_clip_unpadded"]], colors, "{:.0f} ms", "ms per 1 s clip (log)", log=True)
    _bars(b, labels, [100 * acc["padded_30s"], 100 * acc["unpadded"]], colors, "{:.1f}%", "probe test accuracy (%)")
    b.set_ylim(0, 105)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_course(table: dict[str, Any], path: Path) -> None:
    """Minutes per notebook for every measured mode and machine kind."""
    import numpy as np

    rows = [r for r in table["rows"].values() if r["status"] == "ok"]
    if not rows:
        return
    notebooks = sorted({r["notebook"] for r in rows})
    series = sorted({(r["mode"], r["kind"]) for r in rows})
    fig, (a,) = _figure(1, "Lesson wall time (nbconvert, kernel start included)")
    width = 0.8 / len(series)
    for i, (mode, kind) in enumerate(series):
        values = [table["rows"].get(f"{nb}|{mode}|{kind}", {}).get("seconds", np.nan) / 60 for nb in notebooks]
        a.barh(np.arange(len(notebooks)) + i * width, values, height=width, label=f"{mode}, {kind.upper()}")
    a.set_yticks(np.arange(len(notebooks)) + width * (len(series) - 1) / 2, [n.removesuffix(".ipynb") for n in notebooks], fontsize=8)
    a.invert_yaxis()
    a.set_xlabel("minutes")
    a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def headline_rows(folder: Path) -> list[str]:
    """One markdown row per benchmark and machine kind: figure, target, met?, machine, date."""
    rows = []
    for kind in KINDS:
        r = load_result("recipe_vs_tutorial", kind, folder)
        for regime, s in (r or {}).get("summary", {}).items():
            seeds = s.get("seeds", [0])
            mean = f"mean of {len(seeds)} seeds: " if len(seeds) > 1 else ""
            rows.append(f"| 1. recipe vs tutorial, {regime} | {mean}{s['speedup']:.1f}x faster (CPU time {s['cpu_time_speedup']:.1f}x), "
                        f"{s['accuracy_gain_points']:+.1f} points | >= 5x, >= +0 | {'yes' if s['target_met'] else 'no'} | {_machine(r)} |")
        r = load_result("loop_efficiency", kind, folder)
        if r:
            s = r["summary"]
            rows.append(f"| 2. fit vs ceiling / naive loop | {100 * s['fit_fraction_of_ceiling']:.0f}% / {s['fit_speedup_over_naive']:.2f}x | "
                        f">= 85% / >= 2.5x (GPU) | {('yes' if s['target_met'] else 'no') if kind == 'gpu' else 'n/a: CPU, fp32 (targets are for a GPU)'} | {_machine(r)} |")
        r = load_result("text_vs_trainer", kind, folder)
        if r:
            s = r["summary"]
            rows.append(f"| 3. fit vs HF Trainer (MiniLM) | {s['throughput_ratio']:.2f}x throughput, {s['accuracy_diff_points']:+.1f} points | "
                        f">= 1.0x, within 1 point | {'yes' if s['target_met'] else 'no'} | {_machine(r)} |")
        r = load_result("whisper_padding", kind, folder)
        if r:
            s = r["summary"]
            rows.append(f"| 4. Whisper unpadded vs 30 s | {s['speedup']:.1f}x faster, {s['accuracy_diff_points']:+.1f} points | "
                        f">= 10x, at most 1 point lower | {'yes' if s['target_met'] else 'no'} | {_machine(r)} |")
        r = load_result("ddp_check", kind, folder)
        if r:
            c = r["comparison"]
            rows.append(f"| 6. DDP (torchrun, {r['settings']['nproc']} procs) vs 1 process | max weight diff {c['max_abs_weight_diff']:.1e} | "
                        f"<= {r['settings']['tolerance']:.0e} | {'yes' if r['matches'] else 'no'} | {_machine(r)} |")
    return rows


def main(argv: list[str] | None = None) -> list[Path]:
    """Redraw every plot whose results exist; write summary.md; return the files written."""
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default=str(RESULTS_DIR))
    p.add_argument("--plots", default=str(PLOTS_DIR))
    args = p.parse_args(argv)
    results, plots = Path(args.results), Path(args.plots)
    plots.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (("recipe_vs_tutorial", plot_recipe), ("loop_efficiency", plot_loop), ("text_vs_trainer", plot_text),
                       ("whisper_padding", plot_whisper)):
        for kind in KINDS:
            r = load_result(name, kind, results)
            if r is not None and not (name == "loop_efficiency" and kind == "cpu" and r["settings"].get("tiny")):  # smoke size: no plot
                draw(r, plots / f"{name}-{kind}.png")
                written.append(plots / f"{name}-{kind}.png")
    timing = results / "course_timing.json"
    if timing.is_file():
        plot_course(json.loads(timing.read_text()), plots / "course_timing.png")
        written.append(plots / "course_timing.png")
    head = ["| benchmark | measured | target | met | machine, date |", "|---|---|---|---|---|"]
    (results / "summary.md").write_text("\n".join(head + headline_rows(results)) + "\n")
    written.append(results / "summary.md")
    for path in written:
        print("wrote", path)
    return written


if __name__ == "__main__":
    main()
