"""Epoch progress events: the library reports, whoever listens renders.

Training (:func:`delete.training.train_classifier`) and unlearning (every
:class:`delete.engine.EngineRun`, so every method and the automatic selection's candidates)
report one :class:`EpochProgress` when they start and one per finished epoch to the listeners
registered with :func:`progress_listener`; evaluation passes (:func:`delete.metrics.predict`
over a dataset) report per batch (``stage="evaluate"``, ``unit="batches"``). The library
itself stays free of any terminal code: a command line renders the events (``unlearn`` draws
``rich`` bars with an ETA), a notebook may log them.

Listeners are process-wide rather than a parameter, because the code that starts a run (a
pipeline task, a benchmark) is rarely the code that knows where progress should be shown.

Example:
    >>> seen = []
    >>> with progress_listener(seen.append):
    ...     report_epoch(EpochProgress("train", "train", run=1, epoch=1, total=2, loss=0.5))
    >>> [(e.label, e.epoch, e.total) for e in seen]
    [('train', 1, 2)]
    >>> report_epoch(EpochProgress("train", "train", run=1, epoch=2, total=2))  # nobody listens
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "EpochProgress",
    "ProgressCallback",
    "has_listeners",
    "progress_listener",
    "report_epoch",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochProgress:
    """One finished epoch.

    Attributes:
        stage: ``"train"`` (supervised training) or ``"unlearn"``.
        label: What is running, for a human (``"train"``, ``"delete"``, a selection candidate).
        run: Tells apart runs that report side by side (the automatic selection probes
            several candidates); constant for the epochs of one run.
        epoch: Epochs finished so far: ``0`` when a run starts (so a listener can time the
            first epoch too), then 1, 2, ...
        total: Epochs planned; under automatic selection an upper bound (the stopping rule
            may end the run sooner).
        loss: Mean training loss of the epoch, when known.
        unit: What ``epoch`` and ``total`` count: ``epochs``, or ``batches`` for an
            evaluation pass (``stage="evaluate"``).
    """

    stage: str
    label: str
    run: int
    epoch: int
    total: int
    loss: float | None = None
    unit: str = "epochs"


ProgressCallback = Callable[[EpochProgress], None]

_listeners: list[ProgressCallback] = []
# Pipeline tasks may run in worker threads; the list is shared, so guard its changes.
_lock = threading.Lock()


@contextmanager
def progress_listener(callback: ProgressCallback) -> Iterator[None]:
    """Call ``callback`` with every epoch reported while the block runs (any thread)."""
    with _lock:
        _listeners.append(callback)
    try:
        yield
    finally:
        with _lock:
            _listeners.remove(callback)


def has_listeners() -> bool:
    """Whether anybody listens (a hot loop skips building events nobody reads)."""
    return bool(_listeners)


def report_epoch(event: EpochProgress) -> None:
    """Hand ``event`` to every listener; a failing listener never stops the training."""
    with _lock:
        listeners = list(_listeners)
    for callback in listeners:
        try:
            callback(event)
        except Exception:  # noqa: BLE001 - progress display must not cost a training run
            log.debug("progress listener %r failed", callback, exc_info=True)
