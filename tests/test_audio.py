"""tlkit.audio: loading, resampling, Whisper-compatible log-mels, MFCCs, AudioClips."""

import numpy as np
import pytest
import soundfile as sf
import torch

from tlkit.audio import AudioClips, load_audio, log_mel, mfcc, pad_or_trim, resample, trim_silence


def _tone(freq: float, seconds: float, sr: int) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def test_resample_changes_length_and_keeps_pitch():
    x = _tone(440, 1.0, 8000)
    y = resample(x, 8000, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    assert abs(_peak_hz(y, 16000) - 440) < 2
    assert len(resample(_tone(440, 1.0, 22050), 22050, 16000)) == 16000
    assert resample(torch.from_numpy(x), 8000, 8000).shape == x.shape


def test_resample_rejects_bad_rates():
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(10), 0, 16000)


def test_pad_or_trim_numpy_and_torch():
    x = np.ones(5, np.float32)
    assert pad_or_trim(x, 8).tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
    assert pad_or_trim(x, 3).shape == (3,)
    t = torch.ones(2, 5)
    assert pad_or_trim(t, 7).shape == (2, 7) and pad_or_trim(t, 7)[:, 5:].abs().sum() == 0


def test_trim_silence_cuts_leading_and_trailing_quiet():
    sr = 16000
    x = np.concatenate([np.zeros(sr // 2), _tone(300, 0.25, sr), np.zeros(sr // 2)]).astype(np.float32)
    y = trim_silence(x)
    assert 0.2 * sr <= len(y) <= 0.3 * sr


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 0.1 * np.sin(np.linspace(0, 20, 16000))).astype(np.float32)
    reference = WhisperFeatureExtractor()(x, sampling_rate=16000, return_tensors="np").input_features[0]
    ours = log_mel(np.pad(x, (0, 480000 - len(x)))).numpy()  # the extractor pads to 30 s
    assert ours.shape == reference.shape == (80, 3000)
    np.testing.assert_allclose(ours, reference, atol=1e-4)


def test_log_mel_shapes_unpadded_and_batched():
    x = _tone(440, 1.0, 16000)
    assert log_mel(x).shape == (80, 100)  # 100 frames per second, no padding to 30 s
    assert log_mel(torch.from_numpy(np.stack([x, x, x]))).shape == (3, 80, 100)
    with pytest.raises(ValueError, match="16000 Hz"):
        log_mel(x, sr=8000)


def test_mfcc_shape_and_energy_coefficient():
    loud, quiet = _tone(440, 1.0, 16000), 0.01 * _tone(440, 1.0, 16000)
    m_loud, m_quiet = mfcc(loud), mfcc(quiet)
    assert m_loud.shape == (13, 100)
    assert m_loud[0].mean() > m_quiet[0].mean()  # c0 tracks loudness


def test_load_audio_reads_and_resamples(tmp_path):
    path = tmp_path / "tone.wav"
    sf.write(path, np.stack([_tone(440, 0.5, 8000)] * 2, axis=1), 8000)  # stereo file
    x, sr = load_audio(path)
    assert sr == 8000 and x.shape == (4000,)
    y, sr16 = load_audio(path, sr=16000)
    assert sr16 == 16000 and y.shape == (8000,)
    with pytest.raises(FileNotFoundError, match="No audio file"):
        load_audio(tmp_path / "missing.wav")


def test_audio_clips_subset_keeps_metadata():
    import pandas as pd

    clips = AudioClips(torch.zeros(4, 10), torch.tensor([0, 1, 2, 3]), pd.DataFrame({"word": list("abcd")}))
    sub = clips.subset([3, 1])
    assert len(sub) == 2 and sub.labels.tolist() == [3, 1] and sub.meta.word.tolist() == ["d", "b"]
    x, y = sub[0]
    assert x.shape == (10,) and int(y) == 3
    with pytest.raises(ValueError, match="one label per clip"):
        AudioClips(torch.zeros(3, 10), torch.zeros(2))
