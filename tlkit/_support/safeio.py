"""Safe reading of downloaded files: numpy-only unpickling, archive extraction that cannot escape, checksums.

Private support code; `tlkit.safeio` re-exports the public names. Lesson 01 explains why we never `pickle.load`
a download; tlkit.data.animals reads the course's pickled arrays with `load_pickled_arrays`.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import os
import pickle
import shutil
import stat
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any, Callable

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_SIZE = 1 << 20
MAX_EXTRACT_BYTES = 4 << 30  # 4 GiB: the course's largest archive (IMDb) unpacks to ~0.5 GB
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tbz", ".tar.xz", ".txz")

# Every global a numpy-array pickle may name, as (module, name) -> where the real object lives.
# Pickles written by numpy 1.x say `numpy.core`, numpy 2.x says `numpy._core`; protocols 0-2 say `__builtin__`.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}
_BUILTIN_GLOBALS = {
    ("builtins", "complex"): complex,
    ("__builtin__", "complex"): complex,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("__builtin__", "bytearray"): bytearray,
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle named a global outside the numpy-array allow-list; nothing it asked for was run."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the destination folder, is a link or device file, or it unpacks too big."""


def _check_total_size(sizes: list[int], archive: Path, max_bytes: int) -> None:
    """Refuse an archive whose members add up to more than `max_bytes` (a zip/tar bomb, or the wrong file)."""
    total = sum(sizes)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"refused {archive.name}: it would unpack to {total / 2**20:.1f} MiB, more than the limit of "
            f"{max_bytes / 2**20:.1f} MiB; if you trust it, pass a larger max_bytes"
        )


