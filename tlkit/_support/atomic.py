"""Atomic writes: a file or a whole folder appears complete or not at all, and a failed write says what to do.

A file is written to a temporary name in the same folder, flushed to disk (fsync) and renamed onto its target
(`os.replace` is atomic). A folder is built beside its target and swapped in: on Linux with one atomic
renameat2(RENAME_EXCHANGE); elsewhere the old folder is first renamed to a backup (`.NAME.previous`) that
`recover_dir` puts back if the process dies between the two renames, so the old or the new complete folder is
always on disk.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's bytes, or a folder's entries, to the disk (folders: where the platform allows it)."""
    path = Path(path)
    if path.is_dir():
        if sys.platform == "win32":
            return  # Windows cannot open a folder for fsync; NTFS journals renames itself
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError:
            pass  # some file systems (e.g. some network mounts) refuse fsync on folders
        finally:
            os.close(fd)
        return
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def temp_name(path: Path, tag: str = "tmp") -> Path:
    """A unique hidden name next to `path` (same folder, so a rename onto `path` is atomic)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{tag}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file next to `path`, fsync it, then rename it onto `path`; return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        write(tmp)
        fsync_path(tmp)  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
        fsync_path(path.parent)  # and the rename itself survives a power cut
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_error_message(path: str | os.PathLike, err: OSError, survivor: str) -> str:
    """One sentence for a failed write: what failed, why (a full disk named as such), what to do, what is intact."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk is full (or over quota)"
        todo = "free some space, or write to another folder, then save again"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = f"it is not writable ({err.strerror or err})"
        todo = "choose a folder you can write to, then save again"
    else:
        why = f"{type(err).__name__}: {err}"
        todo = "check the disk and the folder, then save again"
    return f"Could not write {path}: {why}; {todo}. {survivor}"


def backup_name(dest: Path) -> Path:
    """Where a folder waits while `swap_in_dir` replaces it without renameat2."""
    return dest.with_name(f".{dest.name}.previous")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the folders `a` and `b` with Linux renameat2(RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False  # glibc < 2.28 or another C library
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # the file system cannot exchange: fall back to two renames
    raise OSError(code, os.strerror(code), str(b))


def recover_dir(dest: str | os.PathLike) -> Path:
    """Put back a folder left at its backup name by a crash in the middle of `swap_in_dir`; return `dest`."""
    dest = Path(dest)
    backup = backup_name(dest)
    if not dest.exists() and backup.is_dir():
        os.replace(backup, dest)
    return dest


def swap_in_dir(staging: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Make the complete folder `staging` become `dest`, replacing any old `dest` so that one of them is always whole."""
    staging, dest = Path(staging), Path(dest)
    fsync_path(staging)
    recover_dir(dest)
    if not dest.exists():
        os.replace(staging, dest)
    elif _exchange(staging, dest):
        shutil.rmtree(staging, ignore_errors=True)  # `staging` now holds the old folder
    else:
        backup = backup_name(dest)
        if backup.exists():
            shutil.rmtree(backup)
        os.replace(dest, backup)  # from here until the next rename, the old folder is complete at `backup`
        os.replace(staging, dest)
        shutil.rmtree(backup, ignore_errors=True)
    fsync_path(dest.parent)
    return dest
