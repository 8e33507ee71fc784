"""tlkit.data.fsdd: a tiny fake FSDD folder written here, plus the real one when TLKIT_FSDD_DIR points at it."""

import os

import numpy as np
import pytest
import soundfile as sf

from tlkit.data import fsdd

REAL_DIR = os.environ.get("TLKIT_FSDD_DIR")


def _fake_fsdd(folder, speakers=("alice", "bob"), digits=(0, 1, 2), takes=3):
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.4 * 8000)) / 8000
    for d in digits:
        for s in speakers:
            for k in range(takes):
                tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * d) * t)
                sf.write(folder / f"{d}_{s}_{k}.wav", np.concatenate([np.zeros(800), tone, np.zeros(800)]), 8000, subtype="PCM_16")
    (folder / "README.txt").write_text("not a recording")
    return folder


@pytest.fixture
def fake_dir(tmp_path, monkeypatch):
    folder = _fake_fsdd(tmp_path / "recordings")
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(fsdd.FSDD_ENV, str(folder))
    return folder


def test_loads_a_prefilled_folder(fake_dir):
    assert fsdd.fsdd_available() and fsdd.fsdd_dir() == fake_dir
    clips = fsdd.load_fsdd()
    assert len(clips) == 3 * 2 * 3 and clips.waveforms.shape == (18, 16000) and clips.sr == 16000
    assert sorted(set(clips.labels.tolist())) == [0, 1, 2]
    assert set(clips.meta.speaker) == {"alice", "bob"} and clips.meta.word[clips.labels.tolist().index(2)] == "two"
    speech = clips.waveforms[0]
    assert speech[:1000].abs().max() > 0.1, "leading silence should be trimmed"
    assert speech[8000:].abs().max() == 0, "short clips are zero-padded to one second"


def test_subsets_and_the_disk_cache(fake_dir, tmp_path):
    clips = fsdd.load_fsdd(speakers=("bob",), max_takes=2)
    assert len(clips) == 3 * 2 and set(clips.meta.speaker) == {"bob"} and clips.meta["take"].max() == 1
    assert list((tmp_path / "cache" / "datasets").glob("fsdd-*.npz"))
    again = fsdd.load_fsdd(speakers=("bob",), max_takes=2)
    assert np.array_equal(clips.waveforms.numpy(), again.waveforms.numpy())
    with pytest.raises(ValueError, match="Unknown FSDD speakers"):
        fsdd.load_fsdd(speakers=("carol",))


def test_absent_data_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(fsdd.FSDD_ENV, str(tmp_path / "empty"))
    assert fsdd.fsdd_available() is False
    with pytest.raises(FileNotFoundError, match="TLKIT_FSDD_DIR"):
        fsdd.fsdd_dir()
    monkeypatch.delenv(fsdd.FSDD_ENV)
    monkeypatch.setenv("TLKIT_OFFLINE", "1")  # no copy and no network: False, quickly, without touching the network
    assert fsdd.fsdd_available() is False


def test_recordings_digest_covers_names_and_contents(tmp_path):
    folder = _fake_fsdd(tmp_path / "a", speakers=("alice",), digits=(0,), takes=2)
    first = fsdd.recordings_digest(folder)
    assert first == fsdd.recordings_digest(folder) and len(first) == 64
    (folder / "0_alice_1.wav").write_bytes(b"changed")
    assert fsdd.recordings_digest(folder) != first


@pytest.mark.skipif(not REAL_DIR, reason="TLKIT_FSDD_DIR is not set (the real recordings are optional)")
def test_real_fsdd_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    table = fsdd._file_table(fsdd.fsdd_dir())
    assert len(table) == fsdd.FSDD_NUM_FILES and set(table.speaker) == set(fsdd.SPEAKERS)
    clips = fsdd.load_fsdd(max_takes=2)
    assert len(clips) == 6 * 10 * 2 and clips.waveforms.abs().amax(dim=1).min() > 0.01


def test_pinned_digest_matches_the_committed_manifest():
    """FSDD_RECORDINGS_SHA256 is recomputed from data/fsdd/SHA256SUMS, the per-file manifest in the repository."""
    import hashlib
    from pathlib import Path

    manifest = Path(__file__).resolve().parents[1] / "data" / "fsdd" / "SHA256SUMS"
    rows = sorted((line.split()[1].split("/")[-1], line.split()[0]) for line in manifest.read_text().splitlines() if line.strip())
    assert len(rows) == fsdd.FSDD_NUM_FILES
    digest = hashlib.sha256()
    for name, file_hash in rows:
        digest.update(f"{name}:{file_hash}\n".encode())
    assert digest.hexdigest() == fsdd.FSDD_RECORDINGS_SHA256


def test_the_clip_cache_notices_a_changed_recording(fake_dir):
    """Before: the cache key named only the folder and file names, so a re-recorded file returned the old clip."""
    first = fsdd.load_fsdd(speakers=("alice",), max_takes=1)
    t = np.arange(4000) / 8000
    sf.write(fake_dir / "1_alice_0.wav", 0.5 * np.sin(2 * np.pi * 1234 * t), 8000, subtype="PCM_16")  # same name, new take
    second = fsdd.load_fsdd(speakers=("alice",), max_takes=1)
    i = second.meta.file.tolist().index("1_alice_0.wav")
    assert not np.array_equal(first.waveforms[i].numpy(), second.waveforms[i].numpy())
    others = [j for j in range(len(second)) if j != i]
    assert np.array_equal(first.waveforms[others].numpy(), second.waveforms[others].numpy())


def test_a_damaged_clip_cache_is_explained_and_read_again(fake_dir, tmp_path):
    """Before: np.load raised on a cut-off .npz and load_fsdd crashed."""
    good = fsdd.load_fsdd(max_takes=1)
    (cache,) = (tmp_path / "cache" / "datasets").glob("fsdd-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.warns(UserWarning, match="damaged.*reading the recordings again"):
        again = fsdd.load_fsdd(max_takes=1)
    assert np.array_equal(good.waveforms.numpy(), again.waveforms.numpy())


def test_a_download_is_kept_only_if_its_recordings_match(tmp_path, monkeypatch):
    """The archive has no stable digest, so the recordings are checked, before the folder is kept."""
    from tlkit._support import fetch

    monkeypatch.delenv(fsdd.FSDD_ENV, raising=False)
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    seen = {}

    def fake_download_and_extract(url, **kwargs):
        seen.update(kwargs, url=url)
        staging = tmp_path / "staging"
        _fake_fsdd(staging / "free-spoken-digit-dataset-1.0.10" / "recordings", speakers=("george",), digits=(0,), takes=1)
        kwargs["verify"](staging)  # what download_and_extract does before it keeps the folder

    monkeypatch.setattr(fetch, "download_and_extract", fake_download_and_extract)
    with pytest.raises(ValueError, match=r"do not match the pinned SHA-256 of tag v1\.0\.10.*0_george_0\.wav.*nothing was kept"):
        fsdd.fsdd_dir(download=True, progress=False)
    assert seen["url"] == fsdd.FSDD_URL and seen["sha256"] is None and seen["max_bytes"] < 1 << 30
    assert not fsdd._cached_copy().exists()


@pytest.mark.skipif(not REAL_DIR, reason="TLKIT_FSDD_DIR is not set (the real recordings are optional)")
def test_the_real_recordings_pass_the_download_check(tmp_path):
    staging = tmp_path / "free-spoken-digit-dataset-1.0.10"
    staging.mkdir()
    (staging / "recordings").symlink_to(REAL_DIR, target_is_directory=True)
    fsdd._verify_download(tmp_path)  # no error: the manifest and the published recordings agree
