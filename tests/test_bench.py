"""The benchmark scripts run end to end at tiny sizes and write what RESULTS.md quotes (no timing is asserted here)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    """One results folder for the module, so the report test can draw from what the others wrote."""
    return tmp_path_factory.mktemp("bench")


def _saved(out: Path, name: str) -> dict:
    path = out / f"{name}-cpu.json"
    assert path.is_file(), f"{name} did not save its result"
    result = json.loads(path.read_text())
    assert {"command", "machine"} <= set(result) and result["machine"]["date"] and result["command"].startswith(".venv/bin/python -m bench.")
    return result


def test_recipe_vs_tutorial_runs(out):
    from bench import recipe_vs_tutorial

    r = recipe_vs_tutorial.main(["--device", "cpu", "--images-per-class", "1", "--val-per-class", "1", "--test-per-class", "1",
                                 "--image-size", "32", "--epochs", "1", "--tlkit-epochs", "1", "--head-epochs", "1",
                                 "--batch-size", "8", "--out", str(out)])
    assert set(r["runs"]) == {"tutorial_features", "tlkit_features", "tutorial_finetune", "tlkit_finetune"}
    for run in r["runs"].values():
        assert 0.0 <= run["test_accuracy"] <= 1.0 and run["train_s"] > 0 and run["train_cpu_s"] >= 0
    assert len(r["runs"]["tutorial_finetune"]["log"]) == 1  # one tutorial epoch, logged
    assert r["runs"]["tlkit_finetune"]["lr_groups"] > 2  # discriminative lrs over several layer groups
    assert set(r["summary"]) == {"features", "finetune"} and r["settings"]["split_sizes"]["train"] == 10
    _saved(out, "recipe_vs_tutorial")


def test_loop_efficiency_runs(out):
    from bench import loop_efficiency

    r = loop_efficiency.main(["--tiny", "--device", "cpu", "--out", str(out)])
    assert {"ceiling_fp32", "naive_fp32", "fit_float_items", "fit_uint8_items"} <= set(r["samples_per_s"])
    assert all(v > 0 for v in r["samples_per_s"].values())
    assert r["summary"]["fit_fraction_of_ceiling"] > 0
    _saved(out, "loop_efficiency")


def test_normalize_on_device_matches_the_course_dataset():
    import numpy as np
    import torch

    from bench.loop_efficiency import NormalizeOnDevice, UInt8Images
    from tlkit.data.animals import AnimalImages

    images, labels = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([0, 1, 2])
    course, ours = AnimalImages(images, labels, image_size=40), UInt8Images(images, labels, 40)
    x = NormalizeOnDevice()(torch.stack([ours[i][0] for i in range(3)]))
    assert torch.allclose(x, torch.stack([course[i][0] for i in range(3)]), atol=1e-6)


def test_text_vs_trainer_runs(out):
    from bench import text_vs_trainer

    r = text_vs_trainer.main(["--device", "cpu", "--n-train", "16", "--val-size", "8", "--test-size", "16", "--epochs", "1",
                              "--batch-size", "8", "--out", str(out)])
    assert set(r["runs"]) == {"trainer", "tlkit"}
    assert all(run["samples_per_s"] > 0 and 0 <= run["test_accuracy"] <= 1 for run in r["runs"].values())
    assert r["settings"]["train_examples"] == 16 and r["settings"]["precision"] == "fp32"
    _saved(out, "text_vs_trainer")


def test_whisper_padding_runs(out):
    from bench import whisper_padding

    r = whisper_padding.main(["--device", "cpu", "--accents", "3", "--variants", "1", "--words", "2", "--out", str(out)])
    assert r["settings"]["clips"] == 6 and r["settings"]["test_clips"] >= 2
    assert r["times"]["padded_30s_s"] > 0 and r["times"]["unpadded_s"] > 0
    assert 0.5 < r["summary"]["mean_cosine_unpadded_vs_padded"] <= 1.0001  # the same encoder, nearly the same features
    _saved(out, "whisper_padding")


def test_course_timing_times_what_exists_and_records_failures(out):
    from bench import course_timing

    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import os\nassert os.environ['TLKIT_SMOKE'] == '1'")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('broken lesson')")])
    for name, nb in (("01_good.ipynb", good), ("02_bad.ipynb", bad)):
        nb.metadata["kernelspec"] = kernel
        nbformat.write(nb, out / name)
    table = course_timing.main(["--notebooks", str(out / "01_good.ipynb"), str(out / "02_bad.ipynb"), "--modes", "smoke",
                                "--timeout", "120", "--out", str(out)])
    assert table["rows"]["01_good.ipynb|smoke|cpu"]["status"] == "ok"
    assert [s["section"] for s in table["rows"]["01_good.ipynb|smoke|cpu"]["sections"]] == ["setup"]
    bad_row = table["rows"]["02_bad.ipynb|smoke|cpu"]
    assert bad_row["status"] == "failed" and "broken lesson" in bad_row["error"]
    md = (out / "course_timing.md").read_text()
    assert "| 01_good.ipynb |" in md and "failed" in md and "smoke, CPU" in md


def test_course_timing_finds_the_course_notebooks():
    from bench.course_timing import find_notebooks, fmt_seconds

    found = find_notebooks("solutions")
    assert found == sorted(found) and all(p.suffix == ".ipynb" and p.name[:2].isdigit() for p in found)
    assert fmt_seconds({"status": "ok", "seconds": 38.2}) == "38 s" and fmt_seconds({"status": "ok", "seconds": 750}) == "12.5 min"
    assert fmt_seconds(None) == "-" and fmt_seconds({"status": "timeout", "seconds": 9}) == "timeout"


def test_report_draws_from_the_results(out):
    """Last in the file: draws the plots from what the tests above saved (run as `python -m`, as the README says)."""
    plots = out / "plots"
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(out), "--plots", str(plots)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    drawn = {p.name for p in plots.glob("*.png")}
    assert {"recipe_vs_tutorial-cpu.png", "text_vs_trainer-cpu.png", "whisper_padding-cpu.png", "course_timing.png"} <= drawn
    summary = (out / "summary.md").read_text()
    assert "recipe vs tutorial, features" in summary and "Whisper unpadded" in summary


def test_section_seconds_groups_cells_under_their_heading():
    from bench.course_timing import section_seconds

    stamp = lambda a, b: {"execution": {"iopub.execute_input": f"2026-01-01T00:00:{a:02d}.000Z", "shell.execute_reply": f"2026-01-01T00:00:{b:02d}.000Z"}}
    nb = {"cells": [{"cell_type": "code", "source": "x", "metadata": stamp(0, 2)},
                    {"cell_type": "markdown", "source": "## 1. Data\ntext", "metadata": {}},
                    {"cell_type": "code", "source": "y", "metadata": stamp(2, 7)},
                    {"cell_type": "code", "source": "z", "metadata": stamp(7, 8)},
                    {"cell_type": "markdown", "source": "## 2. Train", "metadata": {}},
                    {"cell_type": "code", "source": "w", "metadata": {}}]}
    assert section_seconds(nb) == [{"section": "setup", "seconds": 2.0}, {"section": "1. Data", "seconds": 6.0},
                                   {"section": "2. Train", "seconds": 0.0}]
