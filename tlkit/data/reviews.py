"""Human-rated product and movie review snippets (Hutto & Gilbert, ICWSM 2014): a second text domain for the tweets.

Taught in lesson 04 (domain shift: a model fine-tuned on brand tweets, measured on product reviews, then adapted
with a few labelled reviews). The snippets ship in the *source archive* of `vaderSentiment==3.3.2` on PyPI (not in
its wheel), as `additional_resources/hutto_ICWSM_2014.tar.gz`, under the MIT licence. Each line of a
`*_GroundTruth.txt` file is `id <TAB> mean rating <TAB> text` (CRLF line ends), the rating being the mean of 20
people's scores from -4 (extremely negative) to +4 (extremely positive).

How the data reaches the cache (`<TLKIT_CACHE>/vader/`), every step checked against a pinned SHA-256:
1. `pip download --no-deps --no-binary :all: --require-hashes` fetches the source archive from PyPI. pip checks the
   hash *before* it prepares the package's metadata (which runs the package's build code), so a tampered archive
   never runs; we check it again afterwards.
2. Only the one member we need, the inner data archive, is read out of the source archive by its exact name (its
   bytes are copied to a file name we choose, never to a path taken from the archive) and checked.
3. The inner archive is unpacked with `tlkit.safeio.safe_extract` (no escapes, no links, all or nothing), and each
   review file we read is checked too. Anything that fails a check is fetched or extracted again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tlkit.data.splits import DataSplits
from tlkit.data.tweets import CLASSES, TweetDataset, exact_stratified_split, normalise_tweet
from tlkit.download import ChecksumError, DownloadError, OfflineError
from tlkit.safeio import safe_extract, sha256_file
from tlkit.settings import OFFLINE_ENV, cache_dir

PACKAGE, VERSION = "vaderSentiment", "3.3.2"
DOMAINS = {"products": "amazonReviewSnippets_GroundTruth.txt", "movies": "movieReviewSnippets_GroundTruth.txt"}
DOMAIN_NAMES = {"products": "Amazon product-review snippets", "movies": "movie-review snippets"}
NEUTRAL_BELOW = 0.5  # |mean rating| < 0.5: the mean rounds to 0 ("neutral") on the raters' -4..+4 integer scale
_TRUE = {"1", "true", "yes", "on"}
_PIP_OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                      "Max retries exceeded", "Failed to establish a new connection", "ConnectTimeout", "ReadTimeout",
                      "No matching distribution found")  # what pip prints when PyPI cannot be reached


@dataclass(frozen=True)
class VaderPins:
    """Names and SHA-256 pins of everything fetched: the source archive, its inner data archive, the review files."""

    sdist: str = f"{PACKAGE}-{VERSION}.tar.gz"
    sdist_sha256: str = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
    member: str = f"{PACKAGE}-{VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz"
    member_sha256: str = "d5bb07d87474b3eb8d30b4deccbc23f19d742a6c5718fbacc65485b70b95c5fa"
    folder: str = "hutto_ICWSM_2014"  # the folder inside the inner archive
    files: dict[str, str] = field(default_factory=lambda: {
        "amazonReviewSnippets_GroundTruth.txt": "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
        "movieReviewSnippets_GroundTruth.txt": "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    })


VADER_PINS = VaderPins()


# ----------------------------------------------------------------------------------------------- fetching
def _pypi_offline() -> bool:
    """True when TLKIT_OFFLINE asks for no network (HF_HUB_OFFLINE concerns the Hugging Face Hub, not PyPI)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def _manual_fix(folder: Path, pins: VaderPins) -> str:
    """The by-hand way to fill the cache, for error messages."""
    return (f"run `python -m pip download --no-deps --no-binary :all: {PACKAGE}=={VERSION} -d {folder}` "
            f"on a machine that can reach PyPI (or copy {pins.sdist} into {folder})")


