"""Tests for tlkit.download against a local HTTP server on 127.0.0.1 (no other network is ever contacted)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import subprocess
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import tlkit.download
from tlkit._support import fetch as dl  # the private module with the code (tlkit.download re-exports it)
from tlkit.download import ChecksumError, DownloadError, OfflineError, download, download_and_extract, fetch_pypi_wheel
from tlkit.safeio import UnsafeArchiveError
from tlkit.settings import OfflineError as SettingsOfflineError

PAYLOAD = bytes(range(256)) * 400  # 100 KiB: several read chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
HINT = "set MODEL_NAME = 'efficientnet_lite0' in the config cell"
SERVER_LIFETIME_S = 60  # the server shuts itself down after this, whatever the test does


@dataclass
class ServerState:
    """What the test server serves and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    range_ok: bool = True
    truncate_once: set[str] = field(default_factory=set)
    bytes_sent: int = 0
    etags: dict[str, str] = field(default_factory=dict)
    content_types: dict[str, str] = field(default_factory=dict)
    if_range: list[str | None] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    """Serves ServerState.files with optional Range support and one-off truncated replies."""

    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        """Answer 200, 206 or 416 like a real static file server."""
        state: ServerState = self.server.state
        rng = self.headers.get("Range")
        state.requests.append((self.path, rng))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        etag = state.etags.get(self.path)
        state.if_range.append(self.headers.get("If-Range"))
        if rng and self.headers.get("If-Range") is not None and self.headers.get("If-Range") != etag:
            rng = None  # RFC 9110: the file changed since the partial copy, so send all of it
        if rng and state.range_ok:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        if etag:
            self.send_header("ETag", etag)
        if self.path in state.content_types:
            self.send_header("Content-Type", state.content_types[self.path])
        self.end_headers()
        if self.path in state.truncate_once:  # promise the whole body, send half, hang up
            state.truncate_once.discard(self.path)
            body = body[: len(body) // 2]
        state.bytes_sent += len(body)  # counted before sending: the client may finish before write() returns
        self.wfile.write(body)


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    """A private cache, online mode, no proxies (so 127.0.0.1 is reached directly), no retry waits."""
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))
    for var in ("TLKIT_OFFLINE", "HF_HUB_OFFLINE", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 that stops at teardown (or after SERVER_LIFETIME_S at the latest)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = ServerState(files={"/data.bin": PAYLOAD})
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    watchdog = threading.Timer(SERVER_LIFETIME_S, httpd.shutdown)
    watchdog.daemon = True
    thread.start()
    watchdog.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.state
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _downloads(tmp_path: Path) -> Path:
    """The default download folder under the test's cache."""
    return tmp_path / "cache" / "downloads"


def _part(tmp_path: Path, base: str, path: str = "/data.bin", sha: str | None = PAYLOAD_SHA) -> Path:
    """Where a partial download of base+path (expecting `sha`) waits to be resumed."""
    return dl.partial_path(_downloads(tmp_path) / Path(path).name, f"{base}{path}", sha)


# ------------------------------------------------------------------------------------------- download


def test_download_verifies_and_caches(server, tmp_path):
    base, state = server
    path = download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert path == _downloads(tmp_path) / "data.bin" and path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.bin"]  # no .part, no pooch temporary file
    assert download(f"{base}/data.bin", sha256=PAYLOAD_SHA.upper(), progress=False) == path
    assert len(state.requests) == 1  # the second call did not touch the network


def test_dest_and_filename(server, tmp_path):
    base, _ = server
    path = download(f"{base}/data.bin", sha256=PAYLOAD_SHA, dest=tmp_path / "mine", filename="x.bin", progress=False)
    assert path == tmp_path / "mine" / "x.bin" and path.read_bytes() == PAYLOAD


def test_progress_bar_runs(server, capsys):
    base, _ = server
    assert download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=True).read_bytes() == PAYLOAD


def test_file_put_by_hand_needs_no_network(server, tmp_path, monkeypatch):
    base, state = server
    _downloads(tmp_path).mkdir(parents=True)
    (_downloads(tmp_path) / "data.bin").write_bytes(PAYLOAD)
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    assert download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False).read_bytes() == PAYLOAD
    assert state.requests == []


