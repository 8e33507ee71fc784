"""Tests for tlkit.safeio: numpy-only unpickling and archive extraction that cannot escape its folder."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import subprocess
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

import tlkit.safeio
from tlkit._support import safeio  # the private module that holds the code (tlkit.safeio re-exports it)
from tlkit.safeio import (
    UnsafeArchiveError,
    UnsafePickleError,
    load_pickled_arrays,
    restricted_load,
    restricted_loads,
    safe_extract,
    sha256_file,
)


def _animal_mnist_folder() -> Path | None:
    """The wheel's data folder, found without importing the package (its loader imports tensorflow)."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "Animal_MNIST"
    return folder if folder.is_dir() else None


# ------------------------------------------------------------------------------------------- unpickling


@pytest.mark.skipif(_animal_mnist_folder() is None, reason="animal-mnist wheel not installed")
def test_loads_real_animal_mnist_files():
    folder = _animal_mnist_folder()
    images = load_pickled_arrays(folder / "animal_data_version_3.gz")
    labels = load_pickled_arrays(folder / "animal_label_version_3.gz")
    assert isinstance(images, np.ndarray) and images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert 0 < images.mean() < 255
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [1000] * 10


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_roundtrips_numpy_objects_at_every_protocol(protocol):
    original = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(10)[::3],
        "zero_d": np.array(7),
        "scalars": [np.float64(2.5), np.int8(-3), np.bool_(True)],
        "complex": np.array([1 + 2j, 3 - 1j]),
        "record": np.array([(1, 2.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "strings": np.array(["cat", "zebra"]),
        "dates": np.array(["2024-01-02"], dtype="M8[D]"),
        "objects": np.array([1, "two", None], dtype=object),
        "plain": (b"raw", {1, 2}, frozenset({3}), 1 + 1j),
    }
    loaded = restricted_loads(pickle.dumps(original, protocol=protocol))
    assert loaded.keys() == original.keys()
    for key in ("f32", "fortran", "strided", "zero_d", "complex", "record", "strings", "dates", "objects"):
        assert loaded[key].dtype == original[key].dtype
        np.testing.assert_array_equal(loaded[key], original[key])
    assert loaded["fortran"].flags.f_contiguous
    assert loaded["scalars"] == original["scalars"] and type(loaded["scalars"][1]) is np.int8
    assert loaded["plain"] == original["plain"]


def test_load_pickled_arrays_reads_plain_and_gzip(tmp_path):
    array = np.linspace(0, 1, 5)
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(array))
    (tmp_path / "a.pkl.gz").write_bytes(gzip.compress(pickle.dumps(array)))
    np.testing.assert_array_equal(load_pickled_arrays(tmp_path / "a.pkl"), array)
    np.testing.assert_array_equal(load_pickled_arrays(tmp_path / "a.pkl.gz"), array)
    with open(tmp_path / "a.pkl", "rb") as f:
        np.testing.assert_array_equal(restricted_load(f), array)


class _Reduce:
    """Pickles as a call of `func(*args)`: the classic pickle exploit."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _stack_global(module: str, name: str) -> bytes:
    """A protocol 4 pickle that looks up `module`/`name` with STACK_GLOBAL and calls it with no arguments."""
    def short(text: str) -> bytes:
        return b"\x8c" + bytes([len(text)]) + text.encode()
    return b"\x80\x04" + short(module) + short(name) + b"\x93)R."


def _attacks(sentinel: Path) -> dict[str, bytes]:
    """Malicious pickles that would create `sentinel` if unpickled with plain pickle."""
    shell = f"touch {sentinel}"
    pycode = f"open({str(sentinel)!r}, 'w').close()"
    return {
        "os.system": pickle.dumps(_Reduce(os.system, (shell,))),
        "builtins.eval": pickle.dumps(_Reduce(eval, (pycode,))),
        "builtins.exec": pickle.dumps(_Reduce(exec, (pycode,)), protocol=2),
        "subprocess.call": pickle.dumps(_Reduce(subprocess.call, (["touch", str(sentinel)],))),
        # inside an otherwise valid array container, after a real array
        "nested": pickle.dumps([np.zeros(3), _Reduce(os.system, (shell,))]),
        # numpy's own test helper exec()s a string: a numpy-prefix allow-list would let this through
        "numpy runstring": pickle.dumps(_Reduce(np.testing._private.utils.runstring, (pycode, {}))),
        # protocol 4 dotted name walking from an allowed class to builtins
        "dotted": _stack_global("numpy", "ndarray.__class__.__call__"),
        # protocol 0 GLOBAL opcode
        "proto0": f"cos\nsystem\n(V{shell}\ntR.".encode(),
    }


@pytest.mark.parametrize("attack", ["os.system", "builtins.eval", "builtins.exec", "subprocess.call", "nested",
                                    "numpy runstring", "dotted", "proto0"])
def test_refuses_malicious_pickles_without_running_them(tmp_path, attack):
    sentinel = tmp_path / "pwned"
    data = _attacks(sentinel)[attack]
    with pytest.raises(UnsafePickleError, match="refused to load global") as info:
        restricted_loads(data)
    assert isinstance(info.value, pickle.UnpicklingError)
    assert not sentinel.exists()


def test_refusal_names_the_global(tmp_path):
    with pytest.raises(UnsafePickleError, match=r"(posix|os|nt)\.system"):
        restricted_loads(pickle.dumps(_Reduce(os.system, ("true",))))
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        restricted_loads(pickle.dumps(_Reduce(eval, ("1",))))


def test_codecs_encode_only_latin1():
    evil = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00rot_13\x86R."
    with pytest.raises(UnsafePickleError, match="latin-1"):
        restricted_loads(evil)


def test_gzip_malicious_file_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.gz"
    path.write_bytes(gzip.compress(_attacks(sentinel)["os.system"]))
    with pytest.raises(UnsafePickleError):
        load_pickled_arrays(path)
    assert not sentinel.exists()


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# ------------------------------------------------------------------------------------------- archives


def _tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz") -> Path:
    """Write a tar archive from (name, bytes) files and ready-made TarInfo entries (links, devices)."""
    with tarfile.open(path, mode) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    """A tar symlink/hardlink entry."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """Write a zip archive with the given member names (unsanitised) and contents."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries:
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def _leftovers(folder: Path) -> list[str]:
    """Names of temporary folders safe_extract might have left behind."""
    return [p.name for p in folder.iterdir() if ".extracting-" in p.name or ".old-" in p.name]


@pytest.fixture(params=["data_filter", "fallback"])
def tar_mode(request, monkeypatch):
    """Run tar tests with tarfile's data filter and with the checks used on Pythons without it."""
    if request.param == "fallback":
        monkeypatch.setattr(safeio, "_tar_has_data_filter", lambda: False)
    elif not safeio._tar_has_data_filter():
        pytest.skip("this Python's tarfile has no data filter")
    return request.param


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tar.bz2", "w:bz2"), (".tar.xz", "w:xz"),
                                         (".tar", "w")])
