"""tlkit.data.keywords: eSpeak NG through ctypes, deterministic rendering, voice-disjoint splits, the disk cache."""

import numpy as np
import pytest

from tlkit.data import keywords as K

SMALL = dict(words=("yes", "no", "stop"), accents=("en-us", "en", "de", "fr", "es"), variants=("m3", "f2"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))


def test_espeak_speaks_and_fresh_engines_agree():
    a, b = K.ESpeak(), K.ESpeak()
    first = [a.say("left", "en-us+m3", rate=150, pitch=40)[0] for _ in range(2)]
    second = [b.say("left", "en-us+m3", rate=150, pitch=40)[0] for _ in range(2)]
    samples, sr = a.say("left", "de+f2")
    assert sr == 22050 and samples.dtype == np.int16 and 0.2 * sr < len(samples) < 1.5 * sr
    assert all(np.array_equal(x, y) for x, y in zip(first, second))  # same calls on a fresh engine = same audio
    with pytest.raises(ValueError, match="no voice"):
        a.say("left", "xx-nonexistent")


def test_rate_and_pitch_change_the_audio():
    engine = K.ESpeak()
    slow, _ = engine.say("seven", "en-us", rate=120)
    fast, _ = engine.say("seven", "en-us", rate=260)
    assert len(slow) > 1.3 * len(fast)


def test_synthesize_returns_float_audio_at_16k():
    x = K.synthesize("hello", voice="en", sr=16000)
    assert x.dtype == np.float32 and 0.2 * 16000 < len(x) < 2 * 16000 and 0.01 < np.abs(x).max() <= 1.0


def test_load_keywords_holds_out_whole_accents(tmp_path):
    data = K.load_keywords(**SMALL, test_groups=["de"], val_groups=["fr"])
    assert data.classes == ["yes", "no", "stop"] and len(data.train) + len(data.val) + len(data.test) == 3 * 5 * 2
    train_accents, test_accents = set(data.train.meta.accent), set(data.test.meta.accent)
    assert test_accents == {"de"} and not train_accents & test_accents and not set(data.train.meta.voice) & set(data.test.meta.voice)
    x, y = data.train[0]
    assert x.shape == (16000,) and x.dtype.is_floating_point and data.classes[int(y)] == data.train.meta.word[0]
    assert {"word", "accent", "language", "variant", "voice", "rate", "pitch"} <= set(data.train.meta.columns)
    assert list(tmp_path.glob("datasets/keywords-*.npz")), "the rendered clips should be cached on disk"


def test_random_group_split_is_voice_disjoint_and_seeded():
    a = K.load_keywords(**SMALL, group_by="voice", seed=1)
    b = K.load_keywords(**SMALL, group_by="voice", seed=1)
    assert not set(a.train.meta.voice) & set(a.test.meta.voice) and not set(a.val.meta.voice) & set(a.test.meta.voice)
    assert a.info["groups"] == b.info["groups"]


def test_rendering_is_deterministic_and_cache_reads_back_the_same(tmp_path):
    first = K.load_keywords(**SMALL)
    for f in tmp_path.glob("datasets/keywords-*.npz"):
        f.unlink()
    second = K.load_keywords(**SMALL)  # rendered again from scratch
    third = K.load_keywords(**SMALL)  # from the cache
    for split in ("train", "val", "test"):
        assert np.array_equal(getattr(first, split).waveforms.numpy(), getattr(second, split).waveforms.numpy())
        assert np.array_equal(getattr(second, split).waveforms.numpy(), getattr(third, split).waveforms.numpy())
        assert getattr(first, split).meta.equals(getattr(third, split).meta)
    assert (first.train.waveforms.abs().amax(dim=1) > 0.1).all(), "every clip should contain speech"


def test_accent_target_and_argument_errors():
    data = K.load_keywords(**SMALL, target="accent", group_by="variant", test_groups=["f2"], val_groups=[])
    assert data.classes == sorted(SMALL["accents"]) and set(data.test.meta.variant) == {"f2"}
    assert set(data.train.meta.variant) == {"m3"}
    with pytest.raises(ValueError, match="unseen"):
        K.load_keywords(**SMALL, target="accent", group_by="accent")
    with pytest.raises(ValueError, match="Unknown accents"):
        K.load_keywords(words=("yes",), accents=("xx",), variants=("m1",))
    with pytest.raises(ValueError, match="not in the data"):
        K.load_keywords(**SMALL, test_groups=["it"])


def test_keyword_clips_index_every_clip_once():
    clips = K.keyword_clips(**SMALL)
    assert len(clips) == 3 * 5 * 2 and clips.meta["clip"].tolist() == list(range(30))
    assert [clips.info["words"][int(y)] for y in clips.labels] == clips.meta.word.tolist()
    data = K.load_keywords(**SMALL, test_groups=["de"], val_groups=["fr"])
    for split in (data.train, data.val, data.test):  # a split's rows point back into the full set
        assert np.array_equal(split.waveforms.numpy(), clips.waveforms[split.meta["clip"].to_numpy().copy()].numpy())
