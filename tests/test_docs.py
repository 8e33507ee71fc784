"""The cheat sheet's decision table is generated from tlkit.advisor, so it must say what the code does."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_cheatsheet  # noqa: E402


def test_cheatsheet_table_matches_the_advisor():
    text = make_cheatsheet.SHEET.read_text(encoding="utf-8")
    assert make_cheatsheet.render(text) == text, "docs/CHEATSHEET.md is out of date: run python tools/make_cheatsheet.py"


def test_glossary_names_the_core_ideas():
    glossary = (ROOT / "docs" / "GLOSSARY.md").read_text(encoding="utf-8").lower()
    for term in ("feature extraction", "fine-tuning", "negative transfer", "domain shift", "overfitting", "linear probe"):
        assert f"**{term}" in glossary, f"the glossary should define {term!r}"


def test_instructor_notes_are_generated_from_the_notebooks_and_timings():
    import make_instructor_notes

    text = make_instructor_notes.OUT.read_text(encoding="utf-8")
    assert make_instructor_notes.render() == text, "docs/INSTRUCTORS.md is out of date: run python tools/make_instructor_notes.py"


def test_slides_start_a_slide_at_each_heading_and_hide_answer_keys():
    import make_slides

    anchor = {"cell_type": "markdown", "source": '<a id="x"></a>\n## 2. Train', "metadata": {}}
    hidden = {"cell_type": "code", "source": "book.ask(...)", "metadata": {"tags": ["hidden-source"]}}
    plain = {"cell_type": "code", "source": "x = 1", "metadata": {}}
    assert [make_slides.slide_type(c) for c in (anchor, hidden, plain)] == ["slide", "skip", "-"]
