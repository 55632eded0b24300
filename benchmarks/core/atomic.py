"""Crash-safe file operations: a write is fsynced into a temporary sibling and renamed or linked
into place, so a reader sees the old file or the new one, never half of one. A path that is a
symbolic link is written through: the file it points to is replaced, the link stays.

Used by the results file (:mod:`benchmarks.harness.results`), the runs' metadata, the feature cache
and ``gradfree perf``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """fsync ``folder`` itself, so that a rename or link in it survives a crash; an ``OSError`` (a file
    system that cannot) is ignored."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_tmp(folder: Path, name: str, data: bytes, mode: int) -> str:
    """Write ``data`` to a new temporary file ``.<name>.*.tmp`` in ``folder``, with permissions ``mode``,
    fsynced; return its path. On any error the file is removed and the error raised."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; results are for everyone to read
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data`` through a fsynced temporary file and a rename.

    A symbolic link is written through (its target replaced beside it), never replaced itself:
    a user who linked a file where gradfree writes keeps the link.
    """
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_tmp(path.parent, path.name, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file and a rename."""
    atomic_write_bytes(Path(path), text.encode())


def create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists (never half-written); True if this call made it."""
    tmp = write_tmp(path.parent, path.name, data, 0o644)
    try:
        try:
            os.link(tmp, path)  # unlike a rename, never replaces a file that is there
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if path.exists():
                return False
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def create_new(path: Path, data: bytes) -> Path:
    """Create ``path``, or ``path.1``, ``path.2``, ... when taken, holding ``data``; return its path."""
    for n in range(1000):
        target = path if n == 0 else path.with_name(f"{path.name}.{n}")
        if create_exclusive(target, data):
            return target
    raise FileExistsError(f"too many files named {path}.*; move some away.")


def write_failure(path: Path, err: OSError, folder: Path | None = None, doing: str = "write") -> str:
    """What went wrong (``cannot <doing> <path>``) and what to do, for an ``OSError``; ``folder``: the
    folder to name in the fix (default ``path``'s)."""
    folder = folder or path.parent
    what = f"cannot {doing} {path}: {err.strerror or err}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"{what} (the disk holding {folder}, or your quota there, is full). Free some space there, "
                "or give --out a folder on another disk.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what}. Make {folder} writable, or give --out a folder in a writable place."
    return f"{what}. Fix that (or give --out another folder) and run again."


def not_writable(st: os.stat_result, path: Path) -> bool:
    """Whether ``path`` (``st``: its stat) may not be written: no write access, or no write bit set."""
    # Mode bits too: a file someone made read-only stays refused even for root.
    return not os.access(path, os.W_OK) or not st.st_mode & 0o222


def same_file(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (same inode and device); False when
    ``path`` no longer exists."""
    try:
        now_st = os.stat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (now_st.st_ino, now_st.st_dev)


def read_fd(fd: int) -> bytes:
    """The whole content of the open file ``fd``, read from offset 0 up to its current size without moving
    its position."""
    size = os.fstat(fd).st_size
    chunks, pos = [], 0
    while pos < size:
        chunk = os.pread(fd, size - pos, pos)
        if not chunk:
            break
        chunks.append(chunk)
        pos += len(chunk)
    return b"".join(chunks)
