"""Spoken keywords synthesised with eSpeak NG: many voices, accents, speeds and pitches, no download.

The eSpeak NG shared library ships in the `espeakng-loader` wheel; we call it through ctypes (synchronous
output, a callback that collects the samples). A *voice* is an accent (a language voice such as "en-gb-scotland"
or "de", which reads English words with its own rules) plus a timbre variant ("m3", "f2", "klatt", ...).
`load_keywords` renders every (word, voice) once, caches the clips on disk (.npz, no pickle), and splits by
group so that test voices are never heard in training. Taught in lesson 05 (speech transfer).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from tlkit.audio import AudioClips, resample, trim_silence
from tlkit.data.splits import DataSplits, stratified_split
from tlkit.settings import cache_dir

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# accent (eSpeak language voice) -> readable name. The non-English voices read the English words with their own
# spelling and phonetics: a strong foreign accent.
ACCENTS = {
    "en-us": "English (America)", "en": "English (Great Britain)", "en-gb-scotland": "English (Scotland)",
    "en-gb-x-rp": "English (Received Pronunciation)", "en-gb-x-gbclan": "English (Lancaster)",
    "en-gb-x-gbcwmd": "English (West Midlands)", "en-029": "English (Caribbean)", "en-us-nyc": "English (New York City)",
    "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "nl": "Dutch", "pt": "Portuguese",
    "pl": "Polish", "sv": "Swedish", "fi": "Finnish", "hu": "Hungarian", "cs": "Czech", "ro": "Romanian",
    "id": "Indonesian", "sw": "Swahili", "af": "Afrikaans", "da": "Danish",
}
# timbre variants (espeak-ng-data/voices/!v): male, female and a few characterful ones
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "klatt", "klatt3", "Alex", "Annie", "Gene", "Lee", "Mike", "aunty", "grandpa", "linda", "max", "steph")
RATE_RANGE = (130, 230)  # words per minute (eSpeak's default is 175)
PITCH_RANGE = (25, 75)  # eSpeak pitch 0-100 (default 50)
CACHE_VERSION = 2

# eSpeak's C API (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class ESpeak:
    """A private instance of the eSpeak NG library: `say(text, voice, rate, pitch)` -> (int16 samples, sample rate).

    eSpeak keeps some waveform state (phase, pitch flutter) from one utterance to the next, and some voices draw
    random numbers from the C library's rand(). Loading a private copy of the library gives a clean state, and
    `say` seeds rand() (`seed`) before each utterance: the same calls on a fresh ESpeak give the same audio, which
    is what makes the cached dataset reproducible.
    """

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as err:
            raise ImportError("eSpeak NG is missing; install it with: pip install --no-deps espeakng-loader==0.2.4") from err
        # Loading scipy.signal changes the CPU's floating-point flags (denormal handling), and eSpeak's output depends
        # on them: import it before any synthesis so every clip is rendered under the same flags.
        import scipy.signal  # noqa: F401
        with tempfile.TemporaryDirectory() as tmp:  # a copy under a new name = a fresh, independent library state
            private = Path(tmp) / Path(espeakng_loader.get_library_path()).name
            shutil.copy(espeakng_loader.get_library_path(), private)
            self.lib = ctypes.CDLL(str(private))
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                          ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sr = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if self.sr <= 0:
            raise RuntimeError(f"espeak_Initialize failed (returned {self.sr}); reinstall espeakng-loader==0.2.4.")
        self._libc = ctypes.CDLL(ctypes.util.find_library("c")) if os.name == "posix" else None  # for srand()
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference: the C library calls it
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, samples: ctypes.POINTER(ctypes.c_short), n: int, events: int) -> int:
        if samples and n > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(n,)).copy())
        return 0  # 0 = go on synthesising

    def say(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, seed: int = 0) -> tuple[np.ndarray, int]:
        """Synthesise `text` with `voice` ("accent" or "accent+variant"); returns (int16 samples, sample rate)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"eSpeak has no voice {voice!r}; use an accent from tlkit.data.keywords.ACCENTS, optionally '+variant'.")
        self.lib.espeak_SetParameter(_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        if self._libc is not None:
            self._libc.srand(ctypes.c_uint(seed))  # some voices add noise with rand(), shared by the whole process
        self._chunks = []
        data = text.encode("utf-8") + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        return (np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)), self.sr


def synthesize(text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50, sr: int = 16_000,
               engine: ESpeak | None = None) -> np.ndarray:
    """Speak `text` and return float32 samples in [-1, 1] at `sr` (eSpeak renders 22.05 kHz; we resample)."""
    engine = engine or ESpeak()
    samples, native_sr = engine.say(text, voice, rate, pitch)
    return resample(samples.astype(np.float32) / 32768.0, native_sr, sr)


