"""Sound as data: load, resample, pad or trim waveforms; Whisper-compatible log-mel spectrograms and MFCCs.

No torchaudio: files are read with soundfile, resampling is polyphase filtering (scipy), spectrograms are
`torch.stft` plus the mel filter bank of `transformers.audio_utils`. Taught in lesson 05 (speech transfer).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

WHISPER_SR = 16_000  # Whisper (and most speech models) hear 16 kHz mono
N_FFT = 400  # 25 ms window at 16 kHz
HOP_LENGTH = 160  # 10 ms hop: 100 frames per second
N_MELS = 80


def load_audio(path: str | Path, sr: int | None = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a sound file as float32 in [-1, 1] (mono by default); resample to `sr` if given. Returns (waveform, sr)."""
    import soundfile as sf  # imported here: only the audio lessons need it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No audio file at {path}; check the path (wav, flac and ogg are supported).")
    waveform, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    waveform = waveform.mean(axis=1) if mono else waveform.T
    if sr is not None and sr != file_sr:
        return resample(waveform, file_sr, sr), sr
    return np.ascontiguousarray(waveform), int(file_sr)


def resample(waveform: np.ndarray | torch.Tensor, orig_sr: int, target_sr: int) -> np.ndarray:
    """Change the sample rate with polyphase filtering (upsample by p, low-pass, downsample by q); last axis is time."""
    from scipy.signal import resample_poly

    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"Sample rates must be positive, got {orig_sr} -> {target_sr}.")
    x = waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else np.asarray(waveform)
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    g = math.gcd(int(orig_sr), int(target_sr))
    return resample_poly(x, int(target_sr) // g, int(orig_sr) // g, axis=-1).astype(np.float32)


def pad_or_trim(waveform: np.ndarray | torch.Tensor, length: int) -> np.ndarray | torch.Tensor:
    """Zero-pad at the end or cut to exactly `length` samples along the last axis (numpy in, numpy out; same for torch)."""
    n = waveform.shape[-1]
    if n >= length:
        return waveform[..., :length]
    if isinstance(waveform, torch.Tensor):
        return torch.nn.functional.pad(waveform, (0, length - n))
    return np.pad(waveform, [(0, 0)] * (waveform.ndim - 1) + [(0, length - n)])


def trim_silence(waveform: np.ndarray, threshold_db: float = -40.0, frame: int = 160) -> np.ndarray:
    """Cut leading and trailing frames quieter than `threshold_db` below the loudest frame (numpy, 1-D)."""
    n_frames = max(1, len(waveform) // frame)
    frames = waveform[: n_frames * frame].reshape(n_frames, frame)
    rms_db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-10)
    loud = np.flatnonzero(rms_db > rms_db.max() + threshold_db)
    if len(loud) == 0:
        return waveform
    return waveform[loud[0] * frame : (loud[-1] + 1) * frame]


@lru_cache(maxsize=8)
def _mel_filters(n_mels: int, n_fft: int, sr: int) -> torch.Tensor:
    """The Slaney-style mel filter bank Whisper uses, as a (n_fft // 2 + 1, n_mels) float32 tensor (cached)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                         max_frequency=sr / 2, sampling_rate=sr, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(fb.astype(np.float32))


def _as_batch(waveform: np.ndarray | torch.Tensor, device: torch.device | str | None) -> tuple[torch.Tensor, bool]:
    x = torch.as_tensor(waveform, dtype=torch.float32, device=device)
    if x.ndim not in (1, 2):
        raise ValueError(f"Expected a waveform of shape (samples,) or (batch, samples), got {tuple(x.shape)}.")
    return (x if x.ndim == 2 else x[None]), x.ndim == 1


def mel_power(waveform: np.ndarray | torch.Tensor, sr: int = WHISPER_SR, n_mels: int = N_MELS, n_fft: int = N_FFT,
              hop_length: int = HOP_LENGTH, device: torch.device | str | None = None) -> torch.Tensor:
    """Mel-filtered power spectrogram (..., n_mels, frames): |STFT|^2 through the mel filter bank, no log yet."""
    x, single = _as_batch(waveform, device)
    window = torch.hann_window(n_fft, device=x.device)
    stft = torch.stft(x, n_fft, hop_length, window=window, center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :-1].abs() ** 2  # Whisper drops the last frame: 100 frames per second exactly
    mel = _mel_filters(n_mels, n_fft, sr).to(x.device).T @ power
    return mel[0] if single else mel


def log_mel(waveform: np.ndarray | torch.Tensor, sr: int = WHISPER_SR, n_mels: int = N_MELS,
            device: torch.device | str | None = None) -> torch.Tensor:
    """Whisper's log-mel spectrogram: (n_mels, frames) or (batch, n_mels, frames), 100 frames per second at 16 kHz.

    Same recipe as `WhisperFeatureExtractor` without the padding to 30 s: log10 of the mel power (clamped at
    1e-10), floored at 8 (i.e. 80 dB) below each clip's maximum, then scaled to roughly [-1, 1] by (x + 4) / 4.
    """
    if sr != WHISPER_SR:
        raise ValueError(f"Whisper's log-mel expects {WHISPER_SR} Hz audio, got {sr} Hz; call tlkit.audio.resample first.")
    logspec = torch.log10(mel_power(waveform, sr, n_mels, device=device).clamp(min=1e-10))
    peak = logspec.amax(dim=(-2, -1), keepdim=True)
    return (torch.maximum(logspec, peak - 8.0) + 4.0) / 4.0


@lru_cache(maxsize=8)
def _dct_matrix(n_mfcc: int, n_mels: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix (n_mfcc, n_mels): cepstral coefficients from log-mel energies."""
    n = torch.arange(n_mels, dtype=torch.float64)
    k = torch.arange(n_mfcc, dtype=torch.float64)[:, None]
    dct = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    dct[0] /= math.sqrt(2.0)
    return dct.float()


def mfcc(waveform: np.ndarray | torch.Tensor, sr: int = WHISPER_SR, n_mfcc: int = 13, n_mels: int = 40,
         device: torch.device | str | None = None) -> torch.Tensor:
    """Mel-frequency cepstral coefficients (n_mfcc, frames), the classic hand-made speech feature (baseline).

    Log (dB) mel energies with 40 mels, then a DCT that decorrelates them; 25 ms windows, 10 ms hop at 16 kHz.
    """
    mel = mel_power(waveform, sr, n_mels, n_fft=int(0.025 * sr), hop_length=int(0.010 * sr), device=device)
    db = 10.0 * torch.log10(mel.clamp(min=1e-10))
    return _dct_matrix(n_mfcc, n_mels).to(db.device) @ db


class AudioClips(Dataset):
    """Fixed-length waveforms (N, samples) with integer labels and one metadata row per clip; items are (waveform, label).

    `meta` is a pandas DataFrame (one row per clip), `info` a dict of facts about the whole set (e.g. its cache key).
    """

    def __init__(self, waveforms: torch.Tensor, labels: torch.Tensor, meta: Any = None, sr: int = WHISPER_SR,
                 info: dict | None = None):
        if len(waveforms) != len(labels):
            raise ValueError(f"Got {len(waveforms)} waveforms but {len(labels)} labels; pass one label per clip.")
        self.waveforms, self.labels, self.meta, self.sr, self.info = waveforms, labels, meta, sr, dict(info or {})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.waveforms[i], self.labels[i]

    def subset(self, idx: Sequence[int] | np.ndarray) -> "AudioClips":
        """A new AudioClips holding only the clips at `idx` (metadata rows follow)."""
        idx = np.asarray(idx, dtype=np.int64)
        meta = self.meta.iloc[idx].reset_index(drop=True) if self.meta is not None else None
        return AudioClips(self.waveforms[idx], self.labels[idx], meta, self.sr, self.info)
