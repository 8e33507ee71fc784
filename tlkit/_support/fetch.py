"""Cached, checksummed, resumable downloads with an error that says what to do when the machine is offline.

Private support code; `tlkit.download` re-exports the public names. The cache decision, the SHA-256 check and
the final rename are pooch's (`pooch.retrieve`); the HTTP transfer is a pooch downloader of ours because pooch's
own cannot resume: bytes go to a `.part` file named after the URL and the expected digest (so a partial file of
another download is never resumed onto), resumed with HTTP Range (and If-Range when the server gave a validator),
and an HTML page sent instead of the file is refused.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from tlkit._support.safeio import MAX_EXTRACT_BYTES, move_dir_into_place, safe_extract, sha256_file
from tlkit.settings import OfflineError as _SettingsOfflineError
from tlkit.settings import cache_dir, offline_mode

USER_AGENT = "tlkit (transfer-learning course; Python urllib)"
CHUNK_SIZE = 1 << 16
RETRY_BACKOFF_S = 1.0  # waits 1 s, 2 s, 4 s ... between attempts
RETRY_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})
MARKER_NAME = ".tlkit-extracted.json"
PIP_OFFLINE_SIGNS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                     "Max retries exceeded", "Failed to establish a new connection", "ConnectTimeout", "ReadTimeout")
_SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")


class DownloadError(OSError):
    """A download failed: bad URL, an HTTP error, or a server that sent something unexpected (e.g. an HTML page)."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the expected one (the file has been removed)."""


class OfflineError(_SettingsOfflineError, DownloadError, ConnectionError):
    """The network cannot be reached (or offline mode is on); the message says where to put the file by hand.

    A tlkit.settings.OfflineError (the course's one offline error type), and still a DownloadError/ConnectionError.
    """


def _check_sha256(sha256: str | None) -> str | None:
    """The expected digest in lower case, or a ValueError for something that is not 64 hex digits."""
    if sha256 is not None and not _SHA256_RE.match(sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}: copy it from the course's asset table")
    return sha256.lower() if sha256 else None


def _file_name(url: str, filename: str | None) -> str:
    """The local file name: `filename`, else the last part of the URL path; never a path with folders."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in {"http", "https"}:
        raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
    name = filename or PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ValueError(f"cannot make a safe file name from {url!r}: pass filename='something.ext'")
    return name


def partial_path(target: Path, url: str, sha256: str | None) -> Path:
    """The `.part` file for one (URL, expected digest): another file of the same name never shares it."""
    key = hashlib.sha256(f"{url}\n{sha256 or ''}".encode()).hexdigest()[:12]
    return target.with_name(f"{target.name}.{key}.part")


_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE)


def _looks_like_html(path: Path, content_type: str | None) -> bool:
    """True when a download is a web page (an error, login or "moved" page) rather than the file asked for."""
    if path.suffix.lower() in (".html", ".htm"):
        return False
    if content_type and content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    with open(path, "rb") as f:
        return bool(_HTML_START.match(f.read(512)))


def _matches(path: Path, sha256: str | None) -> bool:
    """True when `path` is a file and, if a digest is given, has that SHA-256."""
    return path.is_file() and (sha256 is None or sha256_file(path) == sha256)


def _offline_message(url: str, target: Path, reason: str, hint: str | None) -> str:
    """One explanation of an offline failure: what failed, why, and the two ways to go on."""
    default = f"use the course's offline default: {hint}" if hint else "use the course's offline default"
    return (f"could not download {url}: this machine seems to be offline ({reason}); "
            f"put the file at {target} by hand, or {default}")


def _is_unreachable(err: BaseException) -> bool:
    """True for errors that retrying within seconds will not fix: DNS failure, connection refused, no route."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    if isinstance(reason, (socket.gaierror, ConnectionRefusedError)):
        return True
    return isinstance(reason, OSError) and reason.errno in UNREACHABLE_ERRNOS


