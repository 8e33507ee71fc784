"""Test-suite settings, applied before any notebook kernel starts (kernels inherit this environment).

Smoke mode shrinks every notebook's data and epochs; no test may touch a model hub; plots render off-screen.
"""

import os
from pathlib import Path

os.environ.setdefault("TLKIT_SMOKE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PYTHONWARNINGS", "ignore")
os.environ.setdefault("TQDM_DISABLE", "1")

# A pre-filled copy of the Free Spoken Digit Dataset, if this checkout sits beside the course's shared folder.
_fsdd = Path(__file__).resolve().parent.parent / "shared" / "datasets" / "fsdd" / "recordings"
if _fsdd.is_dir():
    os.environ.setdefault("TLKIT_FSDD_DIR", str(_fsdd))
