"""Write reveal.js slides of every lesson to slides/NN_topic.slides.html (nbconvert), one slide per "#"/"##" heading.

    python tools/make_slides.py                  # every lesson
    python tools/make_slides.py 03 06            # some of them

Headings start a slide, "###" headings a sub-slide, other markdown and code continue the slide they follow; cells
tagged hidden-source (hints, answer keys) are left out. The notebooks themselves are not changed.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import nbformat
from nbconvert import SlidesExporter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.course_timing import section_heading  # noqa: E402


def slide_type(cell: dict) -> str:
    """nbconvert's slide type for one cell."""
    if "hidden-source" in cell.get("metadata", {}).get("tags", []):
        return "skip"
    if section_heading(cell, "# ") is not None or section_heading(cell, "## ") is not None:
        return "slide"
    if section_heading(cell, "### ") is not None:
        return "subslide"
    return "-"


def as_slides(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of the notebook with slideshow metadata on every cell."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        cell.metadata["slideshow"] = {"slide_type": slide_type(cell)}
    return nb


def main(argv: list[str]) -> int:
    out = ROOT / "slides"
    out.mkdir(exist_ok=True)
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
    for path in lessons:
        if argv and path.name[:2] not in argv:
            continue
        body, _ = SlidesExporter().from_notebook_node(as_slides(nbformat.read(path, as_version=4)))
        target = out / f"{path.stem}.slides.html"
        target.write_text(body, encoding="utf-8")
        print("wrote", target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
