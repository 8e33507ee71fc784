"""tlkit.data.reviews on a small fake vaderSentiment source archive built here: no network, pip is simulated."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tlkit.data import reviews
from tlkit.download import ChecksumError, OfflineError
from tlkit.safeio import UnsafeArchiveError, sha256_file

PRODUCTS = [  # id, mean rating, text: CRLF line ends, no final newline, like the real file
    ("1_1", -2.5, "battery died after two days, returning it."),
    ("1_2", -0.6, "the manual is confusing."),
    ("1_3", -0.4, "it arrived on tuesday."),
    ("1_4", 0.0, "the box contains a charger."),
    ("1_5", 0.45, "works as described."),
    ("1_6", 0.5, "works fine."),
    ("1_7", 3.1, "Excellent product!"),
    ("1_8", 2.9, "excellent product."),  # a near copy of 1_7: one row, ratings averaged
    ("1_9", 0.2, "..."),  # no words at all: dropped
    ("2_1", -1.0, "screen cracked in a week."),
    ("2_2", 1.5, "great sound for the price."),
    ("2_3", -3.0, "don't buy this player."),
]
MOVIES = [("1", 2.0, "A gem. The clichés disappear."), ("2", -2.0, "Dull and far too long."), ("3", 0.1, "It is a film.")]


def _tsv(rows: list[tuple[str, float, str]]) -> bytes:
    return "\r\n".join(f"{i}\t{r}\t{t}" for i, r, t in rows).encode("utf-8")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            _add(tar, name, data)
    return buf.getvalue()


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake sdist (with a hostile extra member) + its pins, and a pip stand-in that 'downloads' it."""
    files = {"amazonReviewSnippets_GroundTruth.txt": _tsv(PRODUCTS), "movieReviewSnippets_GroundTruth.txt": _tsv(MOVIES)}
    inner = _targz({f"hutto_ICWSM_2014/{n}": d for n, d in files.items()})
    member = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    sdist = _targz({"vaderSentiment-3.3.2/setup.py": b"raise SystemExit('never run')", member: inner,
                    "../outside.txt": b"must never be written"})
    source = tmp_path / "pypi" / "vaderSentiment-3.3.2.tar.gz"
    source.parent.mkdir()
    source.write_bytes(sdist)
    import hashlib

    digest = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    pins = reviews.VaderPins(sdist_sha256=digest(sdist), member=member, member_sha256=digest(inner),
                             files={n: digest(d) for n, d in files.items()})
    calls: list[list[str]] = []
    state = {"serve": sdist, "stderr": "", "rc": 0, "pins": pins}

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        assert "--no-binary" in cmd and ":all:" in cmd and "--no-deps" in cmd and "--require-hashes" in cmd
        requirement = Path(cmd[cmd.index("-r") + 1]).read_text()
        assert f"--hash=sha256:{state['pins'].sdist_sha256}" in requirement, "pip must check the pin before it runs anything"
        if state["rc"] == 0:
            (Path(cmd[cmd.index("-d") + 1]) / "vaderSentiment-3.3.2.tar.gz").write_bytes(state["serve"])
        return subprocess.CompletedProcess(cmd, state["rc"], "", state["stderr"])

    monkeypatch.setattr(reviews.subprocess, "run", fake_run)
    monkeypatch.delenv("TLKIT_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the test suite's setting: it concerns the Hub, not PyPI
    return {"pins": pins, "calls": calls, "state": state, "cache": tmp_path / "cache", "root": tmp_path}


def test_load_products_maps_ratings_deduplicates_and_caches(fake):
    splits = reviews.load_reviews("products", folder=fake["cache"], pins=fake["pins"], val_size=1, test_size=2)
    everything = [*splits.train, *splits.val, *splits.test]
    texts = [t for t, _ in everything]
    assert len(everything) == 10 and splits.info["duplicates"] == {"raw": 12, "without_words": 1, "duplicates": 1, "unique": 10}
    assert "..." not in texts and sum(t.lower().startswith("excellent product") for t in texts) == 1
    label = dict(everything)
    assert label["battery died after two days, returning it."] == 0 and label["the manual is confusing."] == 0
    assert label["it arrived on tuesday."] == 1 and label["works as described."] == 1  # |rating| < 0.5
    assert label["works fine."] == 2 and label["great sound for the price."] == 2  # rating >= 0.5
    assert splits.classes == ["negative", "neutral", "positive"]
    assert not (fake["cache"] / "outside.txt").exists() and not (fake["root"] / "outside.txt").exists()
    reviews.load_reviews("movies", folder=fake["cache"], pins=fake["pins"], val_size=1, test_size=1)
    assert len(fake["calls"]) == 1, "a filled cache needs no second download"


def test_movie_file_is_read_as_utf8_with_crlf(fake):
    df = reviews.read_snippets(reviews.vader_data_dir(fake["cache"], pins=fake["pins"]) / reviews.DOMAINS["movies"])
    assert df["text"].tolist()[0] == "A gem. The clichés disappear." and df["rating"].tolist() == [2.0, -2.0, 0.1]
    assert not any("\r" in t for t in df["text"])


def test_rating_thresholds():
    labels = reviews.rating_to_label([-4, -0.5, -0.49, 0, 0.49, 0.5, 4])
    assert labels.tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert reviews.rating_to_label([0.7], neutral_below=1.0).tolist() == [1]
    with pytest.raises(ValueError, match="between 0 and 4"):
        reviews.rating_to_label([0.0], neutral_below=0)


def test_checksum_mismatch_keeps_nothing(fake):
    fake["state"]["serve"] = b"not the pinned archive"
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        reviews.vader_data_dir(fake["cache"], pins=fake["pins"])
    assert not (fake["cache"] / "vaderSentiment-3.3.2.tar.gz").exists()


def test_pip_hash_refusal_is_a_checksum_error(fake):
    fake["state"].update(rc=1, stderr="ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.")
    with pytest.raises(ChecksumError, match="not the pinned one"):
        reviews.fetch_vader_sdist(fake["cache"], pins=fake["pins"])


def test_corrupt_cache_is_fetched_or_extracted_again(fake):
    data_dir = reviews.vader_data_dir(fake["cache"], pins=fake["pins"])
    (data_dir / reviews.DOMAINS["products"]).write_text("garbage")  # a damaged extracted file: re-extracted, no pip
    (fake["cache"] / "hutto_ICWSM_2014.tar.gz").write_bytes(b"truncated")  # and a damaged inner archive
    (fake["cache"] / "vaderSentiment-3.3.2.tar.gz").write_bytes(b"truncated")  # and a damaged download: refetched
    reviews.vader_data_dir(fake["cache"], pins=fake["pins"])
    assert sha256_file(data_dir / reviews.DOMAINS["products"]) == fake["pins"].files[reviews.DOMAINS["products"]]
    assert len(fake["calls"]) == 2


def test_offline_errors_say_what_to_do(fake, monkeypatch):
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    with pytest.raises(OfflineError, match=r"TLKIT_OFFLINE=1 .*pip download --no-deps --no-binary :all: vaderSentiment==3.3.2"):
        reviews.load_reviews(folder=fake["cache"], pins=fake["pins"])
    assert fake["calls"] == []
    monkeypatch.delenv("TLKIT_OFFLINE")
    fake["state"].update(rc=1, stderr="WARNING: Retrying ... NewConnectionError: Failed to establish a new connection")
    with pytest.raises(OfflineError, match="could not reach PyPI"):
        reviews.load_reviews(folder=fake["cache"], pins=fake["pins"])
    fake["state"].update(rc=0, stderr="")
    reviews.vader_data_dir(fake["cache"], pins=fake["pins"])
    monkeypatch.setenv("TLKIT_OFFLINE", "1")  # once cached, offline works
    assert len(reviews.load_reviews(folder=fake["cache"], pins=fake["pins"], val_size=1, test_size=2).test) == 2


def test_extract_member_takes_only_that_member(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_targz({"pkg/data.bin": b"payload", "../evil.txt": b"x"}))
    import hashlib

    out = reviews.extract_member(archive, "pkg/data.bin", tmp_path / "data.bin", sha256=hashlib.sha256(b"payload").hexdigest())
    assert out.read_bytes() == b"payload" and not (tmp_path.parent / "evil.txt").exists()
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        reviews.extract_member(archive, "pkg/data.bin", tmp_path / "other.bin", sha256="0" * 64)
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "other.bin.part").exists()
    with pytest.raises(ChecksumError, match="no member"):
        reviews.extract_member(archive, "pkg/missing.bin", tmp_path / "m.bin", sha256="0" * 64)


def test_hostile_inner_archive_is_refused(fake, tmp_path):
    import hashlib

    inner = _targz({"hutto_ICWSM_2014/../../escape.txt": b"x"})
    member = fake["pins"].member
    sdist = _targz({member: inner})
    pins = reviews.VaderPins(sdist_sha256=hashlib.sha256(sdist).hexdigest(), member=member,
                             member_sha256=hashlib.sha256(inner).hexdigest(), files=fake["pins"].files)
    fake["state"].update(serve=sdist, pins=pins)
    with pytest.raises(UnsafeArchiveError):
        reviews.vader_data_dir(tmp_path / "hostile", pins=pins)
    assert not (tmp_path / "escape.txt").exists()


def test_sample_per_class_is_balanced_and_nested():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 20)
    small, large = reviews.sample_per_class(labels, 2, seed=3), reviews.sample_per_class(labels, 5, seed=3)
    assert np.bincount(labels[small]).tolist() == [2, 2, 2] and np.bincount(labels[large]).tolist() == [5, 5, 5]
    assert set(small) <= set(large)
    with pytest.raises(ValueError, match="smallest class"):
        reviews.sample_per_class(labels, 6)