def _numpy_object(where: str, name: str) -> Any:
    """The numpy object behind an allow-list entry, importing numpy's private modules without deprecation noise."""
    import numpy as np

    if where == "numpy":
        return getattr(np, name)
    try:
        module = __import__(f"numpy._core.{where}", fromlist=[name])
    except ImportError:  # numpy < 1.26 has no numpy._core
        module = __import__(f"numpy.core.{where}", fromlist=[name])
    return getattr(module, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol 0-2 pickles use it for bytes, limited to latin-1 (no other codec is reachable)."""
    if encoding.lower().replace("_", "-") not in {"latin1", "latin-1"}:
        raise UnsafePickleError(
            f"refused _codecs.encode with codec {encoding!r}: only latin-1 is allowed in array pickles"
        )
    return text.encode("latin-1")


class NumpyUnpickler(pickle.Unpickler):
    """An Unpickler that builds only numpy arrays, dtypes, numpy scalars and plain containers."""

    def find_class(self, module: str, name: str) -> Any:
        """Return an allow-listed global, or raise UnsafePickleError naming the refused one."""
        key = (module, name)
        if key in _NUMPY_GLOBALS:
            return _numpy_object(*_NUMPY_GLOBALS[key])
        if key in _BUILTIN_GLOBALS:
            return _BUILTIN_GLOBALS[key]
        if key == ("_codecs", "encode"):
            return _latin1_encode
        raise UnsafePickleError(
            f"refused to load global {module}.{name}: this file may only contain numpy arrays, "
            "so it was not unpickled (do not load it with plain pickle)"
        )


def restricted_load(fileobj: IO[bytes], *, encoding: str = "ASCII") -> Any:
    """Unpickle numpy arrays (and lists/dicts/tuples of them) from a binary file; any other global is refused.

    `encoding="latin1"` reads arrays pickled by Python 2.
    """
    return NumpyUnpickler(fileobj, encoding=encoding).load()


def restricted_loads(data: bytes, *, encoding: str = "ASCII") -> Any:
    """Unpickle numpy arrays from bytes; any global outside the allow-list raises UnsafePickleError."""
    return restricted_load(io.BytesIO(data), encoding=encoding)


def load_pickled_arrays(path: str | os.PathLike, *, encoding: str = "ASCII") -> Any:
    """Load a (possibly gzip'd) pickle of numpy arrays with the restricted unpickler."""
    path = Path(path)
    with open(path, "rb") as raw:
        compressed = raw.read(2) == GZIP_MAGIC
    opener: Callable[..., IO[bytes]] = gzip.open if compressed else open
    with opener(path, "rb") as f:
        return restricted_load(f, encoding=encoding)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- archives


def _check_member_name(name: str, archive: Path) -> None:
    """Refuse absolute names, drive letters and `..` parts (with either slash), before anything is written."""
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(parts[0]) >= 2 and parts[0][1] == ":") or ".." in parts:
        raise UnsafeArchiveError(
            f"refused {archive.name}: member {name!r} would be written outside the destination folder"
        )


def _check_link_target(name: str, target: str, archive: Path) -> None:
    """Refuse a link whose target is absolute or contains `..`: such a link can point outside the folder.

    Stricter than tarfile's "data" filter (which allows `../x` that stays inside), and so safe without it:
    when no name and no link target climbs, every path resolves inside the folder.
    """
    parts = target.replace("\\", "/").split("/")
    if not target or target.startswith(("/", "\\")) or (len(parts[0]) >= 2 and parts[0][1] == ":") or ".." in parts:
        raise UnsafeArchiveError(
            f"refused {archive.name}: link {name!r} -> {target!r} points outside the destination folder"
        )


def _check_tar_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """All members of a tar archive, after refusing escapes, outside links and device files."""
    members = tar.getmembers()
    for m in members:
        _check_member_name(m.name, archive)
        if m.issym() or m.islnk():
            _check_link_target(m.name, m.linkname, archive)
        elif not (m.isreg() or m.isdir()):
            raise UnsafeArchiveError(f"refused {archive.name}: member {m.name!r} is a device file or FIFO")
    return members


def _tar_has_data_filter() -> bool:
    """True when tarfile has extraction filters (Python 3.12, and 3.8.17/3.9.17/3.10.12/3.11.4 backports)."""
    return hasattr(tarfile, "data_filter")


def _sanitized(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A copy of a tar member without owner, setuid/setgid bits or group/other write: what the data filter does."""
    member = copy.copy(member)
    member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    if member.isreg() or member.isdir():
        member.mode = (member.mode & 0o755) | (0o700 if member.isdir() else 0o600)
    return member


def _extract_tar(archive: Path, target: Path, max_bytes: int) -> None:
    """Extract a (compressed) tar archive into `target` after checking every member and the total size."""
    with tarfile.open(archive, "r:*") as tar:
        members = _check_tar_members(tar, archive)
        _check_total_size([m.size for m in members if m.isreg()], archive, max_bytes)
        if _tar_has_data_filter():
            tar.extractall(target, members=members, filter="data")
        else:  # older Pythons: our own checks above, plus the owner/permission clean-up of the data filter
            tar.extractall(target, members=[_sanitized(m) for m in members])


def _extract_zip(archive: Path, target: Path, max_bytes: int) -> None:
    """Extract a zip archive into `target` after refusing escapes, symlinks, special files and too big a total.

    The sizes checked are the declared ones; zipfile stops a member that inflates past its declared size.
    """
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_member_name(info.filename, archive)
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # 3: made on Unix, mode is real
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # no type bits: a file
                raise UnsafeArchiveError(f"refused {archive.name}: member {info.filename!r} is a link or special file")
        _check_total_size([info.file_size for info in infos], archive, max_bytes)
        zf.extractall(target, members=infos)


def _archive_kind(archive: Path) -> str:
    """'zip' or 'tar', from the file name, else from the content."""
    name = archive.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ValueError(f"{archive} is neither a zip nor a tar archive: expected .zip, .tar, .tar.gz, .tar.bz2 or .tar.xz")


def _is_empty_dir(path: Path) -> bool:
    """True for an existing folder with nothing in it."""
    return path.is_dir() and not any(path.iterdir())


def move_dir_into_place(src: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Rename folder `src` to `dest` (same file system); an empty `dest` is replaced, a full one only with overwrite."""
    src, dest = Path(src), Path(dest)
    if dest.exists() or dest.is_symlink():
        if _is_empty_dir(dest) and not dest.is_symlink():
            dest.rmdir()
        elif overwrite:
            trash = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, trash / dest.name)
            os.replace(src, dest)
            shutil.rmtree(trash, ignore_errors=True)
            return dest
        else:
            raise FileExistsError(f"{dest} already exists and is not empty: remove it, or pass overwrite=True")
    os.replace(src, dest)
    return dest


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, overwrite: bool = False,
                 max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into folder `dest`, all or nothing, refusing anything that escapes.

    Extracts into a temporary folder next to `dest`, then renames it, so a failure leaves no half-extracted folder.
    Absolute paths, `..` parts, links that point outside, device files and archives that would unpack to more than
    `max_bytes` raise UnsafeArchiveError before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"no archive at {archive}: download it first (tlkit.download.download)")
    if dest.exists() and not overwrite and not _is_empty_dir(dest):
        raise FileExistsError(f"{dest} already exists and is not empty: remove it, or pass overwrite=True")
    kind = _archive_kind(archive)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extracting-", dir=dest.parent))
    try:
        (_extract_zip if kind == "zip" else _extract_tar)(archive, tmp, max_bytes)
        return move_dir_into_place(tmp, dest, overwrite=overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
