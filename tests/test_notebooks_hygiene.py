"""Notebook rules: lessons are generated from solutions, nothing is committed with outputs, every solution checks itself."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_lessons  # noqa: E402

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
ALL_NOTEBOOKS = SOLUTIONS + sorted((ROOT / "lessons").glob("*.ipynb"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_notebooks():
    assert SOLUTIONS, "solutions/ holds no notebook"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_without_outputs(path):
    assert not make_lessons.has_outputs(_load(path)), f"{path.name} carries outputs: run python tools/make_lessons.py"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_lesson_is_up_to_date(path):
    lesson = ROOT / "lessons" / path.name
    assert lesson.exists(), f"lessons/{path.name} is missing: run python tools/make_lessons.py"
    expected = make_lessons.dumps(make_lessons.make_lesson(_load(path), path.name))
    assert lesson.read_text(encoding="utf-8") == expected, f"lessons/{path.name} is stale: run python tools/make_lessons.py"


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_solution_opens_and_ends_by_the_house_rules(path):
    cells = _load(path)["cells"]
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), "first cell: a title"
    assert any("google.colab" in c for c in code[:3]), "a Colab-only setup cell near the top"
    assert sum("smoke_mode()" in c for c in code) == 1, "exactly one config cell reads smoke_mode()"
    assert "assert " in code[-1] or "assert_all_passed" in code[-1], "the last code cell asserts a result"
    assert any(make_lessons.BEGIN in c for c in code), "a solution without exercises"


def test_blank_code_keeps_indentation_and_stub():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    ### STUB: return None\n    return x + 1\n    ### END SOLUTION\n"
    assert make_lessons.blank_code(src) == "def f(x):\n    # YOUR CODE HERE\n    return None\n"


def test_blank_code_rejects_unclosed_block():
    with pytest.raises(ValueError, match="never closed"):
        make_lessons.blank_code("### BEGIN SOLUTION\nx = 1\n")


def test_solution_only_cells_and_markdown_answers_are_removed():
    nb = {"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# T"]},
        {"cell_type": "markdown", "id": "b", "metadata": {}, "source": ["Q? <!-- BEGIN SOLUTION -->42<!-- END SOLUTION -->"]},
        {"cell_type": "code", "id": "c", "metadata": {"tags": ["solution-only"]}, "source": ["book.assert_all_passed()"],
         "outputs": [], "execution_count": None}]}
    lesson = make_lessons.make_lesson(nb, "x.ipynb")
    texts = ["".join(c["source"]) for c in lesson["cells"]]
    assert "Q? *Your answer here.*" in texts and not any("assert_all_passed" in t for t in texts)


def test_hidden_source_cells_are_collapsed_in_the_lesson():
    nb = {"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["# T"]},
        {"cell_type": "code", "id": "h", "metadata": {"tags": ["hidden-source"]}, "source": ["book.add_hints('x', 'nudge')"],
         "outputs": [], "execution_count": None}]}
    hidden = [c for c in make_lessons.make_lesson(nb, "x.ipynb")["cells"] if c["id"] == "h"][0]
    assert hidden["metadata"]["jupyter"] == {"source_hidden": True} and "add_hints" in "".join(hidden["source"])
