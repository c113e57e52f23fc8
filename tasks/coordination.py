"""Who may change what: Prefect global concurrency limits across hosts, local locks on one.

Two modes (``UNLEARN_COORDINATION``: ``server``, ``embedded`` or ``auto``, the default):

* **embedded** (one machine): the per-model and audit locks are ``flock``s / file locks on
  the local disk, as they always were. The kernel drops them when their holder dies.
* **server** (several hosts; ``auto`` picks it when Prefect talks to an API server *and*
  MLflow is a tracking server, i.e. when the registry is shared and a local file lock would
  serialise nothing): each lock is a Prefect *global concurrency limit* with one slot, held
  under a lease that the holder renews while it lives (``prefect.concurrency.sync``). A host
  that dies stops renewing; the server's repossessor frees the slot once the lease expires
  (``UNLEARN_LEASE_SECONDS``, 60 at the least), so a killed worker never blocks a model for
  ever.

Limits (created on first use, one slot each):

``unlearn-model-<model>``
    held by the unlearn flow for the whole request (the registry's version of the model
    changes only under it);
``unlearn-registry``
    held around each alias move (read the alias, tag the version, move it);
``unlearn-audit``
    one writer of the shared audit chain at a time;
``unlearn-alive-<flow run id>``
    held by each running unlearn flow: its lease is the run's pulse. :func:`interrupted_runs`
    treats a RUNNING run whose pulse stopped as dead (``unlearn recover`` reruns it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from tasks.locks import LockTimeoutError, file_lock, model_lock
from tasks.settings import PipelineSettings

__all__ = [
    "ALIVE_PREFIX",
    "AUDIT_LIMIT",
    "MODE_ENV",
    "LEASE_ENV",
    "REGISTRY_LIMIT",
    "Mode",
    "alive",
    "audit_writer",
    "coordination_mode",
    "lease_seconds",
    "limit_name",
    "model_slot",
    "registry_slot",
    "server_slot",
    "slot_holders",
]

MODE_ENV = "UNLEARN_COORDINATION"
LEASE_ENV = "UNLEARN_LEASE_SECONDS"
REGISTRY_LIMIT = "unlearn-registry"
AUDIT_LIMIT = "unlearn-audit"
ALIVE_PREFIX = "unlearn-alive-"
#: The Prefect server refuses leases under a minute.
_MIN_LEASE_S = 60.0

Mode = Literal["server", "embedded"]


def coordination_mode(settings: PipelineSettings) -> Mode:
    """``server`` when the work is shared between hosts, else ``embedded`` (see module doc).

    Example:
        >>> import os, tempfile
        >>> os.environ["UNLEARN_COORDINATION"] = "embedded"
        >>> coordination_mode(PipelineSettings.from_env(tempfile.mkdtemp()))
        'embedded'
        >>> del os.environ["UNLEARN_COORDINATION"]
    """
    value = os.environ.get(MODE_ENV, "auto").strip().lower()
    if value in ("server", "embedded"):
        return value  # type: ignore[return-value]
    if value not in ("", "auto"):
        raise ValueError(f"{MODE_ENV} must be server, embedded or auto, not {value!r}")
    from prefect.settings import PREFECT_API_URL

    shared_registry = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    return "server" if PREFECT_API_URL.value() and shared_registry else "embedded"


def lease_seconds() -> float:
    """How long a dead holder keeps a slot (``UNLEARN_LEASE_SECONDS``, default 120, min 60)."""
    return max(_MIN_LEASE_S, float(os.environ.get(LEASE_ENV) or 120))


def limit_name(kind: str, key: str = "") -> str:
    """A global concurrency limit's name: ``unlearn-<kind>[-<key>]`` (safe characters only).

    Example:
        >>> limit_name("model", "mnist5k-classifier")
        'unlearn-model-mnist5k-classifier'
    """
    raw = f"unlearn-{kind}" + (f"-{key}" if key else "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", raw)[:120]


def _ensure_limit(name: str) -> None:
    """Create the one-slot limit when missing: ``concurrency()`` on a missing limit would
    silently acquire nothing."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, 1)


