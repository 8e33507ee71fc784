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
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tlkit._support.atomic import atomic_write
from tlkit.audio import AudioClips, load_audio, pad_or_trim, trim_silence
from tlkit.settings import cache_dir

FSDD_ENV = "TLKIT_FSDD_DIR"
FSDD_VERSION = "v1.0.10"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/{FSDD_VERSION}.tar.gz"
# GitHub makes tag archives on the fly and their bytes (so their SHA-256) have changed before, so no archive digest
# can be pinned. We check what matters instead, the recordings, before the extracted folder is kept: this digest
# covers every file name and content (see `recordings_digest`). It is derived from data/fsdd/SHA256SUMS, one
# SHA-256 per WAV file, made from the recordings at tag v1.0.10 (tests/test_fsdd.py recomputes it from the manifest).
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


def _manifest() -> dict[str, str]:
    """{file name: SHA-256} from data/fsdd/SHA256SUMS when this is a checkout of the course ({} when installed)."""
    path = Path(__file__).resolve().parents[2] / "data" / "fsdd" / "SHA256SUMS"
    if not path.is_file():
        return {}
    return {line.split()[1].split("/")[-1]: line.split()[0] for line in path.read_text().splitlines() if line.strip()}


def _verify_download(extracted: Path) -> None:
    """Raise ValueError (naming up to 5 files that differ) unless the extracted recordings are exactly FSDD v1.0.10's."""
    folder = extracted / _cached_copy().relative_to(_cached_copy().parents[1])
    if recordings_digest(folder) == FSDD_RECORDINGS_SHA256:
        return
    expected = _manifest()
    found = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.wav")}
    differ = sorted(n for n in set(expected) | set(found) if expected.get(n) != found.get(n))[:5] if expected else []
    detail = f" (e.g. {', '.join(differ)})" if differ else ""
    raise ValueError(f"The downloaded FSDD recordings do not match the pinned SHA-256 of tag {FSDD_VERSION}{detail}; "
                     f"nothing was kept: try again later, or set {FSDD_ENV} to a folder of the recordings.")


def _cached_copy() -> Path:
    return cache_dir("datasets") / "fsdd" / f"free-spoken-digit-dataset-{FSDD_VERSION.lstrip('v')}" / "recordings"


def _has_recordings(folder: Path) -> bool:
    return folder.is_dir() and any(_NAME_RE.match(p.name) for p in folder.glob("*.wav"))


def fsdd_dir(download: bool = False, progress: bool = True) -> Path:
    """The folder of FSDD recordings: $TLKIT_FSDD_DIR, else the course cache, else (download=True) fetch it.

    A download is kept only if its recordings match the pinned digest (ValueError otherwise). Raises
    FileNotFoundError (TLKIT_FSDD_DIR set but empty) or tlkit.settings.OfflineError (no copy, no network).
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
    from tlkit._support.fetch import download_and_extract

    with warnings.catch_warnings():  # "downloaded without a checksum": the recordings are checked instead (above)
        warnings.filterwarnings("ignore", message="downloaded .* without a checksum")
        download_and_extract(FSDD_URL, sha256=None, dest_dir=cache_dir("datasets") / "fsdd", progress=progress,
                             hint="skip the real-speech section; everything else runs on synthetic speech",
                             max_bytes=64 << 20, verify=_verify_download)
    return folder


def fsdd_available(download: bool = True) -> bool:
    """True when the recordings are here (TLKIT_FSDD_DIR or the cache) or could be downloaded now; never raises."""
    from tlkit._support.fetch import DownloadError

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


def _read_clips(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """Cached clips of that shape, or None (after a warning if the file is damaged)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            clips = f["clips"]
        if clips.shape == shape:
            return clips
        reason = f"it holds {clips.shape} clips, not {shape}"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        reason = f"it is damaged ({type(err).__name__}: {err})"
    warnings.warn(f"Ignoring the FSDD clip cache {path.name}: {reason}; reading the recordings again.", stacklevel=3)
    path.unlink(missing_ok=True)
    return None


def load_fsdd(*, speakers: tuple[str, ...] | None = None, max_takes: int | None = None, clip_seconds: float = 1.0,
              sr: int = 16_000, download: bool = True, progress: bool = False) -> AudioClips:
    """FSDD as AudioClips: waveforms resampled to `sr`, silence trimmed, padded/cut to `clip_seconds`; label = digit.

    `speakers` keeps only those speakers; `max_takes` keeps takes 0..max_takes-1 of each (speaker, digit), for a
    quick subset. `.meta` has digit, word, speaker, take, file. Clips are cached as .npz after the first read, under
    a key that includes the SHA-256 of every selected file, so a changed recording is read again; a damaged cache
    file is read again too, with a warning.
    """
    from tlkit.progress import progress_bar

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
    contents = [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in table.file]
    key = hashlib.sha256(json.dumps([table.file.tolist(), contents, clip_seconds, sr]).encode()).hexdigest()[:12]
    path = cache_dir("datasets") / f"fsdd-{key}.npz"
    length = int(round(clip_seconds * sr))
    clips = _read_clips(path, (len(table), length))
    if clips is None:
        clips = np.zeros((len(table), length), np.float32)
        for i, name in enumerate(progress_bar(table.file, desc="reading FSDD", enabled=progress)):
            audio, _ = load_audio(folder / name, sr=sr)
            clips[i] = pad_or_trim(trim_silence(audio), length)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, clips=clips)

        try:
            atomic_write(path, write)
        except OSError as err:
            warnings.warn(f"Could not cache the FSDD clips in {path} ({err}); they will be read again next time.", stacklevel=2)
    labels = torch.tensor(table.digit.to_numpy(), dtype=torch.long)
    return AudioClips(torch.from_numpy(clips), labels, table, sr, info={"key": key, "folder": str(folder)})