def test_extracts_good_tar(tmp_path, tar_mode, suffix, mode):
    archive = _tar(tmp_path / f"good{suffix}", [("data/a.txt", b"alpha"), ("data/sub/b.txt", b"beta"),
                                                _link("data/link", "sub/b.txt")], mode)
    out = safe_extract(archive, tmp_path / "out")
    assert out == tmp_path / "out"
    assert (out / "data/a.txt").read_bytes() == b"alpha"
    assert (out / "data/sub/b.txt").read_bytes() == b"beta"
    assert (out / "data/link").is_symlink() and (out / "data/link").read_bytes() == b"beta"
    assert _leftovers(tmp_path) == []


def test_extracts_good_zip_and_sniffs_unnamed_archives(tmp_path):
    archive = _zip(tmp_path / "good.zip", [("d/a.txt", b"alpha"), ("d/e/b.txt", b"beta")])
    out = safe_extract(archive, tmp_path / "out")
    assert (out / "d/a.txt").read_bytes() == b"alpha" and (out / "d/e/b.txt").read_bytes() == b"beta"
    unnamed = tmp_path / "download.bin"
    unnamed.write_bytes(_tar(tmp_path / "t.tar.gz", [("x.txt", b"x")]).read_bytes())
    assert (safe_extract(unnamed, tmp_path / "out2") / "x.txt").read_bytes() == b"x"


