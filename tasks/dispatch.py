"""Requests through a Prefect server: submit a flow run, read the runs' states, rerun dead ones.

With a server (:func:`tasks.coordination.coordination_mode` is ``server``) a request is not a
file in one machine's inbox but a flow run of the ``unlearn/unlearn-on-demand`` deployment
with the request as its parameter; any worker of the work pool, on any host, picks it up. Its
tags say which request it carries (``request:<id>``), and its idempotency key (id + content
hash) makes a repeated submit return the same run.

A host that dies mid-request leaves its run RUNNING for ever (nobody is left to report it);
:func:`recover_interrupted` marks such a run CRASHED once its pulse (the ``unlearn-alive-<run>``
lease) has stopped, and creates a new run of the same request, which another worker picks up.
The unlearn flow is idempotent (``flows._resume``), so the rerun finishes or redoes the work
and nothing is applied twice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.coordination import pulse_stopped
from tasks.requests import DeletionRequest, RequestError

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

__all__ = [
    "DEPLOYMENT",
    "GPU_DEPLOYMENT",
    "MAX_RERUNS",
    "REQUEST_TAG",
    "RERUN_DONE_TAG",
    "RunStatus",
    "recover_interrupted",
    "request_runs",
    "submit_flow_run",
]

DEPLOYMENT = "unlearn/unlearn-on-demand"
GPU_DEPLOYMENT = "unlearn/unlearn-on-demand-gpu"
#: Every flow run that carries a deletion request has this tag (and ``request:<id>``).
REQUEST_TAG = "deletion-request"
#: On a crashed run once its rerun exists.
RERUN_DONE_TAG = "rerun-created"
MAX_RERUNS = 3
_LIVE = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "COMPLETED")


@dataclass(frozen=True)
class RunStatus:
    """One flow run of a request, as ``unlearn status`` shows it."""

    request_id: str
    state: str
    flow_run_id: str
    flow_run_name: str
    deployment: str | None
    started: str | None
    message: str | None
    tags: tuple[str, ...] = ()


def _request_id(tags: list[str]) -> str:
    return next((t.split(":", 1)[1] for t in tags if t.startswith("request:")), "?")


def request_runs(request_id: str | None = None, limit: int = 200) -> list[RunStatus]:
    """The flow runs carrying deletion requests (newest first), or those of one request."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    tags = [REQUEST_TAG] + ([f"request:{request_id}"] if request_id else [])
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags)),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )
    return [
        RunStatus(
            request_id=_request_id(list(run.tags)),
            state=str(run.state.name) if run.state else "UNKNOWN",
            flow_run_id=str(run.id),
            flow_run_name=run.name,
            deployment=str(run.deployment_id) if run.deployment_id else None,
            started=run.start_time.isoformat(timespec="seconds") if run.start_time else None,
            message=(run.state.message or None) if run.state else None,
            tags=tuple(run.tags),
        )
        for run in runs
    ]


def submit_flow_run(request: DeletionRequest, *, gpu: bool = False) -> RunStatus:
    """Create a flow run of the on-demand deployment for ``request`` (validated beforehand).

    Raises:
        RequestError: The id is queued, running or done with *other* content.
    """
    from prefect.deployments import run_deployment

    key = f"{request.request_id}:{request.content_hash()[:32]}"
    content = f"content:{request.content_hash()[:16]}"
    for run in request_runs(request.request_id):
        # by tag: the flow renames its run (unlearn/<id>) when it starts
        if run.state.upper() in _LIVE and content not in run.tags:
            raise RequestError(
                f"request_id '{request.request_id}' is already {run.state.lower()} as flow run "
                f"{run.flow_run_name} with other content; a new request needs a new id"
            )
    flow_run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync call: a FlowRun
        GPU_DEPLOYMENT if gpu else DEPLOYMENT,
        parameters={"request": request.to_json_dict()},
        timeout=0,  # queue it; a worker runs it
        flow_run_name=f"unlearn-{request.request_id}-{key[-8:]}",
        tags=[REQUEST_TAG, f"request:{request.request_id}", content],
        idempotency_key=key,  # a repeated submit returns the same run
    )
    return RunStatus(
        request_id=request.request_id,
        state=str(flow_run.state.name) if flow_run.state else "SCHEDULED",
        flow_run_id=str(flow_run.id),
        flow_run_name=flow_run.name,
        deployment=str(flow_run.deployment_id),
        started=None,
        message=None,
    )


def recover_interrupted(now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Mark dead RUNNING request runs CRASHED and rerun every crashed one not rerun yet.

    A run is dead when its pulse stopped (:func:`tasks.coordination.pulse_stopped`); a run the
    worker itself reported CRASHED (its process was killed) is rerun as it is. The rerun's
    idempotency key names the crashed run, so calling this twice reruns it once.

    Returns:
        ``{"request_id", "crashed_run", "rerun"}`` per rerun created.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    now = now or dt.datetime.now(dt.UTC)
    out: list[dict[str, Any]] = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[REQUEST_TAG]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.CRASHED])
                ),
            )
        )
        for run in runs:
            if run.deployment_id is None or run.state is None or RERUN_DONE_TAG in run.tags:
                continue
            if run.name.count("-rerun") >= MAX_RERUNS:
                continue  # a request that kills its worker every time needs a person
            if run.state.type == StateType.RUNNING:
                if not pulse_stopped(str(run.id), run.start_time, now):
                    continue
                client.set_flow_run_state(
                    run.id,
                    Crashed(message="its worker stopped (lease of its pulse expired)"),
                    force=True,
                )
            rerun = client.create_flow_run_from_deployment(
                run.deployment_id,
                parameters=run.parameters,
                name=f"{run.name}-rerun"[:100],
                tags=list(run.tags),
                idempotency_key=f"rerun-of-{run.id}",
            )
            # marked after the rerun exists: a recoverer dying in between reruns it again,
            # and the idempotency key makes that the same rerun
            client.update_flow_run(run.id, tags=[*run.tags, RERUN_DONE_TAG])
            out.append(
                {
                    "request_id": _request_id(list(run.tags)),
                    "crashed_run": str(run.id),
                    "rerun": str(rerun.id),
                }
            )
    return out
