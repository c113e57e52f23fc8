"""Test-only fault injection: ``kill -9`` the pipeline at a named point.

The crash-safety tests start a pipeline process with ``UNLEARN_CRASH_AT=<point>`` and expect it
to die by ``SIGKILL`` exactly there, then run the same request again and check that it
completes. Nothing here does anything unless that variable is set; it must never be set in
production. ``SIGKILL`` (not an exception, not ``sys.exit``) is the point: no ``finally``
block, no atexit hook and no Prefect state hook runs, exactly as with ``kill -9`` or a power
cut.

Points (``CRASH_POINTS``), in the order a request passes them:

``unlearn.epoch``
    during unlearning, as soon as the engine has written its first per-epoch checkpoint;
``export.after_onnx``
    the model is packaged and exported to ONNX, nothing is in MLflow yet;
``registry.after_run``
    the MLflow run exists with its params, metrics and artifacts, no model version yet;
``registry.after_create_version``
    a model version exists without the completion tag (half-registered);
``registry.after_complete``
    the version is complete, no alias has moved;
``alias.after_move``
    the alias points at the new version, its audit record is not written;
``audit.before_completed``
    the alias move is recorded, the ``request.completed`` audit record is not;
``inbox.before_done``
    the flow returned, the request file is still in ``processing/``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CRASH_ENV", "CRASH_POINTS", "crash_point", "crash_when_file_appears"]

CRASH_ENV = "UNLEARN_CRASH_AT"
CRASH_POINTS = (
    "unlearn.epoch",
    "export.after_onnx",
    "registry.after_run",
    "registry.after_create_version",
    "registry.after_complete",
    "alias.after_move",
    "audit.before_completed",
    "inbox.before_done",
)


def _armed(name: str) -> bool:
    return os.environ.get(CRASH_ENV) == name


def _die(name: str) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.write(f"[fault injection] SIGKILL at {name}\n")
            stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def crash_point(name: str) -> None:
    """``SIGKILL`` this process when ``UNLEARN_CRASH_AT`` equals ``name``; else do nothing.

    Example:
        >>> crash_point("export.after_onnx")  # not armed: returns
    """
    if _armed(name):
        _die(name)


@contextlib.contextmanager
def crash_when_file_appears(
    name: str, directory: str | os.PathLike[str], pattern: str = "*", poll_s: float = 0.002
) -> Iterator[None]:
    """While the block runs, ``SIGKILL`` the process once a file matching ``pattern`` appears in
    ``directory`` (when ``name`` is armed).

    Used for ``unlearn.epoch``: the engine writes its checkpoint file atomically after each
    epoch, so the file's appearance means "epoch 1 is done and saved" without the core
    library knowing about fault injection. A watcher thread is needed because the engine's
    loop runs inside one call.

    Example:
        >>> with crash_when_file_appears("unlearn.epoch", "/nonexistent", "*.pt"):  # not armed
        ...     pass
    """
    if not _armed(name):
        yield
        return
    folder = Path(directory)
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if any(folder.glob(pattern)):
                _die(name)
            stop.wait(poll_s)

    watcher = threading.Thread(target=watch, name=f"crash-{name}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