def test_checksum_mismatch_removes_file(server, tmp_path):
    base, _ = server
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=rf"checksum mismatch for data.bin: expected {wrong}, got {PAYLOAD_SHA}; "
                                            "the file was removed, run again or check the URL"):
        download(f"{base}/data.bin", sha256=wrong, progress=False)
    assert list(_downloads(tmp_path).iterdir()) == []


def test_resumes_from_partial_file(server, tmp_path):
    base, state = server
    done = 40_000
    _downloads(tmp_path).mkdir(parents=True)
    _part(tmp_path, base).write_bytes(PAYLOAD[:done])
    path = download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert state.requests == [("/data.bin", f"bytes={done}-")]
    assert state.bytes_sent == len(PAYLOAD) - done


def test_server_ignoring_range_gets_full_download(server, tmp_path):
    base, state = server
    state.range_ok = False
    _downloads(tmp_path).mkdir(parents=True)
    _part(tmp_path, base).write_bytes(PAYLOAD[:1000])
    assert download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False).read_bytes() == PAYLOAD
    assert state.bytes_sent == len(PAYLOAD)


def test_oversized_partial_file_restarts(server, tmp_path):
    base, state = server
    _downloads(tmp_path).mkdir(parents=True)
    _part(tmp_path, base).write_bytes(PAYLOAD + b"junk")  # server answers 416
    assert download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False).read_bytes() == PAYLOAD
    assert [r[1] for r in state.requests] == [f"bytes={len(PAYLOAD) + 4}-", None]


def test_dropped_connection_is_retried_and_resumed(server):
    base, state = server
    state.truncate_once.add("/data.bin")
    assert download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False, retries=2).read_bytes() == PAYLOAD
    assert state.requests == [("/data.bin", None), ("/data.bin", f"bytes={len(PAYLOAD) // 2}-")]
    assert state.bytes_sent == len(PAYLOAD)


def test_unreachable_url_raises_offline_error_with_hint(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/weights.bin"
    with pytest.raises(OfflineError) as info:
        download(url, sha256=PAYLOAD_SHA, progress=False, hint=HINT)
    message = str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert url in message and "offline" in message and HINT in message
    assert str(_downloads(tmp_path) / "weights.bin") in message  # where to put the file by hand


def test_socket_timeout_is_retried_then_offline(tmp_path):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/slow.bin"
        with pytest.raises(OfflineError, match=r"timed out after 2 attempts"):
            download(url, sha256=PAYLOAD_SHA, progress=False, timeout=0.3, retries=1, hint=HINT)


def test_offline_mode_short_circuits(server, monkeypatch):
    base, state = server
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    with pytest.raises(OfflineError, match=re.escape(HINT)):
        download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False, hint=HINT)
    assert state.requests == []


def test_http_404_is_not_offline(server):
    base, _ = server
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download(f"{base}/missing.bin", sha256=PAYLOAD_SHA, progress=False)
    assert not isinstance(info.value, OfflineError)


def test_no_checksum_warns_with_the_digest_to_pin(server):
    base, _ = server
    with pytest.warns(UserWarning, match=PAYLOAD_SHA):
        assert download(f"{base}/data.bin", sha256=None, progress=False).read_bytes() == PAYLOAD


@pytest.mark.parametrize("kwargs", [{"url": "file:///etc/passwd"}, {"sha256": "abc"}, {"filename": "../x.bin"},
                                    {"url": "http://127.0.0.1:1/"}])
def test_bad_arguments(kwargs):
    args = {"url": "http://127.0.0.1:1/data.bin", "sha256": PAYLOAD_SHA, **kwargs}
    with pytest.raises(ValueError):
        download(args.pop("url"), progress=False, **args)


def test_a_partial_file_of_another_download_is_never_resumed_onto(server, tmp_path):
    """Before: any `data.bin.part` was resumed, whatever URL it came from, splicing two files together."""
    base, state = server
    other = bytes(reversed(PAYLOAD))
    state.files["/v2/data.bin"] = other
    _downloads(tmp_path).mkdir(parents=True)
    for leftover in (_downloads(tmp_path) / "data.bin.part", _part(tmp_path, base)):  # old name, and /data.bin's own
        leftover.write_bytes(PAYLOAD[:40_000])
    path = download(f"{base}/v2/data.bin", sha256=hashlib.sha256(other).hexdigest(), progress=False)
    assert path.read_bytes() == other
    assert state.requests == [("/v2/data.bin", None)], "a fresh download, no Range onto another file's bytes"


