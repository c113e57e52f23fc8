"""What a person at a terminal sees while a command runs: quiet libraries, ``rich`` progress.

* :func:`quiet_environment` sets, before Prefect or MLflow is imported, the variables that
  turn off their telemetry (whose failures print ``ERROR`` lines offline) and MLflow's
  ``Downloading artifacts`` bars, as the Makefile does for ``make`` targets.
* :func:`hide_prefect_failure_logs` keeps a failing flow's tracebacks out of the terminal:
  the command reports the failure in one line, and Prefect's API (its UI, when a server is
  used) still receives the full log.
* :func:`live_progress` draws a spinner for the running step and one bar with an ETA per
  training or unlearning run, from the :mod:`delete.progress` events the library reports.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from delete.progress import EpochProgress, progress_listener

__all__ = [
    "QUIET_ENV",
    "EpochBars",
    "EpochLines",
    "console_script",
    "hide_prefect_failure_logs",
    "live_progress",
    "quiet_environment",
]

#: Set (unless already set) in every ``unlearn`` process before Prefect or MLflow loads.
QUIET_ENV: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def quiet_environment(root: Path | None = None) -> None:
    """Apply :data:`QUIET_ENV`; use ``root/.prefect`` as Prefect's home when it exists.

    ``make demo`` keeps its Prefect history in ``<root>/.prefect``; a command on the same
    root then adds to that history instead of ``~/.prefect``. A root without that folder
    keeps the user's Prefect profile. Too late once Prefect is imported (its settings are
    read at import), so nothing is changed then.
    """
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    if root is not None and "prefect" not in sys.modules and (root / ".prefect").is_dir():
        os.environ.setdefault("PREFECT_HOME", str(root / ".prefect"))


class _NoFailureTraces(logging.Filter):
    """Drops the records a failure produces: tracebacks and the flow/task runs' errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return False
        failed_run = record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))
        # At exit Prefect's event worker may still be flushing to the API and says so; the
        # events still reach the API, and the operator's one error line must stay one line.
        flushing = record.getMessage().startswith("Still processing items")
        return not ((failed_run and record.levelno >= logging.ERROR) or flushing)


def hide_prefect_failure_logs() -> None:
    """Filter Prefect's terminal handler (call after Prefect is imported; idempotent)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _NoFailureTraces) for f in handler.filters
        ):
            handler.addFilter(_NoFailureTraces())


def _describe(event: EpochProgress) -> str:
    """``train``, or ``unlearn delete``: the stage, and the method when there is one."""
    return event.label if event.stage == event.label else f"{event.stage} {event.label}"


class EpochBars:
    """A :data:`delete.progress.ProgressCallback` drawing one bar per ``stage label``.

    A new run under the same label (the automatic selection's next candidate, a resumed
    run) restarts that bar rather than adding one.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._bars: dict[tuple[str, str], tuple[int, TaskID]] = {}

    def __call__(self, event: EpochProgress) -> None:
        key = (event.stage, event.label)
        detail = f"{event.epoch}/{event.total} {event.unit}"
        if event.loss is not None:
            detail += f", loss {event.loss:.4f}"
        known = self._bars.get(key)
        if known is None or known[0] != event.run:
            if known is not None:
                self.progress.remove_task(known[1])
            description = _describe(event)
            task = self.progress.add_task(
                description, total=event.total, completed=event.epoch, detail=detail
            )
            self._bars[key] = (event.run, task)
            return
        self.progress.update(known[1], total=event.total, completed=event.epoch, detail=detail)


class _Eta(TimeRemainingColumn):
    """``ETA 0:01:23`` for a bar; nothing for the step spinner, whose length is unknown."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text.assemble("ETA ", super().render(task))


class EpochLines:
    """A :data:`delete.progress.ProgressCallback` printing one plain line per finished epoch,
    with an ETA, for output that is read later (logs, ``make demo`` among Prefect's lines).

    Example:
        >>> lines = EpochLines(clock=iter([0.0, 10.0, 20.0]).__next__)
        >>> for epoch in range(3):
        ...     lines(EpochProgress("train", "train", run=1, epoch=epoch, total=4, loss=0.5))
        train: epoch 1/4, loss 0.5000, ETA 0:00:30
        train: epoch 2/4, loss 0.5000, ETA 0:00:20
    """

    def __init__(
        self, write: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.write = write
        self.clock = clock
        self._started: dict[int, tuple[float, int]] = {}

    def __call__(self, event: EpochProgress) -> None:
        if event.unit != "epochs":
            return  # a line per evaluation batch would drown the log
        now = self.clock()
        started, first = self._started.setdefault(event.run, (now, event.epoch))
        if event.epoch <= first:
            return
        per_epoch = (now - started) / (event.epoch - first)
        remaining = dt.timedelta(seconds=round(per_epoch * max(event.total - event.epoch, 0)))
        loss = "" if event.loss is None else f", loss {event.loss:.4f}"
        self.write(f"{_describe(event)}: epoch {event.epoch}/{event.total}{loss}, ETA {remaining}")


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        _Eta(),
        console=console,
        # epochs take seconds to minutes: estimate the speed over all of them
        speed_estimate_period=3600.0,
    )


@contextmanager
def live_progress(message: str, console: Console | None = None) -> Iterator[None]:
    """Show ``message`` with a spinner and a bar per training/unlearning run, on a terminal.

    Logs and pipes (anything but a terminal) get nothing: a redrawn bar is noise there.
    """
    console = console if console is not None else Console(stderr=True)
    if not console.is_terminal:
        yield
        return
    with _progress(console) as progress:
        progress.add_task(message, total=None, detail="")
        with progress_listener(EpochBars(progress)):
            yield


def console_script(name: str) -> str:
    """How to call this environment's console script ``name`` so that it works as printed.

    The bare name when that script is what the shell finds, else its path (relative to the
    working directory when inside it): ``make demo`` runs ``.venv/bin/python`` without the
    virtual environment being active, so plain ``unlearn`` is usually not on ``PATH``.
    """
    script = Path(sys.executable).parent / name  # the venv's bin/, symlinks not followed
    if not script.exists():
        return f"{sys.executable} -m flows.cli" if name == "unlearn" else name
    found = shutil.which(name)
    if found and Path(found).resolve() == script.resolve():
        return name
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script)
