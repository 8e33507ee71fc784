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