def _content_range_start(value: str | None) -> int | None:
    """The first byte of a `Content-Range: bytes START-END/TOTAL` header, or None if it cannot be read."""
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_validator(part: Path) -> dict[str, str]:
    """The ETag/Last-Modified the server sent with the bytes in `part` ({} if none or unreadable)."""
    try:
        data = json.loads(_validator_file(part).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _start_over(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_file(part).unlink(missing_ok=True)


def _fetch_to_part(url: str, part: Path, *, timeout: float, progress: bool, can_resume: bool) -> str | None:
    """One attempt: append the rest of `url` to `part` (HTTP Range), or rewrite it; return the Content-Type.

    A partial file is resumed only with If-Range (the server's ETag or Last-Modified for it) or when `can_resume`
    (an expected SHA-256 will catch bytes spliced from two versions); otherwise it is started again.
    """
    validator = _read_validator(part).get("validator")
    if part.exists() and not (validator or can_resume):
        _start_over(part)
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
        if validator:
            headers["If-Range"] = validator  # a changed file is sent whole (200), never spliced
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not start:
            raise
        err.close()  # 416: the partial file is not a prefix the server knows; start again
        _start_over(part)
        return _fetch_to_part(url, part, timeout=timeout, progress=progress, can_resume=can_resume)
    with response:
        resumed = start > 0 and response.status == 206
        if resumed and _content_range_start(response.headers.get("Content-Range")) != start:
            _start_over(part)  # the server resumed from somewhere else: do not splice bytes
            return _fetch_to_part(url, part, timeout=timeout, progress=progress, can_resume=can_resume)
        start = start if resumed else 0
        if not resumed:
            new_validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            _validator_file(part).write_text(json.dumps({"url": url, "validator": new_validator}))
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        written = 0
        bar = None
        if progress:
            from tlkit.progress import progress_bar

            total = start + expected if expected is not None else None
            bar = progress_bar(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name.split(".")[0])
        try:
            with open(part, "ab" if resumed else "wb") as f:
                for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
                    f.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        content_type = response.headers.get("Content-Type")
    if expected is not None and written < expected:
        raise http.client.IncompleteRead(b"", expected - written)  # retried, resuming from what we have
    return content_type


def _fetch_with_retries(url: str, part: Path, target: Path, *, timeout: float, retries: int, progress: bool,
                        hint: str | None, can_resume: bool) -> str | None:
    """Fill `part` with the whole of `url`, retrying transient failures; unreachable networks fail at once."""
    network_errors = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, socket.gaierror)
    last: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
        try:
            return _fetch_to_part(url, part, timeout=timeout, progress=progress, can_resume=can_resume or attempt > 0)
        except urllib.error.HTTPError as err:
            if err.code not in RETRY_HTTP_CODES:
                raise DownloadError(f"the server answered HTTP {err.code} ({err.reason}) for {url}: "
                                    f"check the URL, or put the file at {target} by hand") from err
            last = err
        except urllib.error.URLError as err:
            if isinstance(err.reason, ssl.SSLCertVerificationError):
                raise DownloadError(f"could not verify the HTTPS certificate of {url}: install your system's CA "
                                    f"certificates (on macOS run 'Install Certificates.command'), or put the file at "
                                    f"{target} by hand") from err
            if _is_unreachable(err):
                raise OfflineError(_offline_message(url, target, str(err.reason), hint)) from err
            last = err
        except network_errors as err:
            if _is_unreachable(err):
                raise OfflineError(_offline_message(url, target, str(err), hint)) from err
            last = err
    if isinstance(last, urllib.error.HTTPError):
        raise DownloadError(f"the server kept answering HTTP {last.code} for {url} after {retries + 1} attempts: "
                            f"try again later, or put the file at {target} by hand") from last
    reason = f"{type(last).__name__}: {last} after {retries + 1} attempts"
    raise OfflineError(_offline_message(url, target, reason, hint)) from last


class _ResumingDownloader:
    """A pooch downloader: fetch into our resumable `.part` file, refuse HTML, then hand the bytes to pooch's file."""

    def __init__(self, part: Path, target: Path, **options: Any) -> None:
        self.part, self.target, self.options, self.digest = part, target, options, None

    def __call__(self, url: str, output_file: str, pooch: Any, check_only: bool = False) -> None:
        content_type = _fetch_with_retries(url, self.part, self.target, **self.options)
        if _looks_like_html(self.part, content_type):
            _start_over(self.part)
            raise DownloadError(f"the server sent a web page (an error or sign-in page?) instead of {self.target.name} for "
                                f"{url}; it was not kept: check the URL in a browser, or put the file at {self.target} by hand")
        self.digest = sha256_file(self.part)
        os.replace(self.part, output_file)  # pooch checks the digest, then renames it onto the target
        _validator_file(self.part).unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[Any]:
    """pooch, with its INFO lines ("Downloading ...", "SHA256 hash of downloaded file") silenced: we say what matters."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield pooch
    finally:
        logger.setLevel(level)


def download(url: str, *, sha256: str | None, dest: str | os.PathLike | None = None, filename: str | None = None,
             progress: bool = True, timeout: float = 30, retries: int = 3, hint: str | None = None) -> Path:
    """Download `url` into folder `dest` (default cache_dir("downloads")) and return the file's path.

    A file already there with the right SHA-256 is returned without touching the network. pooch verifies the
    SHA-256 before the final rename; a partial download is resumed by a later call (HTTP Range). An HTML page
    instead of the file raises DownloadError. Offline (or with TLKIT_OFFLINE=1 / HF_HUB_OFFLINE=1) it raises
    OfflineError, whose message ends with `hint`. sha256=None downloads anyway but warns with the digest to pin.
    """
    sha256 = _check_sha256(sha256)
    folder = Path(dest) if dest is not None else cache_dir("downloads")
    target = folder / _file_name(url, filename)
    if _matches(target, sha256):
        return target
    if offline_mode():
        raise OfflineError(_offline_message(url, target, "TLKIT_OFFLINE or HF_HUB_OFFLINE is set", hint))
    folder.mkdir(parents=True, exist_ok=True)
    part = partial_path(target, url, sha256)
    fetch = _ResumingDownloader(part, target, timeout=timeout, retries=retries, progress=progress, hint=hint,
                                can_resume=sha256 is not None)
    with _quiet_pooch() as pooch:
        try:
            pooch.retrieve(url, known_hash=f"sha256:{sha256}" if sha256 else None, fname=target.name, path=folder,
                           downloader=fetch, progressbar=False)
        except ValueError as err:  # pooch: the digest does not match (it has deleted the file)
            raise ChecksumError(f"checksum mismatch for {target.name}: expected {sha256}, got {fetch.digest}; "
                                "the file was removed, run again or check the URL") from err
    if sha256 is None:
        warnings.warn(f"downloaded {url} without a checksum: pin it with sha256={fetch.digest!r}", stacklevel=2)
    return target


def _marker_matches(marker: Path, sha256: str | None) -> bool:
    """True when an extraction marker exists and records the same archive checksum (any, if none is asked for)."""
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return sha256 is None or recorded.get("sha256") == sha256


def download_and_extract(url: str, *, sha256: str | None, dest_dir: str | os.PathLike, filename: str | None = None,
                         archive_dir: str | os.PathLike | None = None, progress: bool = True, timeout: float = 30,
                         retries: int = 3, hint: str | None = None, max_bytes: int = MAX_EXTRACT_BYTES,
                         verify: Callable[[Path], None] | None = None) -> Path:
    """Download an archive (see `download`) and extract it safely into `dest_dir`; a second call returns at once.

    `dest_dir` appears complete or not at all, with a marker file recording the archive's checksum; the archive
    stays in `archive_dir` (default cache_dir("downloads")). Extraction refuses escaping paths, links that leave
    the folder, device files and more than `max_bytes` in all. `verify(folder)` may check the extracted files
    (e.g. per-file digests) and raise; the folder is then not kept.
    """
    sha256 = _check_sha256(sha256)
    dest_dir = Path(dest_dir)
    marker = dest_dir / MARKER_NAME
    if _marker_matches(marker, sha256):
        return dest_dir
    ours = marker.exists()
    if dest_dir.exists() and not ours and any(dest_dir.iterdir()):
        raise FileExistsError(
            f"{dest_dir} already exists and was not made by tlkit: remove it or choose another dest_dir"
        )
    archive = download(url, sha256=sha256, dest=archive_dir, filename=filename, progress=progress,
                       timeout=timeout, retries=retries, hint=hint)
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.staging-", dir=dest_dir.parent))
    try:
        safe_extract(archive, staging, max_bytes=max_bytes)
        if verify is not None:
            verify(staging)
        record = {"url": url, "archive": archive.name, "sha256": sha256 or sha256_file(archive)}
        (staging / MARKER_NAME).write_text(json.dumps(record, indent=1))
        move_dir_into_place(staging, dest_dir, overwrite=ours)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return dest_dir


def _find_wheel(folder: Path, name: str, version: str) -> Path | None:
    """The wheel for `name==version` in `folder` (names compared PEP 503-normalised), or None."""
    wanted = re.sub(r"[-_.]+", "_", name).lower()
    for path in sorted(folder.glob("*.whl")):
        dist, _, rest = path.name.partition("-")
        if re.sub(r"[-_.]+", "_", dist).lower() == wanted and rest.split("-")[0] == version:
            return path
    return None


def fetch_pypi_wheel(name: str, version: str, sha256: str | None = None, *, dest: str | os.PathLike | None = None,
                     timeout: float = 600, hint: str | None = None) -> Path:
    """Fetch one wheel with `pip download --no-deps --only-binary=:all:` into cache_dir("wheels"); return its path.

    For assets fetched on first use (no course code calls it today); a cached wheel with the right checksum needs no network.
    """
    sha256 = _check_sha256(sha256)
    folder = Path(dest) if dest is not None else cache_dir("wheels")
    folder.mkdir(parents=True, exist_ok=True)
    found = _find_wheel(folder, name, version)
    if found is not None and _matches(found, sha256):
        return found
    if found is not None:
        found.unlink()  # wrong checksum: pip would reuse it
    spec = f"{name}=={version}"
    if offline_mode():
        raise OfflineError(_offline_message(f"PyPI ({spec})", folder / f"{name}-{version}-*.whl",
                                            "TLKIT_OFFLINE or HF_HUB_OFFLINE is set", hint))
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--quiet", "--retries", "1", spec, "-d", str(folder)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        if any(sign in proc.stderr for sign in PIP_OFFLINE_SIGNS):
            raise OfflineError(_offline_message(f"PyPI ({spec})", folder, tail, hint))
        raise DownloadError(f"pip could not download {spec} ({tail}): check the name and version, "
                            f"or run `pip download --no-deps {spec} -d {folder}` by hand")
    found = _find_wheel(folder, name, version)
    if found is None:
        raise DownloadError(f"pip ran but no wheel for {spec} is in {folder}: check the name and version")
    digest = sha256_file(found)
    if sha256 is not None and digest != sha256:
        found.unlink()
        raise ChecksumError(f"checksum mismatch for {found.name}: expected {sha256}, got {digest}; "
                            "the file was removed, run again or check the version")
    return found
