"""Free Spoken Digit Dataset (FSDD): 3,000 real recordings of the digits 0-9 by 6 speakers, 8 kHz mono WAV.

Optional real-speech test data for lesson 05: downloaded at run time (GitHub archive of
Jakobovski/free-spoken-digit-dataset, tag v1.0.10, CC BY-SA 4.0), or found pre-filled in the folder named by the
environment variable TLKIT_FSDD_DIR. Nothing in the course requires it: check `fsdd_available()` first.
File names are `{digit}_{speaker}_{take}.wav`. Taught in lesson 05 (speech transfer).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tlkit.audio import AudioClips, load_audio, pad_or_trim, trim_silence
from tlkit.settings import cache_dir

FSDD_ENV = "TLKIT_FSDD_DIR"
FSDD_VERSION = "v1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{FSDD_VERSION}.tar.gz"
# GitHub regenerates its archives (their bytes, and so their SHA-256, have changed before), so we check what
# matters: the recordings. This digest covers every file name and file content (see `recordings_digest`).
# Derived from data/fsdd/SHA256SUMS (one line per file; tests/test_fsdd.py recomputes it from that manifest).
FSDD_RECORDINGS_SHA256 = "c9f9e92a2d0d94e8ac9ea19c7545f66f54ee52307a1121208bca6abac1765f50"
FSDD_NUM_FILES = 3000
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME_RE = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def recordings_digest(folder: str | Path) -> str:
    """SHA-256 over the sorted (file name, file SHA-256) pairs of the WAV files in `folder`: one number for the set."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).glob("*.wav")):
        digest.update(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def _cached_copy() -> Path:
    return cache_dir("datasets") / "fsdd" / f"free-spoken-digit-dataset-{FSDD_VERSION.lstrip('v')}" / "recordings"


def _has_recordings(folder: Path) -> bool:
    return folder.is_dir() and any(_NAME_RE.match(p.name) for p in folder.glob("*.wav"))


def fsdd_dir(download: bool = False, progress: bool = True) -> Path:
    """The folder of FSDD recordings: $TLKIT_FSDD_DIR, else the course cache, else (download=True) fetch it.

    Raises FileNotFoundError (TLKIT_FSDD_DIR set but empty) or tlkit.download.OfflineError (no copy, no network).
    """
    env = os.environ.get(FSDD_ENV)
    if env:
        folder = Path(env).expanduser()
        if not _has_recordings(folder):
            raise FileNotFoundError(f"{FSDD_ENV}={env} holds no FSDD recordings (files like 0_george_0.wav); fix or unset it.")
        return folder
    folder = _cached_copy()
    if _has_recordings(folder) or not download:
        if not _has_recordings(folder):
            raise FileNotFoundError(f"No FSDD copy in {folder}; call fsdd_dir(download=True) or set {FSDD_ENV}.")
        return folder
    from tlkit.download import download_and_extract

    download_and_extract(FSDD_URL, sha256=None, dest_dir=cache_dir("datasets") / "fsdd", progress=progress,
                         hint="skip the real-speech section; everything else runs on synthetic speech")
    if FSDD_RECORDINGS_SHA256 is not None and recordings_digest(folder) != FSDD_RECORDINGS_SHA256:
        raise ValueError(f"The FSDD recordings in {folder} do not match the expected checksum; delete the folder and try again.")
    return folder


def fsdd_available(download: bool = True) -> bool:
    """True when the recordings are here (TLKIT_FSDD_DIR or the cache) or could be downloaded now; never raises."""
    from tlkit.download import DownloadError

    try:
        fsdd_dir(download=download, progress=False)
        return True
    except (OSError, DownloadError, ValueError):
        return False


def _file_table(folder: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(folder.glob("*.wav")):
        match = _NAME_RE.match(path.name)
        if match:
            digit, speaker, take = match.groups()
            rows.append({"digit": int(digit), "word": DIGIT_NAMES[int(digit)], "speaker": speaker, "take": int(take), "file": path.name})
    return pd.DataFrame(rows)


def load_fsdd(*, speakers: tuple[str, ...] | None = None, max_takes: int | None = None, clip_seconds: float = 1.0,
              sr: int = 16_000, download: bool = True, progress: bool = False) -> AudioClips:
    """FSDD as AudioClips: waveforms resampled to `sr`, silence trimmed, padded/cut to `clip_seconds`; label = digit.

    `speakers` keeps only those speakers; `max_takes` keeps takes 0..max_takes-1 of each (speaker, digit), for a
    quick subset. `.meta` has digit, word, speaker, take, file. Clips are cached as .npz after the first read.
    """
    from tqdm.auto import tqdm

    folder = fsdd_dir(download=download, progress=progress)
    table = _file_table(folder)
    if speakers is not None:
        unknown = sorted(set(speakers) - set(table.speaker))
        if unknown:
            raise ValueError(f"Unknown FSDD speakers {unknown}; choose from {sorted(table.speaker.unique())}.")
        table = table[table.speaker.isin(speakers)]
    if max_takes is not None:
        table = table[table["take"] < max_takes]
    table = table.sort_values(["speaker", "digit", "take"]).reset_index(drop=True)
    if table.empty:
        raise ValueError(f"No recordings selected in {folder}; check speakers/max_takes.")
    key = hashlib.sha256(json.dumps([str(folder.resolve()), table.file.tolist(), clip_seconds, sr]).encode()).hexdigest()[:12]
    path = cache_dir("datasets") / f"fsdd-{key}.npz"
    length = int(round(clip_seconds * sr))
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            clips = f["clips"]
    else:
        clips = np.zeros((len(table), length), np.float32)
        for i, name in enumerate(tqdm(table.file, desc="reading FSDD", disable=not progress)):
            audio, _ = load_audio(folder / name, sr=sr)
            clips[i] = pad_or_trim(trim_silence(audio), length)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, clips=clips)
        tmp.replace(path)
    labels = torch.tensor(table.digit.to_numpy(), dtype=torch.long)
    return AudioClips(torch.from_numpy(clips), labels, table, sr, info={"key": key, "folder": str(folder)})
