"""Generate lessons/NN_topic.ipynb from solutions/NN_topic.ipynb (one source of truth).

    python tools/make_lessons.py           # strip outputs from solutions, (re)write every lesson
    python tools/make_lessons.py --check   # exit 1 if a lesson is stale or a notebook carries outputs

Markers in a solution:
- code:      ### BEGIN SOLUTION / ### END SOLUTION around the answer; optional `### STUB: <line>` lines right after
             BEGIN give the lesson's stub (default: `raise NotImplementedError`). The lesson gets `# YOUR CODE HERE`.
- markdown:  <!-- BEGIN SOLUTION --> ... <!-- END SOLUTION --> becomes "*Your answer here.*"
- a cell tagged `solution-only` is left out of the lesson.
- a cell tagged `hidden-source` (hints, question texts and answer keys) is shown collapsed in the lesson: JupyterLab
  displays "..." until the learner clicks it, so a hint is read only when asked for.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END, STUB = "### BEGIN SOLUTION", "### END SOLUTION", "### STUB:"
MD_SOLUTION = re.compile(r"<!-- BEGIN SOLUTION -->.*?<!-- END SOLUTION -->", re.S)
LESSON_NOTE = ("> **Exercise version.** Fill in the cells marked `# YOUR CODE HERE`; each check tells you how you did. "
               "The solved notebook is `solutions/{name}`.")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def blank_code(source: str, where: str = "") -> str:
    """Replace each BEGIN/END SOLUTION block with `# YOUR CODE HERE` and its stub, keeping the indentation."""
    out: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != BEGIN:
            if line.strip() == END:
                raise ValueError(f"{where}: '{END}' without a matching '{BEGIN}'.")
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        stubs, i = [], i + 1
        while i < len(lines) and lines[i].strip().startswith(STUB):
            stubs.append(lines[i].strip()[len(STUB):].strip())
            i += 1
        while i < len(lines) and lines[i].strip() != END:
            i += 1
        if i == len(lines):
            raise ValueError(f"{where}: '{BEGIN}' is never closed by '{END}'.")
        out.append(indent + "# YOUR CODE HERE")
        out += [indent + s for s in (stubs or ["raise NotImplementedError"])]
        i += 1
    return "\n".join(out)


def _clean(cell: dict) -> dict:
    cell = copy.deepcopy(cell)
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
    cell.get("metadata", {}).pop("execution", None)
    return cell


def _with_source(cell: dict, text: str) -> dict:
    cell["source"] = text.splitlines(keepends=True)
    return cell


def clean_notebook(nb: dict) -> dict:
    """The notebook without outputs, execution counts or widget state."""
    nb = copy.deepcopy(nb)
    nb["cells"] = [_clean(c) for c in nb["cells"]]
    nb.get("metadata", {}).pop("widgets", None)
    return nb


def make_lesson(solution: dict, name: str) -> dict:
    """Build the lesson notebook from a solution notebook."""
    lesson = clean_notebook(solution)
    cells = []
    for n, cell in enumerate(lesson["cells"]):
        if "solution-only" in cell.get("metadata", {}).get("tags", []):
            continue
        text = _source(cell)
        if "hidden-source" in cell.get("metadata", {}).get("tags", []):
            cell["metadata"]["jupyter"] = {"source_hidden": True}
        if cell["cell_type"] == "code":
            text = blank_code(text, where=f"{name} cell {n}")
        elif cell["cell_type"] == "markdown":
            text = MD_SOLUTION.sub("*Your answer here.*", text)
        cells.append(_with_source(cell, text))
    if cells and cells[0]["cell_type"] == "markdown":
        note = {"cell_type": "markdown", "id": "lesson-note", "metadata": {}, "source": []}
        cells.insert(1, _with_source(note, LESSON_NOTE.format(name=name)))
    lesson["cells"] = cells
    return lesson


def dumps(nb: dict) -> str:
    """Serialise like Jupyter does (indent 1, trailing newline), so diffs stay small."""
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def has_outputs(nb: dict) -> bool:
    """True if any code cell carries outputs or an execution count, or the notebook holds widget state."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    return any(c.get("outputs") or c.get("execution_count") for c in code) or "widgets" in nb.get("metadata", {})


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, verify) every lesson; return a process exit code."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="verify only; exit 1 on a stale lesson or outputs")
    args = parser.parse_args(argv)
    problems = []
    for sol_path in sorted((ROOT / "solutions").glob("*.ipynb")):
        solution = json.loads(sol_path.read_text(encoding="utf-8"))
        lesson_path = ROOT / "lessons" / sol_path.name
        expected = dumps(make_lesson(solution, sol_path.name))
        if args.check:
            if has_outputs(solution):
                problems.append(f"{sol_path.relative_to(ROOT)} carries outputs")
            if not lesson_path.exists() or lesson_path.read_text(encoding="utf-8") != expected:
                problems.append(f"{lesson_path.relative_to(ROOT)} is stale")
        else:
            sol_path.write_text(dumps(clean_notebook(solution)), encoding="utf-8")
            lesson_path.write_text(expected, encoding="utf-8")
            print(f"wrote {lesson_path.relative_to(ROOT)}")
    orphans = {p.name for p in (ROOT / "lessons").glob("*.ipynb")} - {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    problems += [f"lessons/{o} has no solution twin" for o in sorted(orphans)]
    for p in problems:
        print(p, file=sys.stderr)
    if problems and args.check:
        print("Run: python tools/make_lessons.py", file=sys.stderr)
    return 1 if (problems and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