@pytest.mark.parametrize("evil", [
    ("../evil", None),
    ("data/../../evil", None),
    ("ABSOLUTE", None),
    ("link", "../evil"),          # symlink escape
    ("link", "ABSOLUTE"),         # absolute symlink
    ("hard", "ABSOLUTE_HARD"),    # hardlink to a file outside
])
def test_tar_refuses_escapes(tmp_path, tar_mode, evil):
    outside = tmp_path / "evil"
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    name, target = evil
    name = str(outside) if name == "ABSOLUTE" else name
    if target is None:
        entries = [("good.txt", b"fine"), (name, b"pwned")]
    elif target == "ABSOLUTE_HARD":
        entries = [_link(name, str(victim), tarfile.LNKTYPE), ("good.txt", b"fine")]
    else:
        entries = [_link(name, str(outside) if target == "ABSOLUTE" else target), ("link", b"through the link")]
    archive = _tar(tmp_path / "evil.tar.gz", entries)
    with pytest.raises(UnsafeArchiveError, match="refused evil.tar.gz"):
        safe_extract(archive, tmp_path / "work" / "out")
    assert not outside.exists() and victim.read_text() == "keep me"
    assert not (tmp_path / "work" / "out").exists() and _leftovers(tmp_path / "work") == []


def test_tar_refuses_symlink_chain(tmp_path, tar_mode):
    # a link to the parent, then a file written through it: each step looks local on its own
    archive = _tar(tmp_path / "chain.tar", [_link("up", ".."), ("up/evil", b"pwned")], "w")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists()


def test_tar_refuses_device_files(tmp_path, tar_mode):
    device = tarfile.TarInfo("dev/null-ish")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    archive = _tar(tmp_path / "dev.tar", [device], "w")
    with pytest.raises(UnsafeArchiveError, match="device"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_fallback_drops_setuid_bits(tmp_path, monkeypatch):
    monkeypatch.setattr(safeio, "_tar_has_data_filter", lambda: False)
    info = tarfile.TarInfo("tool")
    info.size, info.mode = 2, 0o4777
    archive = tmp_path / "suid.tar"
    with tarfile.open(archive, "w") as tar:
        tar.addfile(info, io.BytesIO(b"hi"))
    mode = (safe_extract(archive, tmp_path / "out") / "tool").stat().st_mode
    assert not mode & 0o4000 and not mode & 0o022


@pytest.mark.parametrize("name", ["../evil", "/ABSOLUTE", "a/../../evil", "..\\evil", "C:/evil"])
def test_zip_refuses_escapes(tmp_path, name):
    name = str(tmp_path / "evil") if name == "/ABSOLUTE" else name
    archive = _zip(tmp_path / "evil.zip", [("ok.txt", b"fine"), (name, b"pwned")])
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_zip_refuses_symlink_entries(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, tmp_path / "out")


def test_corrupt_archive_leaves_nothing(tmp_path):
    good = _tar(tmp_path / "good.tar.gz", [("a.txt", b"x" * 10000)]).read_bytes()
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(good[: len(good) // 2])
    with pytest.raises((tarfile.TarError, EOFError, OSError)):
        safe_extract(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_existing_destination(tmp_path):
    archive = _zip(tmp_path / "a.zip", [("new.txt", b"new")])
    dest = tmp_path / "out"
    dest.mkdir()
    assert (safe_extract(archive, dest) / "new.txt").exists()  # an empty folder is fine
    with pytest.raises(FileExistsError, match="overwrite=True"):
        safe_extract(archive, dest)
    (dest / "old.txt").write_text("old")
    safe_extract(archive, dest, overwrite=True)
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"] and _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------- size limit and imports


def test_tar_bigger_than_the_limit_is_refused_before_writing(tmp_path, tar_mode):
    archive = _tar(tmp_path / "big.tar.gz", [("a.bin", b"\0" * 300_000), ("b.bin", b"\0" * 300_000)], "w:gz")
    assert archive.stat().st_size < 10_000  # a tiny download that unpacks to 600 kB: the shape of a tar bomb
    with pytest.raises(UnsafeArchiveError, match=r"unpack to 0\.6 MiB.*limit.*max_bytes"):
        safe_extract(archive, tmp_path / "out", max_bytes=500_000)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    assert (safe_extract(archive, tmp_path / "out", max_bytes=600_000) / "a.bin").stat().st_size == 300_000


def test_zip_bigger_than_the_limit_is_refused(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 1_000_000)
    with pytest.raises(UnsafeArchiveError, match="limit"):
        safe_extract(archive, tmp_path / "out", max_bytes=999_999)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []


def test_old_import_path_is_the_private_module():
    assert tlkit.safeio.safe_extract is safeio.safe_extract and tlkit.safeio.UnsafeArchiveError is safeio.UnsafeArchiveError
    assert tlkit.safeio.load_pickled_arrays is safeio.load_pickled_arrays  # tlkit.data.animals imports it from here
