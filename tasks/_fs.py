"""Crash-safe file primitives shared by the inbox and the audit log.

A reader must never see half a file: every write goes to a temporary file in the same
directory, is fsynced, then ``os.replace``-d over the target, and the directory is fsynced
so the rename itself survives a power cut. Moves are ``os.rename`` within one filesystem,
which is atomic: a file is either at its old name or at its new one, never at both or neither.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "rename_no_clobber"]


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry so a rename or create in it is durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (e.g. certain network mounts) refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file + fsync + ``os.replace``).

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> atomic_write_bytes(d / "x.txt", b"hi").read_bytes()
        b'hi'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def rename_no_clobber(src: Path, dst_dir: Path, name: str) -> Path:
    """Atomically move ``src`` into ``dst_dir`` under ``name``, never overwriting a file there.

    ``os.rename`` silently replaces an existing target on POSIX; a request file must never be
    lost that way, so a taken name gets a ``.N`` counter before its extension.

    Raises:
        FileNotFoundError: ``src`` is gone (another process moved it first).
    """
    dst_dir.mkdir(parents=True, exist_ok=True)
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    candidate = dst_dir / name
    n = 0
    while candidate.exists():
        n += 1
        candidate = dst_dir / (f"{stem}.{n}.{ext}" if ext else f"{name}.{n}")
    os.rename(src, candidate)
    fsync_dir(dst_dir)
    return candidate