def fetch_vader_sdist(folder: str | os.PathLike | None = None, *, pins: VaderPins = VADER_PINS,
                      timeout: float = 600) -> Path:
    """The checksummed `vaderSentiment` source archive in `folder` (default cache_dir("vader")), fetched with pip once.

    A cached archive with the pinned SHA-256 needs no network; a corrupt one is removed and fetched again.
    """
    folder = Path(folder) if folder is not None else cache_dir("vader")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / pins.sdist
    if target.is_file():
        if sha256_file(target) == pins.sdist_sha256:
            return target
        target.unlink()  # corrupt or truncated: fetch again
    if _pypi_offline():
        raise OfflineError(f"the review snippets are not in the cache and {OFFLINE_ENV}=1 forbids the network: "
                           f"unset it, or {_manual_fix(folder, pins)}")
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=folder) as tmp:
        requirement = Path(tmp) / "requirements.txt"
        requirement.write_text(f"{PACKAGE}=={VERSION} --hash=sha256:{pins.sdist_sha256}\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
               "--disable-pip-version-check", "--quiet", "--retries", "1", "-r", str(requirement), "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-3:])
            if "DO NOT MATCH THE HASHES" in proc.stderr:
                raise ChecksumError(f"PyPI served a {pins.sdist} whose SHA-256 is not the pinned one ({tail}): "
                                    f"nothing was kept; check the pin in tlkit.data.reviews, or {_manual_fix(folder, pins)}")
            if any(sign in proc.stderr for sign in _PIP_OFFLINE_SIGNS):
                raise OfflineError(f"pip could not reach PyPI to fetch {PACKAGE}=={VERSION} ({tail}): "
                                   f"connect to the internet, or {_manual_fix(folder, pins)}")
            raise DownloadError(f"pip could not download {PACKAGE}=={VERSION} ({tail}): {_manual_fix(folder, pins)}")
        fetched = Path(tmp) / pins.sdist
        if not fetched.is_file():
            raise DownloadError(f"pip ran but left no {pins.sdist} in the cache: {_manual_fix(folder, pins)}")
        digest = sha256_file(fetched)
        if digest != pins.sdist_sha256:
            raise ChecksumError(f"checksum mismatch for {pins.sdist}: expected {pins.sdist_sha256}, got {digest}; "
                                "the file was removed, run again or check the pin")
        os.replace(fetched, target)
    return target


def extract_member(archive: str | os.PathLike, member: str, target: str | os.PathLike, *, sha256: str) -> Path:
    """Copy the one regular-file `member` of a tar archive to the file `target`, keeping it only if its SHA-256 matches.

    Nothing else in the archive is written, and the member's name never becomes a path on disk.
    """
    archive, target = Path(archive), Path(target)
    with tarfile.open(archive, "r:*") as tar:
        try:
            info = tar.getmember(member)
        except KeyError:
            raise ChecksumError(f"{archive.name} has no member {member!r}: the archive is not the pinned one; "
                                "delete it and run again") from None
        if not info.isreg():
            raise ChecksumError(f"{archive.name}: {member!r} is not a regular file; delete the archive and run again")
        part = target.with_name(target.name + ".part")
        with tar.extractfile(info) as src, open(part, "wb") as dst:  # type: ignore[union-attr]
            shutil.copyfileobj(src, dst)
    digest = sha256_file(part)
    if digest != sha256:
        part.unlink()
        raise ChecksumError(f"checksum mismatch for {member} in {archive.name}: expected {sha256}, got {digest}; "
                            "delete the archive and run again")
    os.replace(part, target)
    return target


def _files_ok(data_dir: Path, pins: VaderPins) -> bool:
    """True when every pinned review file is in `data_dir` with its SHA-256."""
    return all((data_dir / name).is_file() and sha256_file(data_dir / name) == digest
               for name, digest in pins.files.items())


def vader_data_dir(folder: str | os.PathLike | None = None, *, pins: VaderPins = VADER_PINS) -> Path:
    """The folder holding the checked review files, fetched and extracted on first use (see the module docstring)."""
    folder = Path(folder) if folder is not None else cache_dir("vader")
    extracted = folder / "extracted"
    data_dir = extracted / pins.folder
    if _files_ok(data_dir, pins):
        return data_dir
    inner = folder / Path(pins.member).name
    if not (inner.is_file() and sha256_file(inner) == pins.member_sha256):
        sdist = fetch_vader_sdist(folder, pins=pins)
        try:
            extract_member(sdist, pins.member, inner, sha256=pins.member_sha256)
        except (ChecksumError, tarfile.TarError, EOFError, OSError):
            sdist.unlink(missing_ok=True)  # a corrupt archive that still had the right size: fetch it once more
            extract_member(fetch_vader_sdist(folder, pins=pins), pins.member, inner, sha256=pins.member_sha256)
    safe_extract(inner, extracted, overwrite=True)
    if not _files_ok(data_dir, pins):
        raise ChecksumError(f"the review files extracted from {inner.name} do not match their pins: "
                            f"delete {folder} and run again")
    return data_dir


# ----------------------------------------------------------------------------------------------- reading
def read_snippets(path: str | os.PathLike) -> pd.DataFrame:
    """One `*_GroundTruth.txt` file as a DataFrame with columns id, rating (mean, -4..+4) and text."""
    lines = Path(path).read_bytes().decode("utf-8-sig").splitlines()  # CRLF or LF; the movie file holds UTF-8
    rows = [line.split("\t") for line in lines if line.strip()]
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != 3]
    if bad:
        raise ValueError(f"{Path(path).name}: lines {bad[:5]} do not have 3 tab-separated fields (id, rating, text); "
                         "pass a *_GroundTruth.txt file")
    df = pd.DataFrame(rows, columns=["id", "rating", "text"])
    df["rating"] = df["rating"].astype(float)
    df["text"] = df["text"].str.strip()
    return df