def test_without_a_digest_a_partial_file_is_resumed_only_if_the_server_says_it_is_the_same(server, tmp_path):
    base, state = server
    state.etags["/data.bin"] = '"v1"'
    state.truncate_once.add("/data.bin")
    with pytest.raises(OfflineError):
        download(f"{base}/data.bin", sha256=None, progress=False, retries=0)  # half of v1 is on disk
    changed = bytes(reversed(PAYLOAD))
    state.files["/data.bin"], state.etags["/data.bin"] = changed, '"v2"'  # then the file changes on the server
    with pytest.warns(UserWarning, match="pin it"):
        path = download(f"{base}/data.bin", sha256=None, progress=False)
    assert path.read_bytes() == changed, "If-Range made the server send the new file whole"
    assert state.if_range[-1] == '"v1"' and state.requests[-1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_without_a_digest_or_validator_a_partial_file_is_started_again(server, tmp_path):
    base, state = server
    _downloads(tmp_path).mkdir(parents=True)
    _part(tmp_path, base, sha=None).write_bytes(b"x" * 1000)  # no record of what these bytes were
    with pytest.warns(UserWarning):
        assert download(f"{base}/data.bin", sha256=None, progress=False).read_bytes() == PAYLOAD
    assert state.requests == [("/data.bin", None)]


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", None])
def test_an_html_error_page_is_never_kept_as_the_file(server, tmp_path, content_type):
    """Before: with sha256=None a sign-in or error page (HTTP 200) was kept as the archive."""
    base, state = server
    state.files["/archive.tar.gz"] = b"<!DOCTYPE html><html><body>Please sign in</body></html>"
    if content_type:
        state.content_types["/archive.tar.gz"] = content_type
    with pytest.raises(DownloadError, match=r"web page.*instead of archive\.tar\.gz.*not kept"):
        download(f"{base}/archive.tar.gz", sha256=None, progress=False)
    assert list(_downloads(tmp_path).iterdir()) == []


def test_offline_errors_are_the_course_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SettingsOfflineError, match=r"offline \(TLKIT_OFFLINE or HF_HUB_OFFLINE is set\); put the file at"):
        download("https://example.org/x.bin", sha256=PAYLOAD_SHA, progress=False)
    assert issubclass(OfflineError, (RuntimeError, ConnectionError, DownloadError))


def test_the_old_import_path_and_pooch(monkeypatch, server, tmp_path):
    assert tlkit.download.download is dl.download and tlkit.download.OfflineError is dl.OfflineError
    import pooch

    calls = []
    real = pooch.retrieve
    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: calls.append(k["known_hash"]) or real(*a, **k))
    base, _ = server
    download(f"{base}/data.bin", sha256=PAYLOAD_SHA, progress=False)
    assert calls == [f"sha256:{PAYLOAD_SHA}"], "pooch checks the digest and does the final rename"


# ------------------------------------------------------------------------------------------- download_and_extract


def _targz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz archive in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_download_and_extract_then_instant(server, tmp_path):
    base, state = server
    archive = _targz({"recordings/0_a.wav": b"RIFF0", "recordings/1_b.wav": b"RIFF1"})
    state.files["/fsdd.tar.gz"] = archive
    sha = hashlib.sha256(archive).hexdigest()
    out = download_and_extract(f"{base}/fsdd.tar.gz", sha256=sha, dest_dir=tmp_path / "data" / "fsdd", progress=False)
    assert (out / "recordings/1_b.wav").read_bytes() == b"RIFF1"
    assert (out / dl.MARKER_NAME).exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["fsdd"]  # no staging folders left
    again = download_and_extract(f"{base}/fsdd.tar.gz", sha256=sha, dest_dir=out, progress=False)
    assert again == out and len(state.requests) == 1