def _holder() -> Any:
    """The lease's holder, the current flow run (shown by Prefect; ``None`` outside a run)."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id:
        return None
    from prefect.types._concurrency import ConcurrencyLeaseHolder

    return ConcurrencyLeaseHolder(type="flow_run", id=run_id)


@contextlib.contextmanager
def server_slot(name: str, timeout_s: float | None, what: str) -> Iterator[None]:
    """Hold the only slot of global concurrency limit ``name`` under a renewed lease.

    Raises:
        LockTimeoutError: Not acquired within ``timeout_s`` seconds.
    """
    from prefect.concurrency.sync import concurrency

    _ensure_limit(name)
    acquired = False
    try:
        with concurrency(
            name,
            occupy=1,
            timeout_seconds=timeout_s,
            lease_duration=lease_seconds(),
            strict=True,
            holder=_holder(),
        ):
            acquired = True
            yield
    except TimeoutError:
        if acquired:  # raised by the body, not by the acquisition
            raise
        raise LockTimeoutError(
            f"{what} is held by another worker (waited {timeout_s:g} s; Prefect global "
            f"concurrency limit {name!r})"
        ) from None


def model_slot(
    settings: PipelineSettings, model_name: str, timeout_s: float = 600.0
) -> contextlib.AbstractContextManager[None]:
    """The model's lock: limit ``unlearn-model-<name>`` (server) or its ``flock`` (embedded)."""
    if coordination_mode(settings) == "embedded":
        return model_lock(settings, model_name, timeout_s)
    return server_slot(limit_name("model", model_name), timeout_s, f"model {model_name!r}")


def registry_slot(
    settings: PipelineSettings, timeout_s: float = 300.0
) -> contextlib.AbstractContextManager[None]:
    """Around alias moves: ``unlearn-registry`` (server); embedded, the registry's own
    ``flock`` in :meth:`tasks.registry.ModelRegistry.set_alias` already serialises them."""
    if coordination_mode(settings) == "embedded":
        return contextlib.nullcontext()
    return server_slot(REGISTRY_LIMIT, timeout_s, "the registry's aliases")


@contextlib.contextmanager
def audit_writer(settings: PipelineSettings, lock_file: Path | None) -> Iterator[None]:
    """One writer of the shared audit chain: ``unlearn-audit`` (server), else a file lock
    (next to a log in a shared folder, or in the project's lock folder)."""
    if coordination_mode(settings) == "server":
        with server_slot(AUDIT_LIMIT, 300.0, "the audit log"):
            yield
        return
    with file_lock(lock_file or settings.locks_dir / "audit.lock", "the audit log", 300.0):
        yield


@contextlib.contextmanager
def alive(settings: PipelineSettings) -> Iterator[None]:
    """Server mode, inside a flow run: hold ``unlearn-alive-<flow run id>`` while the run
    lives (its lease is the run's pulse); the limit is deleted when the run ends."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    if not run_id or coordination_mode(settings) == "embedded":
        yield
        return
    name = ALIVE_PREFIX + str(run_id)
    with server_slot(name, 30.0, f"flow run {run_id}"):
        yield
    with contextlib.suppress(Exception):  # a leftover limit only costs a row
        from prefect import get_client

        with get_client(sync_client=True) as client:
            client.delete_global_concurrency_limit_by_name(name)


def slot_holders(name: str) -> int | None:
    """Active slots of limit ``name`` (``None`` when the limit does not exist)."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return int(client.read_global_concurrency_limit_by_name(name).active_slots)
        except ObjectNotFound:
            return None


def pulse_stopped(run_id: str, started: dt.datetime | None, now: dt.datetime) -> bool:
    """A RUNNING flow run is dead: its pulse limit is free, or it never appeared though the
    run started longer ago than a lease plus a minute of start-up."""
    held = slot_holders(ALIVE_PREFIX + run_id)
    if held is None:
        return started is not None and (now - started).total_seconds() > lease_seconds() + 60
    return held == 0
