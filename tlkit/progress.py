"""Progress bars that leave nothing behind in a saved notebook: the one helper tlkit's loops use.

A notebook widget bar (tqdm.auto in Jupyter) is saved as a reference to a widget model; reopened later, every such
bar reads "Error displaying widget: model not found". So tlkit draws plain-text bars (tqdm's terminal bar, which
Jupyter shows as text) and clears them when they finish (`leave=False`): the saved notebook keeps no widget and no
stale bar. TLKIT_PROGRESS=widget brings back the widget bars (still cleared), TLKIT_PROGRESS=off hides them all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm as text_tqdm

PROGRESS_ENV = "TLKIT_PROGRESS"
MODES = ("text", "widget", "off")


def progress_mode() -> str:
    """How bars are drawn: TLKIT_PROGRESS = text (default), widget or off."""
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower() or "text"
    if mode not in MODES:
        raise ValueError(f"{PROGRESS_ENV} must be one of {MODES}, got {mode!r}; unset it for plain-text bars.")
    return mode


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, desc: str | None = None,
                 total: int | None = None, leave: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar over `iterable` (or a manual one with `total`) that clears itself when done; `enabled=False` hides it."""
    mode = progress_mode()
    disable = not enabled or mode == "off"
    if mode == "widget":
        from tqdm.auto import tqdm as auto_tqdm

        return auto_tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, **kwargs)
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return text_tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, **kwargs)