def test_download_and_extract_refuses_evil_archive(server, tmp_path):
    base, state = server
    archive = _targz({"ok.txt": b"ok", "../../evil.txt": b"pwned"})
    state.files["/evil.tar.gz"] = archive
    with pytest.raises(UnsafeArchiveError):
        download_and_extract(f"{base}/evil.tar.gz", sha256=hashlib.sha256(archive).hexdigest(),
                             dest_dir=tmp_path / "data" / "out", progress=False)
    assert list((tmp_path / "data").iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_download_and_extract_keeps_foreign_folder(server, tmp_path):
    base, state = server
    state.files["/a.tar.gz"] = _targz({"a": b"a"})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        download_and_extract(f"{base}/a.tar.gz", sha256=None, dest_dir=tmp_path / "mine", progress=False)
    assert state.requests == [] and (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_download_and_extract_size_limit_and_verify(server, tmp_path):
    base, state = server
    archive = _targz({"big.bin": b"\0" * 50_000})
    state.files["/big.tar.gz"] = archive
    sha = hashlib.sha256(archive).hexdigest()
    with pytest.raises(UnsafeArchiveError, match="limit"):
        download_and_extract(f"{base}/big.tar.gz", sha256=sha, dest_dir=tmp_path / "data" / "big", progress=False, max_bytes=10_000)

    def reject(folder):
        raise ValueError(f"{sorted(p.name for p in folder.iterdir())} are not the files we expected")

    with pytest.raises(ValueError, match="big.bin"):
        download_and_extract(f"{base}/big.tar.gz", sha256=sha, dest_dir=tmp_path / "data" / "big", progress=False, verify=reject)
    assert list((tmp_path / "data").iterdir()) == [], "nothing is kept when the check fails"


# ------------------------------------------------------------------------------------------- fetch_pypi_wheel


def _fake_pip(calls: list[list[str]], content: bytes = b"wheel bytes", returncode: int = 0, stderr: str = ""):
    """A stand-in for subprocess.run that records pip's command line and drops a wheel into its -d folder."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        if returncode == 0:
            folder = Path(cmd[cmd.index("-d") + 1])
            (folder / "Animal_MNIST-0.4-py3-none-any.whl").write_bytes(content)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    return run


def test_fetch_pypi_wheel_runs_pip_once(monkeypatch, tmp_path):
    calls: list[list[str]] = []
    monkeypatch.setattr(dl.subprocess, "run", _fake_pip(calls))
    sha = hashlib.sha256(b"wheel bytes").hexdigest()
    path = fetch_pypi_wheel("animal-mnist", "0.4", sha256=sha)
    assert path == tmp_path / "cache" / "wheels" / "Animal_MNIST-0.4-py3-none-any.whl"
    cmd = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "animal-mnist==0.4"} <= set(cmd)
    assert fetch_pypi_wheel("animal_mnist", "0.4", sha256=sha) == path and len(calls) == 1  # cached


def test_fetch_pypi_wheel_checksum_and_offline(monkeypatch, tmp_path):
    calls: list[list[str]] = []
    monkeypatch.setattr(dl.subprocess, "run", _fake_pip(calls))
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        fetch_pypi_wheel("animal-mnist", "0.4", sha256="1" * 64)
    assert list((tmp_path / "cache" / "wheels").iterdir()) == []
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    with pytest.raises(OfflineError, match=re.escape(HINT)):
        fetch_pypi_wheel("animal-mnist", "0.4", hint=HINT)
    assert len(calls) == 1


def test_fetch_pypi_wheel_pip_failures(monkeypatch):
    offline = "ERROR: ... Failed to establish a new connection: [Errno -3] Temporary failure in name resolution"
    monkeypatch.setattr(dl.subprocess, "run", _fake_pip([], returncode=1, stderr=offline))
    with pytest.raises(OfflineError, match="offline"):
        fetch_pypi_wheel("animal-mnist", "0.4")
    missing = "ERROR: No matching distribution found for animal-mnist==9.9"
    monkeypatch.setattr(dl.subprocess, "run", _fake_pip([], returncode=1, stderr=missing))
    with pytest.raises(DownloadError, match="No matching distribution"):
        fetch_pypi_wheel("animal-mnist", "9.9")
