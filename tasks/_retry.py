"""Which failures a Prefect task may retry: transient I/O of the MLflow store and the DVC remote.

Only the tasks that talk to those stores carry ``retries``, and even there a retry only helps
when the failure could go away by itself (a locked SQLite file, a dropped connection, a busy
remote). A missing file, a bad argument or a corrupt model fails the same way every time, so
:func:`retry_on_transient_io` (the tasks' ``retry_condition_fn``) ends those at once instead
of re-running them with back-off.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "is_transient_io",
    "retry_on_transient_io",
    "IO_RETRY_DELAYS_S",
    "IO_RETRY_POLICY",
    "io_retrying",
]

# MLflow error codes that mean "try again later" (SQLite "database is locked" is the first).
_TRANSIENT_MLFLOW_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED"}
)
_PERMANENT_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient_io(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps) is I/O trouble that a retry may cure.

    Example:
        >>> is_transient_io(ConnectionResetError("peer reset"))
        True
        >>> is_transient_io(ValueError("bad argument"))
        False
    """
    for err in _chain(exc):
        if isinstance(err, _PERMANENT_OS_ERRORS):
            return False
        if isinstance(err, OSError):  # connections, timeouts, NFS hiccups
            return True
        module, name = type(err).__module__, type(err).__name__
        if name == "OperationalError" and module.startswith(("sqlite3", "sqlalchemy")):
            return True  # e.g. SQLite "database is locked"
        code = getattr(err, "error_code", None)
        if module.startswith("mlflow") and code in _TRANSIENT_MLFLOW_CODES:
            return True
        if module.startswith("dvc"):  # a DvcException raised while pushing to the remote
            return True
    return False


def retry_on_transient_io(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient I/O."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable state: let the retry policy decide
        return True
    return not isinstance(exc, BaseException) or is_transient_io(exc)


#: Seconds before each retry of a transient I/O failure (three retries, backing off).
IO_RETRY_DELAYS_S: tuple[float, ...] = (1, 5, 15)

#: Keyword arguments of every I/O task: three retries with back-off, transient failures only.
IO_RETRY_POLICY: dict[str, Any] = {
    "retries": len(IO_RETRY_DELAYS_S),
    "retry_delay_seconds": list(IO_RETRY_DELAYS_S),
    "retry_condition_fn": retry_on_transient_io,
}


def io_retrying(delays_s: Sequence[float] = IO_RETRY_DELAYS_S) -> Any:
    """The same policy for one call (a ``tenacity.Retrying``): retry transient I/O only, after
    each of ``delays_s`` in turn, then re-raise the last error as it was.

    Example:
        >>> calls = []
        >>> def flaky():
        ...     calls.append(1)
        ...     if len(calls) < 2:
        ...         raise ConnectionResetError("peer reset")
        ...     return "ok"
        >>> io_retrying((0,))(flaky), len(calls)
        ('ok', 2)
    """
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_chain, wait_fixed

    delays = list(delays_s)
    return Retrying(
        retry=retry_if_exception(is_transient_io),
        stop=stop_after_attempt(len(delays) + 1),
        wait=wait_chain(*(wait_fixed(d) for d in delays)) if delays else wait_fixed(0),
        reraise=True,
    )
