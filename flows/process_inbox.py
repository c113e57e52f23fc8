"""``process_inbox`` flow: drain ``requests/inbox/`` in arrival order, one model at a time.

Every claimed request ends in ``requests/done/`` (with a result summary) or
``requests/failed/`` (with a one-line reason), and every outcome is in the audit log: invalid
files are ``request.rejected`` here; the ``unlearn`` subflow records everything else.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from flows._common import settings_for
from flows.unlearn import RequestOutcomeError, unlearn_flow
from tasks._common import one_line
from tasks._faults import crash_point
from tasks.audit import AuditLog, open_audit_log
from tasks.coordination import model_slot
from tasks.inbox import Claim, Inbox
from tasks.locks import LockTimeoutError
from tasks.settings import PipelineSettings

__all__ = ["process_inbox_flow", "run_name"]


def run_name(request_id: str) -> str:
    """The ``unlearn`` flow run's name for a request (Prefect formats it: braces escaped).

    Example:
        >>> run_name("forget-digit-7")
        'unlearn/forget-digit-7'
    """
    return "unlearn/" + request_id.replace("{", "{{").replace("}", "}}")


@flow(name="process-inbox", log_prints=True)
def process_inbox_flow(
    root: str | None = None,
    model: str | None = None,
    max_requests: int | None = None,
    device: str = "auto",
    lock_timeout_s: float = 600.0,
    stale_after_s: float = 3600.0,
) -> list[dict[str, Any]]:
    """Process queued deletion requests, oldest first.

    Args:
        root: Project root (``UNLEARN_HOME`` or the working directory when ``None``).
        model: Only requests for this registered model.
        max_requests: Stop after this many requests (``None``: until the inbox is empty).
        device: Passed to the ``unlearn`` subflow.
        lock_timeout_s: Wait this long for a model's lock; on timeout the request goes back
            to the inbox and the drain stops (another worker is on that model).
        stale_after_s: Claims older than this whose owner is gone go back to the inbox first.

    Returns:
        One summary per request: ``{request_id, file, state, ...}``.
    """
    settings = settings_for(root)
    audit = open_audit_log(settings)  # fail before claiming anything if there is no key
    inbox = Inbox(settings)
    inbox.ensure_dirs()
    recovered = inbox.recover_stale(stale_after_s)
    if recovered:
        print(f"recovered {len(recovered)} abandoned claim(s) back into the inbox")
    results: list[dict[str, Any]] = []
    while max_requests is None or len(results) < max_requests:
        claim = inbox.claim_next(model)
        if claim is None:
            break
        if claim.request is None:
            results.append(_reject_unparsed(inbox, audit, claim))
            continue
        outcome = _process_claim(settings, inbox, audit, claim, device, lock_timeout_s)
        if outcome is None:  # another worker holds the model: leave the rest for later
            break
        results.append(outcome)
    print(
        f"processed {len(results)} request(s): "
        f"{sum(r['state'] == 'done' for r in results)} done, "
        f"{sum(r['state'] == 'failed' for r in results)} failed"
    )
    return results


def _reject_unparsed(inbox: Inbox, audit: AuditLog, claim: Claim) -> dict[str, Any]:
    """A claimed file that is not a valid request: audited, moved to ``failed/``."""
    reason = claim.error or "invalid request file"
    audit.append(
        "request.rejected",
        {"request_id": None, "file": claim.name, "reason": reason, "stage": "validation"},
    )
    path = inbox.mark_failed(claim, f"rejected: {reason}")
    print(f"{claim.name}: rejected: {reason}")
    return {"request_id": None, "file": str(path), "state": "failed", "reason": reason}


def _process_claim(
    settings: PipelineSettings,
    inbox: Inbox,
    audit: AuditLog,
    claim: Claim,
    device: str,
    lock_timeout_s: float,
) -> dict[str, Any] | None:
    """Run one claimed request through the ``unlearn`` subflow and file it as done or failed;
    ``None`` (the claim back in the inbox) when its model stays locked by another worker."""
    request = claim.request
    assert request is not None  # unparsed claims go to _reject_unparsed
    started = time.perf_counter()
    try:
        with model_slot(settings, request.model_ref().name, lock_timeout_s):
            # named after the request in Prefect's UI, not a random `cream-aardvark`
            named = unlearn_flow.with_options(flow_run_name=run_name(request.request_id))
            summary = named(
                request=request.to_json_dict(),
                root=str(settings.root),
                device=device,
                hold_lock=False,
            )
    except LockTimeoutError as exc:
        inbox.release(claim)
        print(f"{request.request_id}: {one_line(exc)}; left in the inbox")
        return None
    except RequestOutcomeError as exc:
        path = inbox.mark_failed(claim, f"{exc.status}: {exc.reason}")
        print(f"{request.request_id}: {exc.status}: {exc.reason}")
        return {
            "request_id": request.request_id,
            "file": str(path),
            "state": "failed",
            "status": exc.status,
            "reason": exc.reason,
            "record_path": exc.record_path,
            "seconds": round(time.perf_counter() - started, 3),
        }
    except Exception as exc:  # noqa: BLE001 - the request must not be lost in processing/
        reason = one_line(exc)
        audit.append(
            "request.failed",
            {"request_id": request.request_id, "reason": reason, "stage": "pipeline"},
        )
        path = inbox.mark_failed(claim, f"failed: {reason}")
        print(f"{request.request_id}: failed: {reason}")
        return {
            "request_id": request.request_id,
            "file": str(path),
            "state": "failed",
            "reason": reason,
        }
    crash_point("inbox.before_done")
    path = inbox.mark_done(claim, summary)
    return {**summary, "file": str(path), "state": "done"}


if __name__ == "__main__":
    process_inbox_flow()
