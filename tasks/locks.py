"""The pipeline's cross-process locks on one machine, all built on ``filelock``.

Every lock here is a :class:`filelock.UnixFileLock`: an ``flock(2)`` on a file that stays in
place. The kernel drops an ``flock`` when the last descriptor of its holder closes, and a
process killed with ``kill -9`` closes them all, so no lock here is ever left stale. The soft
(marker-file) fallback that ``filelock`` uses on file systems without ``flock`` is switched
off: a marker file *can* outlive a killed holder, and a lock that may go stale is worse here
than one that fails loudly.

Locks (all under :attr:`~tasks.settings.PipelineSettings.locks_dir` unless said otherwise):

``<model>.lock``
    :func:`model_lock`, held while a registered model is changed (one request at a time);
``inbox.lock``
    :func:`inbox_lock`, held while a submission is checked against the queue and written;
``mlflow-registry.lock``
    :func:`registry_write_lock`, around registry writes (SQLite has one writer at a time);
``.dvc/tmp/unlearn-pipeline.lock``
    :func:`dvc_repo_lock`, around DVC commands (DVC's own repo lock fails fast; this queues).

The model and inbox locks write ``<pid>@<host>`` into their file once held: a note for a human
looking at a stuck pipeline, never read back (the ``flock`` is the lock). Across hosts the
per-model and registry locks become Prefect concurrency slots (:mod:`tasks.coordination`).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

from filelock import Timeout as FileLockTimeout
from filelock import UnixFileLock

from tasks._common import PipelineError
from tasks.requests import MODEL_NAME_PATTERN
from tasks.settings import PipelineSettings

__all__ = [
    "LockError",
    "LockTimeoutError",
    "file_lock",
    "model_lock",
    "inbox_lock",
    "registry_write_lock",
    "dvc_repo_lock",
]

_POLL_S = 0.05


class LockError(PipelineError):
    """A lock cannot be taken (a bad name, or it is held for too long); one-line message."""


class LockTimeoutError(LockError, TimeoutError):
    """Another process holds the lock for longer than the caller agreed to wait."""


def _host_token() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:32] or "host"


def _write_holder(fd: int) -> None:
    """``filelock``'s ``on_acquired`` hook: note who holds the lock, in the lock file itself."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}@{_host_token()}\n".encode(), 0)


@contextlib.contextmanager
def file_lock(
    path: Path, what: str, timeout_s: float | None = None, *, note_holder: bool = False
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created with its folder when missing).

    Args:
        path: The lock file.
        what: What the lock protects, for the timeout's message (e.g. ``model 'mnist'``).
        timeout_s: Seconds to wait; ``0`` tries once, ``None`` waits for as long as it takes.
        note_holder: Write ``<pid>@<host>`` into the file once held.

    Raises:
        LockTimeoutError: Not acquired within ``timeout_s`` seconds; the one-line message names
            ``what`` and the lock file.

    Example:
        >>> import tempfile
        >>> lock = Path(tempfile.mkdtemp()) / "x.lock"
        >>> with file_lock(lock, "the example", timeout_s=0):
        ...     pass
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = UnixFileLock(
        str(path),
        timeout=-1 if timeout_s is None else max(0.0, timeout_s),
        poll_interval=_POLL_S,
        # a soft marker file can outlive a killed holder; an flock never does (module doc)
        fallback_to_soft=False,
        on_acquired=_write_holder if note_holder else None,
    )
    try:
        lock.acquire()
    except FileLockTimeout:
        waited = f"waited {timeout_s:g} s; " if timeout_s is not None else ""
        raise LockTimeoutError(
            f"{what} is locked by another process ({waited}lock file {path})"
        ) from None
    try:
        yield
    finally:
        lock.release()


def model_lock(
    settings: PipelineSettings, model_name: str, timeout_s: float = 600.0
) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive, cross-process lock on one registered model while it is changed.

    The lock is an ``flock`` on ``settings.locks_dir/<model>.lock``; the kernel drops it when
    the holder dies, so a ``kill -9`` never leaves a stale lock behind.

    Raises:
        LockTimeoutError: Not acquired within ``timeout_s`` seconds (0 = try once).
        LockError: ``model_name`` is not a valid model name.

    Example:
        >>> import tempfile
        >>> s = PipelineSettings.from_env(tempfile.mkdtemp())
        >>> with model_lock(s, "mnist", timeout_s=1):
        ...     pass
    """
    if not re.fullmatch(MODEL_NAME_PATTERN, model_name or ""):
        raise LockError(f"cannot lock model {model_name!r}: not a valid model name")
    path = settings.locks_dir / f"{model_name}.lock"
    return file_lock(path, f"model {model_name!r}", timeout_s, note_holder=True)


def inbox_lock(
    settings: PipelineSettings, timeout_s: float = 30.0
) -> contextlib.AbstractContextManager[None]:
    """The inbox's lock: one submission at a time is checked against the queue and written."""
    return file_lock(settings.locks_dir / "inbox.lock", "the inbox", timeout_s, note_holder=True)


def registry_write_lock(
    settings: PipelineSettings, timeout_s: float | None = None
) -> contextlib.AbstractContextManager[None]:
    """Serialise registry writes between processes (SQLite allows one writer at a time)."""
    return file_lock(settings.locks_dir / "mlflow-registry.lock", "the MLflow registry", timeout_s)


def dvc_repo_lock(
    settings: PipelineSettings, timeout_s: float | None = None
) -> contextlib.AbstractContextManager[None]:
    """Queue DVC commands of concurrent pipelines (DVC's own repo lock fails fast instead).

    The file lives in ``.dvc/tmp/``, next to DVC's own lock, so every clone has its own.
    """
    path = settings.root / ".dvc" / "tmp" / "unlearn-pipeline.lock"
    return file_lock(path, "the DVC repository", timeout_s)
