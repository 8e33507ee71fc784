"""Benchmark 5: wall time of every lesson, in smoke mode and full mode, on CPU and (when present) GPU.

Executes each notebook with `jupyter nbconvert --execute` in a fresh kernel (kernel start and imports included, as a
learner experiences it), with TLKIT_SMOKE=1 for smoke mode and unset for full mode. Results from every run are merged
into bench/results/course_timing.json (keyed by notebook, mode and CPU/GPU), and the whole table is rewritten to
bench/results/course_timing.md, so a CPU run and a GPU run on different machines fill one table.
It times whatever notebooks exist; a failing notebook is recorded as failed (with its error), not fatal. Each record
also keeps the time of every section (the cells under one "## " heading, from the cells' execution timestamps), which
tools/make_runsheet.py turns into the workshop run-sheets.

    .venv/bin/python -m bench.course_timing --modes smoke              # quick: every solution in smoke mode
    .venv/bin/python -m bench.course_timing --modes smoke full         # the whole course (hours on a CPU)
    .venv/bin/python -m bench.course_timing --device cpu               # CPU times on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BENCH_DIR, RESULTS_DIR, command_line, cpu_model, load_average

NAME = "course_timing"
MODES = ("smoke", "full")
REPO = BENCH_DIR.parent


def find_notebooks(folder: str, pattern: str = "[0-9]*.ipynb") -> list[Path]:
    """The course notebooks in `folder` (solutions/ by default), in lesson order."""
    return sorted((REPO / folder).glob(pattern))


def gpu_name(device: str) -> str | None:
    """The GPU the notebooks will use, or None when they run on the CPU."""
    if device == "cpu":
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def notebook_env(mode: str, device: str) -> dict[str, str]:
    """The environment of the notebook's kernel: smoke flag, no hub access, off-screen plots, optional CPU only."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    env.pop("TLKIT_SMOKE", None)
    if mode == "smoke":
        env.update(TLKIT_SMOKE="1", TQDM_DISABLE="1")
    if device == "cpu":
        env.update(TLKIT_DEVICE="cpu", CUDA_VISIBLE_DEVICES="")
    return env


def run_notebook(path: Path, mode: str, device: str, timeout: int) -> dict[str, Any]:
    """Execute one notebook with nbconvert into a temporary file; return its wall time and status."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute", f"--ExecutePreprocessor.timeout={timeout}",
               "--output-dir", tmp, "--output", "executed.ipynb", str(path)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=path.parent, env=notebook_env(mode, device), capture_output=True, text=True,
                                  timeout=timeout * 4 + 120)
            status, error = ("ok", None) if proc.returncode == 0 else ("failed", _last_error(proc.stderr))
        except subprocess.TimeoutExpired:
            status, error = "timeout", f"no result after {timeout * 4 + 120} s"
        seconds = time.perf_counter() - start
        executed = Path(tmp) / "executed.ipynb"
        sections = section_seconds(json.loads(executed.read_text())) if status == "ok" and executed.is_file() else []
    return {"seconds": round(seconds, 1), "status": status, "error": error, "sections": sections}


def _cell_seconds(cell: dict[str, Any]) -> float:
    """A code cell's run time from the timestamps the executor records (0 when it has none)."""
    from datetime import datetime

    stamps = cell.get("metadata", {}).get("execution", {})
    begin, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
    if not begin or not end:
        return 0.0
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.fromisoformat(begin.replace("Z", "+00:00"))).total_seconds()


def section_heading(cell: dict[str, Any], level: str = "## ") -> str | None:
    """The heading text if this markdown cell starts with one of `level` (after any <a id=...></a> anchors), else None."""
    if cell.get("cell_type") != "markdown":
        return None
    lines = [line for line in "".join(cell.get("source", "")).splitlines() if not re.fullmatch(r"\s*<a [^>]*></a>\s*", line)]
    return lines[0][len(level):].strip() if lines and lines[0].startswith(level) else None


