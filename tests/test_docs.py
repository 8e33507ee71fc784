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
