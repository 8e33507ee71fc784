"""Tests for tlkit.data.tweets: de-duplication, leak-free splits, determinism, subsampling, tokenising and padding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tlkit.data import tweets


@pytest.fixture(scope="module")
def splits():
    return tweets.load_tweets(seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    from tlkit.models.text import load_text_tokenizer

    return load_text_tokenizer()


def _frame(rows):
    return pd.DataFrame(rows, columns=["text", "label", "confidence"])


def test_normalise_tweet_strips_retweets_mentions_urls_case_and_spaces():
    original = "Loving the new @Apple watch!  http://t.co/abc #tech"
    retweet = "RT @fan123: loving the NEW @apple watch! https://t.co/xyz #tech"
    assert tweets.normalise_tweet(original) == tweets.normalise_tweet(retweet) == "loving the new watch #tech"
    assert tweets.normalise_tweet("a &amp; b") == "a b"


def test_deduplicate_keeps_one_copy_and_votes_on_the_label():
    df = _frame([
        ("Flight delayed again @united http://t.co/1", 0, 0.9),
        ("RT @bob: flight delayed AGAIN @united", 0, 0.7),
        ("rt @amy: Flight delayed again", 1, 0.5),
        ("Great service today", 2, 1.0),
        ("Great service today", 2, 1.0),
        ("meh", 1, np.nan),
    ])
    kept, counts = tweets.deduplicate_tweets(df)
    assert len(kept) == 3 and kept["key"].is_unique
    assert kept.loc[kept["key"] == "flight delayed again", "label"].item() == 0  # 2 votes to 1
    assert kept["text"].tolist()[0] == "Flight delayed again @united http://t.co/1"  # first copy's text, original order
    assert counts == {"raw": 6, "empty_after_normalising": 0, "exact_duplicates": 1, "near_duplicates": 2,
                      "conflicting_groups": 1, "unique": 3}
    dropped, _ = tweets.deduplicate_tweets(df, drop_conflicting=True)
    assert "flight delayed again" not in set(dropped["key"])


def test_real_splits_have_no_duplicates_and_no_text_in_two_splits(splits):
    keys = {name: [tweets.normalise_tweet(t) for t in getattr(splits, name).texts] for name in ("train", "val", "test")}
    total = sum(len(k) for k in keys.values())
    assert len(set().union(*keys.values())) == total  # every normalised text exactly once, across all splits
    info = splits.info["duplicates"]
    assert info["raw"] == 38158 and info["unique"] == total < info["raw"] - 3000
    assert (len(splits.val), len(splits.test)) == (1000, 2000)
    assert splits.classes == ["negative", "neutral", "positive"]
    shares = [np.bincount(getattr(splits, n).labels, minlength=3) / len(getattr(splits, n)) for n in ("train", "test")]
    assert np.allclose(shares[0], shares[1], atol=0.01)  # stratified


def test_splits_are_deterministic_and_the_test_set_is_fixed(splits):
    again = tweets.load_tweets(seed=0, n_train=300, min_confidence=0.6)
    assert again.test.texts == splits.test.texts  # neither n_train nor min_confidence moves the test set
    assert np.array_equal(again.test.labels, splits.test.labels)
    other = tweets.exact_stratified_split(splits.train.labels, 100, 200, seed=1)
    same = tweets.exact_stratified_split(splits.train.labels, 100, 200, seed=1)
    different = tweets.exact_stratified_split(splits.train.labels, 100, 200, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(other, same))
    assert not np.array_equal(other[2], different[2])
    assert len(np.intersect1d(other[0], other[2])) == 0 and len(other[1]) == 100 and len(other[2]) == 200


def test_n_train_is_stratified_and_nested_and_min_confidence_filters(splits):
    small, large = (tweets.stratified_subsample(splits.train.labels, n, seed=0) for n in (300, 1000))
    assert len(small) == 300 and set(small) <= set(large)
    assert np.abs(np.bincount(splits.train.labels[small]) / 300 - np.bincount(splits.train.labels) / len(splits.train)).max() < 0.01
    confident = tweets.load_tweets(seed=0, min_confidence=0.9)
    assert len(confident.train) < len(splits.train) and (confident.train.confidence >= 0.9).all()
    with pytest.raises(ValueError, match="between 1 and"):
        tweets.stratified_subsample(splits.train.labels, len(splits.train) + 1)


def test_tokenizer_round_trip_and_special_tokens(tokenizer):
    text = "Loving my new phone, the battery lasts forever!"
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == text.lower()
    assert len(tokenizer("word " * 200, truncation=True, max_length=16)["input_ids"]) == 16


def test_tokenize_and_pad_collate_give_masks_that_match_lengths(tokenizer):
    ds = tweets.TweetDataset(["short one", "a much longer tweet about a delayed flight and lost bags", "ok"], [0, 1, 2])
    tokenized = tweets.tokenize_tweets(ds, tokenizer, max_length=8)
    assert max(tokenized.lengths) == 8
    batch = next(iter(tweets.tweet_loader(tokenized, batch_size=3, pad_token_id=tokenizer.pad_token_id)))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, 8)
    assert batch["attention_mask"].sum(1).tolist() == tokenized.lengths
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert batch["labels"].tolist() == [0, 1, 2] and batch["labels"].dtype == torch.long


def test_length_grouped_batches_cover_every_example_once():
    lengths = np.random.default_rng(0).integers(3, 60, size=1003)
    for shuffle in (True, False):
        sampler = tweets.LengthGroupedBatches(lengths, batch_size=32, shuffle=shuffle, window=4)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32
        assert sorted(i for b in batches for i in b) == list(range(1003))
    spread = np.mean([np.ptp(lengths[b]) for b in tweets.LengthGroupedBatches(lengths, 32, shuffle=True, window=4)])
    assert spread < 0.5 * np.mean([np.ptp(lengths[i : i + 32]) for i in range(0, 1003, 32)])  # less padding than random batches


def test_in_dataset_order_undoes_length_sorting(tokenizer):
    ds = tweets.TweetDataset(["a", "a much longer tweet than the others", "medium length tweet"], [0, 1, 2])
    loader = tweets.tweet_loader(tweets.tokenize_tweets(ds, tokenizer), batch_size=2, group_by_length=True)
    labels = torch.cat([b["labels"] for b in loader])
    assert labels.tolist() == [1, 2, 0]  # longest first
    assert tweets.in_dataset_order(labels, loader).tolist() == [0, 1, 2]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_shuffled_tweet_loaders_give_a_restarted_run_the_same_epoch(tokenizer, group_by_length):
    """fit calls set_epoch before each epoch: a fresh loader (after a restart) then repeats epoch 2's batches."""
    from tlkit.train import _start_epoch

    ds = tweets.TweetDataset([f"tweet number {i} " + "word " * (i % 7) for i in range(40)], [i % 3 for i in range(40)])
    tokenized = tweets.tokenize_tweets(ds, tokenizer)

    def labels_of_epoch(loader, epoch):
        _start_epoch(loader, epoch, seed=None)
        return [b["labels"].tolist() for b in loader]

    def make():
        return tweets.tweet_loader(tokenized, batch_size=4, shuffle=True, group_by_length=group_by_length, seed=0)

    running = make()
    first, second = labels_of_epoch(running, 1), labels_of_epoch(running, 2)
    assert first != second
    assert labels_of_epoch(make(), 2) == second  # a new loader, as after a restart
