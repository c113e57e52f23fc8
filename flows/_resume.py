"""Idempotency of the unlearn flow: a request id is applied once, and a killed run is finished.

A request's id is burnt by a complete model version (whatever its gate verdict) or by a record
of a run that got that far. A request *rejected* before anything ran (unknown model, bad class,
a method's bad hyper-parameter: things the operator fixes in the file) leaves its id free, so
the corrected file can be resubmitted under the same id.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from delete.selection import trial_label
from flows._common import resume_alias_move, utc_now
from tasks.audit import AuditError, AuditLog, read_request_record, write_request_record
from tasks.record import RequestRecord
from tasks.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_ALIAS_APPLIED,
    TAG_CONTENT_HASH,
    TAG_VERDICT,
    ModelRegistry,
)
from tasks.requests import DeletionRequest, RequestError
from tasks.settings import PipelineSettings

__all__ = [
    "ConflictError",
    "completed_payload",
    "conflict",
    "finish_existing",
    "prior_content_hash",
]


class ConflictError(RequestError):
    """The request id was already applied with different content."""


def conflict(request: DeletionRequest, other_hash: str, where: str) -> ConflictError:
    return ConflictError(
        f"request_id '{request.request_id}' was already used with different content ({where}): "
        f"content sha256 {request.content_hash()[:12]}... != {other_hash[:12]}...; "
        "use a new request_id"
    )


def prior_content_hash(settings: PipelineSettings, request_id: str) -> str | None:
    """Content hash of the request that burnt ``request_id``, if one did.

    A record of a request rejected as written does not burn the id: nothing ran for it.
    """
    try:
        stored = read_request_record(settings, request_id)
    except AuditError:
        return None
    if stored.get("status") == "rejected" and stored.get("error_type") != ConflictError.__name__:
        return None
    value = stored.get("request_content_sha256")
    return value if isinstance(value, str) else None


def _selection_audit(selection: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The selection's decision for the audit chain (the per-epoch signals stay in the record,
    whose SHA-256 the chain holds)."""
    if not selection:
        return None
    return {
        "mode": selection.get("mode"),
        "tried": [_tried(t) for t in selection.get("tried", [])],
        "chosen": selection.get("chosen"),
        "epochs": selection.get("epochs"),
        "kept_epoch": selection.get("best_epoch"),
        "stop_reason": selection.get("stop_reason"),
        "selection_size": selection.get("selection_size"),
    }


def _tried(trial: Mapping[str, Any]) -> str:
    """``candidate (status)``, with the rule that tried it where a request ran two (a short
    forget set with a selection sample tries the same candidates under both rules)."""
    return f"{trial_label(str(trial.get('candidate')), trial.get('rule'))} ({trial.get('status')})"


def completed_payload(record: RequestRecord, record_path: Path) -> dict[str, Any]:
    """The ``request.completed`` audit payload, from the request's record."""
    verdict = record.verdict or {}
    return {
        "request_id": record.request_id,
        "model": record.model,
        "parent_version": record.parent_version,
        "version": record.version,
        "alias": record.alias,
        "verdict": verdict.get("verdict"),
        "reasons": verdict.get("reasons"),
        "forget_classes": record.forget_classes,
        "data_dvc_md5": (record.data_version or {}).get("md5"),
        "forget_manifest_dvc_md5": (record.forget_manifest or {}).get("dvc_md5"),
        "weights_sha256": record.weights_sha256,
        "onnx_sha256": (record.onnx or {}).get("sha256"),
        "mlflow_run_id": record.mlflow_run_id,
        "flow_run_id": record.flow_run_id,
        "selection": _selection_audit(record.selection),
        "record_path": str(record_path),
        "record_sha256": hashlib.sha256(record_path.read_bytes()).hexdigest(),
    }


