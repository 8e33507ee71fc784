"""Tests for tlkit.data.sentiment: data sets by name, SST-2/IMDb readers on tiny fake folders, clear offline errors."""

from __future__ import annotations

import numpy as np
import pytest

from tlkit.data import sentiment
from tlkit.download import OfflineError
from tlkit.settings import OfflineError as SettingsOfflineError


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="imdb.*sst2.*tweets"):
        sentiment.load_text_dataset("yelp")
    assert set(sentiment.available_text_datasets()) == {"tweets", "sst2", "imdb"}


def test_online_dataset_offline_names_the_offline_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    with pytest.raises(OfflineError, match="tweets"):
        sentiment.load_text_dataset("sst2")


def test_read_sst2_and_split(tmp_path):
    rows = "sentence\tlabel\n" + "".join(f"a {'good' if i % 2 else 'bad'} film number {i}\t{i % 2}\n" for i in range(40))
    (tmp_path / "train.tsv").write_text(rows)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nfine \"quoted\" film\t1\nawful film\t0\n")
    train, dev = sentiment.read_sst2(tmp_path)
    assert len(train) == 40 and dev.texts == ['fine "quoted" film', "awful film"] and dev.labels.tolist() == [1, 0]
    splits = sentiment._splits(train, dev, name="sst2", seed=0, n_train=10, val_size=8, test_size=100)
    assert len(splits.val) == 8 and len(splits.train) == 10 and len(splits.test) == 2
    assert not set(splits.train.texts) & set(splits.val.texts)
    assert np.bincount(splits.val.labels).tolist() == [4, 4] and splits.classes == ["negative", "positive"]


def test_read_imdb_labels_folders_and_removes_line_breaks(tmp_path):
    for sub, text in (("neg", "Dull.<br /><br />Very dull."), ("pos", "Loved it<br/>!")):
        (tmp_path / "test" / sub).mkdir(parents=True)
        (tmp_path / "test" / sub / "0_1.txt").write_text(text)
    data = sentiment.read_imdb(tmp_path, "test")
    assert data.labels.tolist() == [0, 1] and "<br" not in " ".join(data.texts)
    with pytest.raises(FileNotFoundError, match="aclImdb"):
        sentiment.read_imdb(tmp_path, "train")


def test_tweets_by_name_is_load_tweets():
    splits = sentiment.load_text_dataset("tweets", val_size=100, test_size=200, n_train=300)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (300, 100, 200)
    assert splits.classes == ["negative", "neutral", "positive"]


@pytest.mark.parametrize("name,url,digest", [("sst2", sentiment.SST2_URL, sentiment.SST2_SHA256),
                                             ("imdb", sentiment.IMDB_URL, sentiment.IMDB_SHA256)])
def test_downloads_are_pinned_to_the_published_sha256(monkeypatch, tmp_path, name, url, digest):
    """Before: SST-2 and IMDb were downloaded with sha256=None, so any bytes (an error page, a changed file) were kept."""
    from tlkit._support import fetch

    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    seen = {}
    monkeypatch.setattr(fetch, "download_and_extract", lambda u, **kw: seen.update(kw, url=u) or tmp_path)
    sentiment._download(name, progress=False)
    assert seen["url"] == url and seen["sha256"] == digest and len(digest) == 64 and int(digest, 16) >= 0
    assert seen["max_bytes"] >= 600 << 20  # room for aclImdb (~0.5 GB), but a limit


def test_offline_error_is_the_course_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path))
    with pytest.raises(SettingsOfflineError, match="tweets"):
        sentiment.load_text_dataset("imdb")