@dataclass(frozen=True)
class KeywordSpec:
    """Everything that determines the rendered clips (its hash names the cache file)."""

    words: tuple[str, ...]
    accents: tuple[str, ...]
    variants: tuple[str, ...]
    repeats: int = 1
    clip_seconds: float = 1.0
    sr: int = 16_000
    via_sr: int | None = None
    snr_db: tuple[float, float] = (15.0, 40.0)
    seed: int = 0

    def key(self) -> str:
        """Short hash of the spec, used for the cache file and for feature caches built on top."""
        text = json.dumps({**asdict(self), "version": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def _place(word: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Put a trimmed word at a random offset inside a clip of `length` samples (cut if longer)."""
    word = word[:length]
    start = int(rng.integers(0, length - len(word) + 1))
    clip = np.zeros(length, np.float32)
    clip[start : start + len(word)] = word
    return clip


def _to_clip(samples: np.ndarray, native_sr: int, spec: KeywordSpec, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """eSpeak's int16 output -> one int16 clip: resample (via `via_sr`), trim, random gain and offset, noise; + its SNR."""
    audio = samples.astype(np.float32) / 32768.0
    if spec.via_sr:  # e.g. 8000: keep only the bandwidth of telephone-quality recordings
        audio, native_sr = resample(audio, native_sr, spec.via_sr), spec.via_sr
    audio = trim_silence(resample(audio, native_sr, spec.sr))
    audio = audio / (np.abs(audio).max() + 1e-9) * rng.uniform(0.3, 0.9)
    length = int(round(spec.clip_seconds * spec.sr))
    clip = _place(audio, length, rng)
    snr = float(rng.uniform(*spec.snr_db))
    noise_rms = np.sqrt(np.mean(audio**2)) / 10 ** (snr / 20)
    clip = np.clip(clip + rng.normal(0, noise_rms, length).astype(np.float32), -1, 1)
    return np.round(clip * 32767).astype(np.int16), snr


def render_keywords(spec: KeywordSpec, progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Render every (accent, variant, word, repeat) of `spec`: int16 clips (N, samples) and one metadata row each.

    Per clip: random rate and pitch, silence trimmed, random gain and start offset, white noise at a random SNR.
    """
    from tlkit.progress import progress_bar

    unknown = [a for a in spec.accents if a not in ACCENTS]
    if unknown:
        raise ValueError(f"Unknown accents {unknown}; choose from {sorted(ACCENTS)}.")
    engine, rng = ESpeak(), np.random.default_rng(spec.seed)
    grid = [(a, v, w, r) for a in spec.accents for v in spec.variants for w in spec.words for r in range(spec.repeats)]
    clips, rows = np.zeros((len(grid), int(round(spec.clip_seconds * spec.sr))), np.int16), []
    for i, (accent, variant, word, rep) in enumerate(progress_bar(grid, desc="synthesising", enabled=progress)):
        rate, pitch = int(rng.integers(*RATE_RANGE, endpoint=True)), int(rng.integers(*PITCH_RANGE, endpoint=True))
        clips[i], snr = _to_clip(*engine.say(word, f"{accent}+{variant}", rate, pitch, seed=i), spec, rng)
        rows.append({"word": word, "accent": accent, "language": ACCENTS[accent], "variant": variant,
                     "voice": f"{accent}+{variant}", "repeat": rep, "rate": rate, "pitch": pitch, "snr_db": round(snr, 1)})
    return clips, pd.DataFrame(rows)


def _cached_render(spec: KeywordSpec, progress: bool) -> tuple[np.ndarray, pd.DataFrame, Path]:
    """Render once, then read the .npz cache (plain arrays, loaded with allow_pickle=False)."""
    path = cache_dir("datasets") / f"keywords-{spec.key()}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                clips = f["clips"]
                meta = pd.DataFrame({c: f[f"meta_{c}"] for c in json.loads(str(f["columns"]))})
            return clips, meta, path
        except (OSError, KeyError, ValueError):  # unreadable or from an older version: render again
            path.unlink()
    clips, meta = render_keywords(spec, progress=progress)
    arrays = {f"meta_{c}": np.asarray(meta[c].tolist()) for c in meta.columns}  # str -> fixed-width unicode, no objects
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, clips=clips, columns=np.array(json.dumps(list(meta.columns))), **arrays)
    tmp.replace(path)
    return clips, meta, path


def keyword_clips(words: Sequence[str] = KEYWORDS, *, accents: Sequence[str] | None = None,
                  variants: Sequence[str] | None = None, repeats: int = 1, clip_seconds: float = 1.0,
                  via_sr: int | None = None, seed: int = 0, progress: bool = False) -> AudioClips:
    """Every rendered clip, unsplit, as AudioClips (label = index in `words`), rendered once and then read from disk.

    `.meta` has one row per clip (word, accent, language, variant, voice, rate, pitch, snr_db, and `clip`, the row's
    position in this set: use it to index features computed once for all clips); `.info["key"]` names the set.
    """
    spec = KeywordSpec(tuple(words), tuple(accents or ACCENTS), tuple(variants or VARIANTS), repeats, clip_seconds,
                       16_000, via_sr, seed=seed)
    clips, meta, path = _cached_render(spec, progress)
    meta = meta.assign(clip=np.arange(len(meta)))
    labels = torch.tensor(meta.word.map({w: i for i, w in enumerate(spec.words)}).to_numpy(dtype=np.int64))
    info = {"key": spec.key(), "cache": str(path), "words": list(spec.words), "n_voices": len(spec.accents) * len(spec.variants)}
    return AudioClips(torch.from_numpy(clips.astype(np.float32) / 32767.0), labels, meta, spec.sr, info)


def load_keywords(words: Sequence[str] = KEYWORDS, *, accents: Sequence[str] | None = None,
                  variants: Sequence[str] | None = None, repeats: int = 1, target: str = "word",
                  group_by: str | None = "accent", test_groups: Sequence[str] | None = None,
                  val_groups: Sequence[str] | None = None, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                  clip_seconds: float = 1.0, via_sr: int | None = None, seed: int = 0, progress: bool = False) -> DataSplits:
    """Synthetic spoken keywords as DataSplits of AudioClips (16 kHz float waveforms, labels, `.meta` rows).

    target: what to predict, "word" (keyword spotting), "accent" or "voice". group_by: "accent", "variant" or
    "voice" keeps every clip of a group in one split (test voices are never heard in training), None splits clips
    at random (closed-set voice identification). test_groups/val_groups name the held-out groups explicitly,
    otherwise whole groups are drawn at random in `fractions`.
    """
    if target not in ("word", "accent", "voice"):
        raise ValueError(f"target must be 'word', 'accent' or 'voice', got {target!r}.")
    if group_by not in ("accent", "variant", "voice", None):
        raise ValueError(f"group_by must be 'accent', 'variant', 'voice' or None, got {group_by!r}.")
    if group_by is not None and group_by == target:
        raise ValueError(f"Cannot predict {target!r} while holding out whole {group_by}s: the test classes would be unseen; pick another group_by.")
    full = keyword_clips(words, accents=accents, variants=variants, repeats=repeats, clip_seconds=clip_seconds,
                         via_sr=via_sr, seed=seed, progress=progress)
    meta = full.meta
    classes = list(words) if target == "word" else sorted(meta[target].unique())
    full.labels = torch.tensor(meta[target].map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64))
    if group_by is not None and test_groups is not None:
        splits = _explicit_split(meta[group_by].to_numpy(), test_groups, val_groups, fractions, seed)
    else:
        groups = None if group_by is None else meta[group_by].to_numpy()
        splits = stratified_split(full.labels.numpy(), fractions, seed=seed, groups=groups)
    train, val, test = (full.subset(idx) for idx in splits)
    held = {n: sorted(s.meta[group_by].unique()) for n, s in zip(("train", "val", "test"), (train, val, test))} if group_by else {}
    info = {**full.info, "sample_rate": full.sr, "target": target, "group_by": group_by, "groups": held}
    return DataSplits(train, val, test, classes, info)


def _explicit_split(groups: np.ndarray, test_groups: Sequence[str], val_groups: Sequence[str] | None,
                    fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices for train/val/test when the test (and optionally val) groups are named; val drawn from the rest if not."""
    missing = sorted(set(test_groups) - set(groups)) + sorted(set(val_groups or ()) - set(groups))
    if missing:
        raise ValueError(f"Held-out groups {missing} are not in the data; choose from {sorted(set(groups))}.")
    rest = np.array(sorted(set(groups) - set(test_groups)))
    if val_groups is None:
        n_val = max(1, int(round(fractions[1] / max(fractions[0] + fractions[1], 1e-9) * len(rest))))
        val_groups = np.random.default_rng(seed).permutation(rest)[:n_val].tolist()
    test = np.flatnonzero(np.isin(groups, list(test_groups)))
    val = np.flatnonzero(np.isin(groups, list(val_groups)) & ~np.isin(groups, list(test_groups)))
    train = np.setdiff1d(np.arange(len(groups)), np.concatenate([test, val]))
    return train, val, test