def section_seconds(notebook: dict[str, Any]) -> list[dict[str, Any]]:
    """[{"section": heading, "seconds": run time of its code cells}] in notebook order; cells before the first "## " count as "setup"."""
    sections = [{"section": "setup", "seconds": 0.0}]
    for cell in notebook.get("cells", []):
        heading = section_heading(cell)
        if heading is not None:
            sections.append({"section": heading, "seconds": 0.0})
        elif cell.get("cell_type") == "code":
            sections[-1]["seconds"] += _cell_seconds(cell)
    return [{**s, "seconds": round(s["seconds"], 1)} for s in sections]


def _last_error(stderr: str) -> str:
    """The most telling line of nbconvert's error output (the exception), shortened."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return (errors[-1] if errors else lines[-1] if lines else "unknown error")[:300]


def load_table(path: Path) -> dict[str, Any]:
    """The merged results so far ({"rows": {key: record}}), empty if none."""
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def fmt_seconds(record: dict[str, Any] | None) -> str:
    """'38 s', '12.5 min', 'failed', 'timeout' or '-' (not measured)."""
    if record is None:
        return "-"
    if record["status"] != "ok":
        return record["status"]
    s = record["seconds"]
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def markdown_table(table: dict[str, Any]) -> str:
    """One row per notebook, columns smoke/full x CPU/GPU, plus the machines the numbers come from."""
    rows = table["rows"].values()
    notebooks = sorted({r["notebook"] for r in rows})
    kinds = [("smoke", "cpu"), ("full", "cpu"), ("smoke", "gpu"), ("full", "gpu")]
    lines = ["| notebook | smoke, CPU | full, CPU | smoke, GPU | full, GPU |", "|---|---|---|---|---|"]
    for nb in notebooks:
        cells = [fmt_seconds(table["rows"].get(f"{nb}|{mode}|{kind}")) for mode, kind in kinds]
        lines.append(f"| {nb} | " + " | ".join(cells) + " |")
    machines = {}
    for r in rows:
        machines.setdefault(f"{r['kind'].upper()}: {r['machine']}", set()).add(r["date"][:10])
    notes = [f"- {m}, measured {', '.join(sorted(dates))}" for m, dates in sorted(machines.items())]
    return "\n".join(lines + ["", *notes]) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Which notebooks, which modes, which device."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", choices=MODES, default=["smoke"])
    p.add_argument("--folder", default="solutions", help="notebook folder relative to the repo (solutions or lessons)")
    p.add_argument("--notebooks", nargs="*", default=None, help="explicit notebook paths (default: every NN_*.ipynb in --folder)")
    p.add_argument("--device", choices=("auto", "cpu"), default="auto", help="cpu hides the GPU from the notebooks")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell before nbconvert gives up")
    p.add_argument("--out", default=str(RESULTS_DIR))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time the notebooks, merge into course_timing.json, rewrite course_timing.md, print the table."""
    args = parse_args(argv)
    notebooks = [Path(n).resolve() for n in args.notebooks] if args.notebooks else find_notebooks(args.folder)
    gpu = gpu_name(args.device)
    kind, machine = ("gpu", gpu) if gpu else ("cpu", f"{cpu_model()}, {os.cpu_count()} cores")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = load_table(out / f"{NAME}.json")
    table["command"] = command_line(f"bench.{NAME}", argv)
    for mode in args.modes:
        for path in notebooks:
            load = load_average()
            record = run_notebook(path, mode, args.device, args.timeout)
            record.update(notebook=path.name, mode=mode, kind=kind, machine=machine, load_average=load,
                          date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
            table["rows"][f"{path.name}|{mode}|{kind}"] = record
            print(f"{path.name:40s} {mode:5s} {kind}: {fmt_seconds(record):>9s}" + (f"  ({record['error']})" if record["error"] else ""), flush=True)
            (out / f"{NAME}.json").write_text(json.dumps(table, indent=2) + "\n")  # after each notebook: a crash keeps the rest
    (out / f"{NAME}.md").write_text(markdown_table(table))
    print(markdown_table(table))
    return table


if __name__ == "__main__":
    main()
