"""Write the decision table of docs/CHEATSHEET.md from tlkit.advisor's own rules, so the sheet cannot drift from the code.

    python tools/make_cheatsheet.py           # rewrite the table between the markers
    python tools/make_cheatsheet.py --check   # exit 1 if the table is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SHEET = ROOT / "docs" / "CHEATSHEET.md"
BEGIN, END = "<!-- BEGIN GENERATED TABLE -->", "<!-- END GENERATED TABLE -->"
LABELS = (5, 50, 500, 5000)  # labelled examples per class
DOMAINS = {"close (similarity 0.8)": 0.8, "moderate (0.45)": 0.45, "distant (0.15)": 0.15}
GROUPS = 10  # backbone layer groups, as EfficientNet-Lite0 has


def _cell(n_per_class: int, similarity: float) -> str:
    from tlkit.advisor import recommend_finetuning

    probe = pd.DataFrame({"layer": [f"g{i}" for i in range(GROUPS)], "val_acc": [0.5 + 0.04 * i for i in range(GROUPS)]})
    rec = recommend_finetuning(probe, n_per_class, similarity, verbose=False)
    if rec.n_unfreeze == 0:
        return f"freeze all, train the head (lr {rec.lr:.0e})"
    lr = rec.lr if isinstance(rec.lr, float) else f"{rec.lr.start:.0e} → {rec.lr.stop:.0e}"
    return f"train top {rec.n_unfreeze}/{GROUPS} groups + head (lr {lr})"


def table() -> str:
    """The decision table as Markdown: rows = labelled examples per class, columns = domain similarity."""
    head = "| labels per class | " + " | ".join(DOMAINS) + " |"
    rows = [head, "|" + "---|" * (len(DOMAINS) + 1)]
    rows += [f"| {n} | " + " | ".join(_cell(n, s) for s in DOMAINS.values()) + " |" for n in LABELS]
    return "\n".join(rows)


def render(text: str) -> str:
    """`text` with the part between the markers replaced by the current table."""
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + "\n" + table() + "\n" + text[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = SHEET.read_text(encoding="utf-8")
    if args.check:
        if render(text) != text:
            print("docs/CHEATSHEET.md is out of date: run python tools/make_cheatsheet.py", file=sys.stderr)
            return 1
        return 0
    SHEET.write_text(render(text), encoding="utf-8")
    print("wrote", SHEET.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