def rating_to_label(ratings: Any, neutral_below: float = NEUTRAL_BELOW) -> np.ndarray:
    """Map mean ratings to the tweet labels: negative (0) <= -t < neutral (1) < t <= positive (2), t = neutral_below.

    With t = 0.5 a snippet is neutral when its mean rating rounds to 0 on the raters' integer scale.
    """
    if not 0 < neutral_below < 4:
        raise ValueError(f"neutral_below must be between 0 and 4 (the rating scale), got {neutral_below}")
    ratings = np.asarray(ratings, dtype=float)
    return np.where(ratings <= -neutral_below, 0, np.where(ratings >= neutral_below, 2, 1)).astype(np.int64)


def deduplicate_snippets(df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per normalised text (the tweets' key: lowercase, letters/digits only); copies' ratings are averaged.

    Snippets with no letters or digits at all ("!", "...") are dropped: there is nothing in them to learn from.
    """
    n_raw = len(df)
    df = df.assign(key=df["text"].map(normalise_tweet))
    df = df[df["key"] != ""]
    mean_rating = df.groupby("key")["rating"].mean()
    kept = df.drop_duplicates("key").copy()
    kept["rating"] = kept["key"].map(mean_rating)
    counts = {"raw": n_raw, "without_words": int(n_raw - len(df)), "duplicates": int(len(df) - len(kept)),
              "unique": len(kept)}
    return kept.drop(columns="key").reset_index(drop=True), counts


def load_reviews(domain: str = "products", *, seed: int = 0, test_size: int = 1000, val_size: int = 200,
                 neutral_below: float = NEUTRAL_BELOW, folder: str | os.PathLike | None = None,
                 pins: VaderPins = VADER_PINS) -> DataSplits:
    """De-duplicated review snippets as DataSplits of TweetDatasets with the tweets' classes (seeded, stratified).

    `train` is the pool that a few labelled reviews are drawn from (`sample_per_class`); val and test are fixed by
    `seed`. Labels follow `rating_to_label(rating, neutral_below)`; the mean rating is kept in `.confidence`.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    df, counts = deduplicate_snippets(read_snippets(vader_data_dir(folder, pins=pins) / DOMAINS[domain]))
    labels = rating_to_label(df["rating"], neutral_below)
    full = TweetDataset(df["text"].tolist(), labels, df["rating"].to_numpy())  # `confidence` holds the mean rating
    if val_size < 1 or test_size < 1 or val_size + test_size >= len(full):
        raise ValueError(f"val_size and test_size must be positive and leave reviews to learn from (there are "
                         f"{len(full)}); got {val_size}, {test_size}")
    train, val, test = (full.subset(p) for p in exact_stratified_split(full.labels, val_size, test_size, seed=seed))
    info: dict[str, Any] = {
        "source": f"{DOMAIN_NAMES[domain]}, {PACKAGE}=={VERSION} source archive (Hutto & Gilbert 2014, MIT)",
        "duplicates": counts,
        "neutral_below": neutral_below,
        "label_rule": f"rating <= -{neutral_below}: negative; |rating| < {neutral_below}: neutral; "
                      f"rating >= {neutral_below}: positive",
        "class_counts": {name: np.bincount(ds.labels, minlength=len(CLASSES)).tolist()
                         for name, ds in (("all", full), ("train", train), ("val", val), ("test", test))},
        "seed": seed,
    }
    return DataSplits(train=train, val=val, test=test, classes=list(CLASSES), info=info)


def sample_per_class(labels: Any, k: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of `k` random examples of every class (with one seed, smaller k nest inside larger k)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if k < 1 or k > counts.min():
        raise ValueError(f"k must be between 1 and the size of the smallest class ({counts.min()}), got {k}")
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:k] for c in classes]))


if __name__ == "__main__":  # `python -m tlkit.data.reviews` fills the cache (e.g. before going offline)
    for name in DOMAINS:
        splits = load_reviews(name)
        print(name, splits, splits.info["duplicates"], splits.info["class_counts"]["all"])