def _record_for_resume(
    settings: PipelineSettings,
    request: DeletionRequest,
    name: str,
    version: int,
    tags: Mapping[str, str],
) -> RequestRecord:
    """The record written before the version was marked complete (or one rebuilt from tags)."""
    try:
        stored = RequestRecord.from_json_dict(read_request_record(settings, request.request_id))
    except (AuditError, ValidationError):
        stored = None
    if (
        stored is not None
        and stored.version == version
        and stored.mlflow_run_id == tags.get("mlflow_run_id")
    ):
        return stored
    verdict = tags.get(TAG_VERDICT, "rejected")
    return RequestRecord(
        request_id=request.request_id,
        status="registered",
        request=request.to_json_dict(),
        request_content_sha256=request.content_hash(),
        model=name,
        version=version,
        parent_version=tags.get("parent.version"),
        forget_classes=tags.get("forget_classes"),
        data_version={"md5": tags.get("data.dvc_md5"), "git_rev": tags.get("data.git_rev")},
        forget_manifest={"dvc_md5": tags.get("data.forget_manifest_dvc_md5")},
        weights_sha256=tags.get("weights_sha256"),
        onnx={"sha256": tags.get("onnx_sha256")},
        verdict={"verdict": verdict, "passed": verdict == "passed"},
        mlflow_run_id=tags.get("mlflow_run_id"),
        note="rebuilt from the version's registry tags after an interrupted run",
    )


def finish_existing(
    settings: PipelineSettings,
    audit: AuditLog,
    request: DeletionRequest,
    name: str,
    version: int,
) -> dict[str, Any]:
    """The request already has a complete version: finish what a killed run left undone.

    A run killed after the completion tag may have left the alias unmoved, the alias move
    unaudited, the request record pending or ``request.completed`` unwritten; each is done
    here, once. With nothing left to do the request is reported ``already_applied``.
    """
    tags = ModelRegistry.of(settings).version_tags(name, version)
    stored = tags.get(TAG_CONTENT_HASH)
    if stored not in (None, request.content_hash()):
        raise conflict(request, str(stored), f"applied as version {version}")
    verdict = tags.get(TAG_VERDICT, "rejected")
    alias = CHAMPION if verdict == "passed" else CHALLENGER
    run_id = tags.get("mlflow_run_id")
    finished: list[str] = []
    move: dict[str, Any] | None = None
    if tags.get(TAG_ALIAS_APPLIED) != "true":
        move = resume_alias_move(
            settings,
            audit,
            name,
            alias,
            version,
            reason=f"request {request.request_id}: resuming an interrupted promotion "
            f"(gate verdict {verdict})",
            verdict=verdict,
            request_id=request.request_id,
        )
        ModelRegistry.of(settings).set_version_tags(name, version, {TAG_ALIAS_APPLIED: "true"})
        finished.append("alias")
    done = [
        r
        for r in audit.find(event="request.completed", request_id=request.request_id)
        if r["payload"].get("version") == version
    ]
    record: RequestRecord | None = None
    record_path: Path | None = None
    if not done:
        record = _record_for_resume(settings, request, name, version, tags)
        moves = [move] if move is not None else (record.alias_moves or [])
        record = record.with_(
            status="completed",
            alias=alias,
            alias_moves=moves,
            resumed_after_interruption=True,
            finished_at=utc_now(),
        )
        record_path = write_request_record(settings, request.request_id, record.to_json_dict())
        audit.append(
            "request.completed", {**completed_payload(record, record_path), "resumed": True}
        )
        finished.append("record")
    if run_id:
        ModelRegistry.of(settings).close_stale_runs(request.request_id, finish=run_id)
    # resumption data of the killed run; the model is registered
    shutil.rmtree(settings.artifacts_dir / "checkpoints" / request.request_id, ignore_errors=True)
    summary: dict[str, Any] = {
        "request_id": request.request_id,
        "status": "completed" if finished else "already_applied",
        "model": name,
        "parent_version": (record.parent_version if record else None) or tags.get("parent.version"),
        "version": version,
        "alias": alias,
        "verdict": verdict,
        "mlflow_run_id": run_id,
    }
    if finished:
        summary.update(resumed=finished, record_path=str(record_path) if record_path else None)
        print(f"request {request.request_id}: finished an interrupted run ({', '.join(finished)})")
    else:
        audit.append("request.skipped", {**summary, "reason": "already applied"})
        print(f"request {request.request_id}: already applied as {name} version {version}")
    return summary
