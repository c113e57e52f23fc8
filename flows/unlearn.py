"""``unlearn`` flow: one deletion request in, one audited, gated model version out.

Steps (each a Prefect task; only MLflow and DVC-remote I/O retry, never the unlearning):

1. idempotency, keyed by request id + content hash: a complete version of the request means
   "already applied" (whatever a killed run left undone after the completion tag, alias move,
   its audit record, the request record, is finished first); the same id with other content
   is rejected; incomplete versions and RUNNING MLflow runs of the request (a killed run's
   debris) are deleted / ended;
2. dataset at the pinned DVC version, forget classes resolved, parent version loaded from the
   registry (weights only);
3. forget-set manifest written and versioned with DVC;
4. unlearning (``delete.run_unlearning``; per-epoch checkpoints, keyed by the request's content
   and the parent's weights, for kill -9 resumption);
5. before/after metrics, promotion gates, Evidently report, plots, ONNX export + parity;
6. one MLflow run with all of it; version registered, request record written, completion tag
   (the commit point), alias moved
   (``@champion`` when every gate passes, else ``@challenger`` + ``gate.verdict=rejected``);
7. audit: ``alias.moved`` per alias move, ``request.completed`` (or ``request.rejected`` /
   ``request.failed``), the per-request record JSON, and a Prefect markdown artifact.

``tasks._faults.crash_point`` marks where the crash-safety tests kill the process (no-ops
unless ``UNLEARN_CRASH_AT`` is set).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.api import UnlearnResult, run_unlearning, wants_selection
from delete.applications import UnknownTaskError, get_task
from delete.data import ImageTensorDataset, make_unlearning_splits, seeded_subset
from delete.errors import (
    InvalidClassError,
    InvalidForgetSetError,
    InvalidHparamError,
    MissingRetainDataError,
    UnknownMethodError,
)
from delete.hparams import SELECTION_SAMPLE_SIZE, resolve_hparams
from delete.methods import create_method
from delete.methods._registry import get_method_class
from delete.training import make_loader
from flows._common import (
    artifact_key,
    current_flow_run_id,
    move_alias_task,
    resume_alias_move,
    settings_for,
    utc_now,
)
from tasks._common import code_version, one_line
from tasks._faults import crash_point, crash_when_file_appears
from tasks.applications import (
    CLASSIFICATION,
    TaskMismatchError,
    TaskRun,
    evaluate_task_model_task,
    model_task,
    prepare_task_run,
    task_evidently_report_task,
    task_plots_task,
    task_tags,
)
from tasks.audit import (
    AuditError,
    AuditLog,
    open_audit_log,
    read_request_record,
    write_request_record,
)
from tasks.dataset import (
    DataVersionMismatchError,
    extract_forget_set_task,
    push_to_remote_task,
    resolve_forget_classes,
)
from tasks.evaluation import (
    check_gates,
    check_task_gates,
    class_accuracies,
    evaluate_model_task,
    load_gates,
)
from tasks.export import package_model_task
from tasks.image_dataset import lineage_tags, load_model_dataset_task
from tasks.inbox import model_lock
from tasks.plots import make_plots_task
from tasks.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_ALIAS_APPLIED,
    TAG_CONTENT_HASH,
    TAG_REQUEST_ID,
    TAG_VERDICT,
    ModelNotFoundError,
    close_stale_runs,
    create_run,
    delete_incomplete_versions,
    finish_run,
    log_to_run_task,
    mark_complete,
    register_version_task,
    resolve_model_task,
    set_version_tags,
    version_tags,
    versions_for_request,
)
from tasks.report import evidently_report_task
from tasks.requests import DeletionRequest, RequestError, parse_request
from tasks.settings import PipelineSettings

__all__ = [
    "RequestOutcomeError",
    "REJECTION_ERRORS",
    "unlearn_flow",
    "run_unlearning_task",
    "pipeline_overhead",
    "classify_error",
]

#: Errors that mean "the request cannot be honoured as written" (vs. "the pipeline failed").
REJECTION_ERRORS: tuple[type[BaseException], ...] = (
    RequestError,
    ModelNotFoundError,
    InvalidClassError,
    InvalidForgetSetError,
    InvalidHparamError,
    MissingRetainDataError,
    UnknownMethodError,
    DataVersionMismatchError,
    TaskMismatchError,
    UnknownTaskError,
)


class RequestOutcomeError(RuntimeError):
    """A request ended rejected or failed; ``status`` and the one-line ``reason`` say which/why."""

    def __init__(self, request_id: str | None, status: str, reason: str, record_path: str | None):
        super().__init__(f"{status}: {reason}")
        self.request_id = request_id
        self.status = status
        self.reason = reason
        self.record_path = record_path

    def __reduce__(self) -> tuple[Any, ...]:  # keep the fields when Prefect copies the error
        return (type(self), (self.request_id, self.status, self.reason, self.record_path))


class _ConflictError(RequestError):
    """The request id was already applied with different content."""


def classify_error(exc: BaseException) -> str:
    """``"rejected"`` for a request that cannot be honoured as written, else ``"failed"``."""
    return "rejected" if isinstance(exc, REJECTION_ERRORS) else "failed"


def pipeline_overhead(record: Mapping[str, Any]) -> dict[str, float]:
    """Seconds of the whole flow, of the bare unlearning compute, and their difference.

    Example:
        >>> pipeline_overhead({"timings": {"total": 50.0, "unlearn": 8.0}})
        {'total_seconds': 50.0, 'unlearn_seconds': 8.0, 'overhead_seconds': 42.0}
    """
    timings = record.get("timings", {})
    total, compute = float(timings.get("total", 0.0)), float(timings.get("unlearn", 0.0))
    return {"total_seconds": total, "unlearn_seconds": compute, "overhead_seconds": total - compute}


@task(name="unlearn", cache_policy=NO_CACHE)
def run_unlearning_task(
    model: nn.Module,
    forget_set: ImageTensorDataset,
    retain_set: ImageTensorDataset,
    forget_classes: tuple[int, ...],
    num_classes: int,
    method: str,
    hparams: dict[str, Any],
    device: str,
    checkpoint_dir: str,
) -> UnlearnResult:
    """The unlearning compute (:func:`delete.run_unlearning`); deliberately never retried.

    When the method selects automatically (DELETE without a pinned ``lr``/``epochs``), it
    gets a selection sample: :data:`SELECTION_SAMPLE_SIZE` retained *training* images drawn
    with the request's seed from the DVC-pinned split. They only choose among candidates and
    when to stop, never train; the gates read the test split, which the sample never touches.
    """
    params = dict(hparams)
    batch_size = int(params.pop("batch_size", 64))
    seed = int(params.get("seed", 0))
    needs_retain = get_method_class(method).needs_retain
    selection_loader = None
    if wants_selection(method, params, None):
        selection_loader = make_loader(
            seeded_subset(retain_set, SELECTION_SAMPLE_SIZE, seed), 256, shuffle=False
        )
    return run_unlearning(
        model,
        make_loader(forget_set, batch_size, shuffle=True, seed=seed),
        forget_classes,
        method,
        device,
        retain_loader=make_loader(retain_set, batch_size, shuffle=True, seed=seed)
        if needs_retain
        else None,
        selection_loader=selection_loader,
        num_classes=num_classes,
        progress=False,
        checkpoint_dir=checkpoint_dir,
        **params,
    )


def _method_hparams(
    method: str, dataset: str, requested: Mapping[str, Any], task: str = CLASSIFICATION
) -> dict[str, Any]:
    """The method's hyper-parameters, validated before any work is done on the request."""
    hparams = resolve_hparams(
        method,
        requested,
        dataset=dataset,
        task_defaults=None if task == CLASSIFICATION else _task_defaults(method, task),
    )
    batch_size = hparams.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidHparamError(f"batch_size must be a positive integer, got {batch_size!r}")
    create_method(method, **{k: v for k, v in hparams.items() if k != "batch_size"})
    return hparams


def _task_defaults(method: str, task: str) -> dict[str, Any]:
    spec = get_task(task)
    base = dict(spec.delete_hparams) if method == "delete" else {}
    base["batch_size"] = spec.unlearn_batch_size
    return base


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(
                self.seconds.get(name, 0.0) + time.perf_counter() - started, 3
            )


def _parse(request: DeletionRequest | Mapping[str, Any] | str) -> DeletionRequest:
    if isinstance(request, DeletionRequest):
        return request
    if isinstance(request, str):
        from tasks.requests import load_request

        return load_request(request)
    return parse_request(dict(request), source="request")


def _flat_metrics(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": float(v) for k, v in metrics.items()}


def _markdown(record: Mapping[str, Any]) -> str:
    before, after = (
        record.get("metrics", {}).get("before", {}),
        record.get("metrics", {}).get("after", {}),
    )
    lines = [
        f"# Deletion request `{record['request_id']}`: {record['status']}",
        "",
        f"* model: `{record.get('model')}` parent version {record.get('parent_version')} -> "
        f"new version {record.get('version')} (`@{record.get('alias')}`)",
        f"* forgotten classes: {record.get('forget_classes')} ({record.get('forget_class_names')})",
        f"* gate verdict: **{record.get('verdict', {}).get('verdict')}**",
    ]
    for reason in record.get("verdict", {}).get("reasons", []):
        lines.append(f"  * {reason}")
    lines += ["", "| metric | before | after |", "|---|---|---|"]
    for key in sorted(after):
        b = before.get(key)
        lines.append(
            f"| {key} | {b:.3f} | {after[key]:.3f} |"
            if b is not None
            else f"| {key} | - | {after[key]:.3f} |"
        )
    lines += [
        "",
        f"* data version: `{record.get('data_version', {}).get('md5')}`; forget manifest "
        f"`{record.get('forget_manifest', {}).get('dvc_md5')}`",
        f"* MLflow run: `{record.get('mlflow_run_id')}`",
        f"* ONNX: `{record.get('onnx', {}).get('path')}`",
        f"* Evidently report: `{record.get('evidently', {}).get('html_path')}`",
        f"* audit record: `{record.get('record_path')}`",
        f"* seconds: total {record.get('timings', {}).get('total')}, unlearning "
        f"{record.get('timings', {}).get('unlearn')}",
    ]
    return "\n".join(lines)


def _conflict(request: DeletionRequest, other_hash: str, where: str) -> _ConflictError:
    return _ConflictError(
        f"request_id '{request.request_id}' was already used with different content ({where}): "
        f"content sha256 {request.content_hash()[:12]}... != {other_hash[:12]}...; "
        "use a new request_id"
    )


def _prior_content_hash(settings: PipelineSettings, request_id: str) -> str | None:
    """Content hash of the request last recorded under ``request_id``, if any."""
    try:
        value = read_request_record(settings, request_id).get("request_content_sha256")
    except AuditError:
        return None
    return value if isinstance(value, str) else None


def _selection_audit(selection: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The selection's decision for the audit chain (the per-epoch signals stay in the record,
    whose SHA-256 the chain holds)."""
    if not selection:
        return None
    return {
        "mode": selection.get("mode"),
        "tried": [t.get("candidate") + f" ({t.get('status')})" for t in selection.get("tried", [])],
        "chosen": selection.get("chosen"),
        "epochs": selection.get("epochs"),
        "kept_epoch": selection.get("best_epoch"),
        "stop_reason": selection.get("stop_reason"),
        "selection_size": selection.get("selection_size"),
    }


def _completed_payload(record: Mapping[str, Any], record_path: Path) -> dict[str, Any]:
    """The ``request.completed`` audit payload, from the request's record."""
    verdict = record.get("verdict") or {}
    return {
        "request_id": record.get("request_id"),
        "model": record.get("model"),
        "parent_version": record.get("parent_version"),
        "version": record.get("version"),
        "alias": record.get("alias"),
        "verdict": verdict.get("verdict"),
        "reasons": verdict.get("reasons"),
        "forget_classes": record.get("forget_classes"),
        "data_dvc_md5": (record.get("data_version") or {}).get("md5"),
        "forget_manifest_dvc_md5": (record.get("forget_manifest") or {}).get("dvc_md5"),
        "weights_sha256": record.get("weights_sha256"),
        "onnx_sha256": (record.get("onnx") or {}).get("sha256"),
        "mlflow_run_id": record.get("mlflow_run_id"),
        "flow_run_id": record.get("flow_run_id"),
        "selection": _selection_audit(record.get("selection")),
        "record_path": str(record_path),
        "record_sha256": hashlib.sha256(record_path.read_bytes()).hexdigest(),
    }


def _record_for_resume(
    settings: PipelineSettings,
    request: DeletionRequest,
    name: str,
    version: int,
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """The record written before the version was marked complete (or one rebuilt from tags)."""
    try:
        record = read_request_record(settings, request.request_id)
    except AuditError:
        record = {}
    if record.get("version") == version and record.get("mlflow_run_id") == tags.get(
        "mlflow_run_id"
    ):
        return record
    verdict = tags.get(TAG_VERDICT, "rejected")
    return {
        "request_id": request.request_id,
        "request": request.to_json_dict(),
        "request_content_sha256": request.content_hash(),
        "model": name,
        "version": version,
        "parent_version": tags.get("parent.version"),
        "forget_classes": tags.get("forget_classes"),
        "data_version": {"md5": tags.get("data.dvc_md5"), "git_rev": tags.get("data.git_rev")},
        "forget_manifest": {"dvc_md5": tags.get("data.forget_manifest_dvc_md5")},
        "weights_sha256": tags.get("weights_sha256"),
        "onnx": {"sha256": tags.get("onnx_sha256")},
        "verdict": {"verdict": verdict, "passed": verdict == "passed"},
        "mlflow_run_id": tags.get("mlflow_run_id"),
        "note": "rebuilt from the version's registry tags after an interrupted run",
    }


def _finish_existing(
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
    tags = version_tags(settings, name, version)
    stored = tags.get(TAG_CONTENT_HASH)
    if stored not in (None, request.content_hash()):
        raise _conflict(request, str(stored), f"applied as version {version}")
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
        set_version_tags(settings, name, version, {TAG_ALIAS_APPLIED: "true"})
        finished.append("alias")
    done = [
        r
        for r in audit.find(event="request.completed", request_id=request.request_id)
        if r["payload"].get("version") == version
    ]
    record: dict[str, Any] = {}
    record_path: Path | None = None
    if not done:
        record = _record_for_resume(settings, request, name, version, tags)
        if move is not None or not record.get("alias_moves"):
            record["alias_moves"] = [move] if move is not None else []
        record.update(
            status="completed",
            alias=alias,
            resumed_after_interruption=True,
            finished_at=utc_now(),
        )
        record_path = write_request_record(settings, request.request_id, record)
        audit.append(
            "request.completed", {**_completed_payload(record, record_path), "resumed": True}
        )
        finished.append("record")
    if run_id:
        close_stale_runs(settings, request.request_id, finish=run_id)
    # resumption data of the killed run; the model is registered
    shutil.rmtree(settings.artifacts_dir / "checkpoints" / request.request_id, ignore_errors=True)
    summary = {
        "request_id": request.request_id,
        "status": "completed" if finished else "already_applied",
        "model": name,
        "parent_version": record.get("parent_version") or tags.get("parent.version"),
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


@flow(name="unlearn", log_prints=True)
def unlearn_flow(
    request: dict[str, Any] | str,
    root: str | None = None,
    device: str = "auto",
    hold_lock: bool = True,
    lock_timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Apply one deletion request end to end.

    Args:
        request: The request as a mapping of its fields, or the path of a request file.
        root: Project root (``UNLEARN_HOME`` or the working directory when ``None``).
        device: ``auto`` (CUDA when present, with bf16 autocast), ``cpu``, ``cuda``.
        hold_lock: Take the model's lock here (``process_inbox`` takes it itself).
        lock_timeout_s: How long to wait for the model's lock.

    Returns:
        A summary: request_id, status (``completed`` or ``already_applied``), model, version,
        alias, verdict, metrics, paths of the ONNX file, the Evidently report and the record.

    Raises:
        RequestOutcomeError: The request was rejected or failed (recorded in the audit log).
    """
    t0 = time.perf_counter()
    settings = settings_for(root)
    audit = open_audit_log(settings)  # no key, no run: nothing may happen unaudited
    timer = _Timer()
    record: dict[str, Any] = {
        "request_id": request.get("request_id") if isinstance(request, dict) else None,
        "started_at": utc_now(),
        "flow_run_id": current_flow_run_id(),
        "code_version": code_version(),
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
    }
    run_id: str | None = None
    try:
        parsed = _parse(request)
        record.update(
            request_id=parsed.request_id,
            request=parsed.to_json_dict(),
            request_content_sha256=parsed.content_hash(),
        )
        ref = parsed.model_ref()
        lock = model_lock(settings, ref.name, lock_timeout_s) if hold_lock else nullcontext()
        with lock:
            return _apply(settings, audit, parsed, device, timer, record, t0)
    except Exception as exc:
        status = classify_error(exc)
        reason = one_line(exc)
        run_id = record.get("mlflow_run_id")
        record.update(
            status=status, error=reason, error_type=type(exc).__name__, finished_at=utc_now()
        )
        record["timings"] = {**timer.seconds, "total": round(time.perf_counter() - t0, 3)}
        record_path = None
        # Only a parsed request has a safe id to file a record under, and a conflicting one
        # must not replace the record of the request that holds the id.
        if record.get("request") and not isinstance(exc, _ConflictError):
            record_path = str(write_request_record(settings, record["request_id"], record))
        audit.append(
            f"request.{status}",
            {
                "request_id": record.get("request_id"),
                "model": (record.get("request") or {}).get("model"),
                "request_content_sha256": record.get("request_content_sha256"),
                "reason": reason,
                "error_type": type(exc).__name__,
                "record_path": record_path,
                # the file's digest, as `unlearn audit certificate` checks it
                "record_sha256": hashlib.sha256(Path(record_path).read_bytes()).hexdigest()
                if record_path
                else None,
                "flow_run_id": record["flow_run_id"],
            },
        )
        if run_id:
            try:
                log_to_run_task(settings, run_id, tags={"error": reason, "status": status})
                finish_run(settings, run_id, "FAILED")
            except Exception as log_exc:  # noqa: BLE001 - the request's outcome matters more
                print(f"could not mark MLflow run {run_id} failed: {one_line(log_exc)}")
        raise RequestOutcomeError(record.get("request_id"), status, reason, record_path) from exc


def _apply(
    settings: PipelineSettings,
    audit: AuditLog,
    request: DeletionRequest,
    device: str,
    timer: _Timer,
    record: dict[str, Any],
    t0: float,
) -> dict[str, Any]:
    ref = request.model_ref()
    name = ref.name
    with timer.step("idempotency"):
        existing = [
            v
            for v, tags in versions_for_request(settings, name, request.request_id)
            if tags.get("pipeline.complete") == "true"
        ]
        if existing:
            return _finish_existing(settings, audit, request, name, existing[0])
        prior = _prior_content_hash(settings, request.request_id)
        if prior is not None and prior != request.content_hash():
            raise _conflict(request, prior, "see its audit record")
        # Runs of this request still RUNNING were left by killed processes (the model's lock
        # is held, so no live run of the same request can exist).
        close_stale_runs(settings, request.request_id)
        discarded = delete_incomplete_versions(settings, name, request.request_id)
        for version in discarded:
            audit.append(
                "version.discarded",
                {
                    "request_id": request.request_id,
                    "model": name,
                    "version": version,
                    "reason": "incomplete version left by an interrupted run",
                },
            )
    with timer.step("load_model"):
        parent = resolve_model_task(settings, ref)
    task_name, task_options = model_task(parent.tags)
    if request.task != task_name:
        raise TaskMismatchError(
            f"request is a {request.task} request but model {name} version {parent.version} "
            f"is a {task_name} model; set task: {task_name} or name a {request.task} model"
        )
    run: TaskRun | None = None
    with timer.step("load_data"):
        # the model's own data: a registered ImageFolder at its recorded md5, else data/
        bundle, data_version = load_model_dataset_task(settings, parent.tags, request.data_version)
        if task_name == CLASSIFICATION:
            classes = resolve_forget_classes(bundle, request.forget_classes)
            class_names, num_classes, dataset_name = (
                bundle.class_names,
                bundle.num_classes,
                bundle.name,
            )
        else:
            run = prepare_task_run(task_name, bundle, task_options, request.forget_classes)
            classes = run.forget_classes
            class_names, num_classes, dataset_name = run.class_names, run.num_classes, run.data.name
        if parent.spec.num_classes != num_classes:
            raise InvalidClassError(
                f"model {name} version {parent.version} has {parent.spec.num_classes} outputs but "
                f"dataset {dataset_name} has {num_classes} classes"
            )
        hparams = _method_hparams(request.method, dataset_name, request.hparams, task_name)
    record.update(
        model=name,
        task=task_name,
        task_options=task_options,
        parent_version=parent.version,
        parent_aliases=parent.aliases,
        parent_weights_sha256=parent.weights_sha256,
        forget_classes=list(classes),
        forget_class_names=[class_names[c] for c in classes],
        data_version=data_version.to_dict(),
    )
    if run is None:
        splits = make_unlearning_splits(bundle.train, bundle.test, classes)
        forget_set, retain_set = splits.train_forget, splits.train_retain
    else:
        forget_set, retain_set = run.forget_set, run.retain_set
    if len(forget_set) == 0:  # type: ignore[arg-type]
        raise InvalidForgetSetError(
            f"forget classes {list(classes)} have no training images at data version "
            f"{data_version.md5}; nothing to forget"
        )
    with timer.step("forget_set"):
        manifest = extract_forget_set_task(
            settings,
            bundle,
            classes,
            request.request_id,
            indices=None if run is None else run.manifest_indices,
        )
        push_to_remote_task(settings, [str(Path(manifest.dvc_file).relative_to(settings.root))])
    record["forget_manifest"] = manifest.to_dict()
    with timer.step("evaluate_before"):
        if run is None:
            report_before = evaluate_model_task(parent.model, splits, device)
            before = report_before.to_dict()
        else:
            before = evaluate_task_model_task(parent.model, run, device)
    checkpoint_root = settings.artifacts_dir / "checkpoints" / request.request_id
    # A resumed run must continue the same computation: same request content, same parent.
    checkpoint_dir = checkpoint_root / f"{request.content_hash()[:16]}-{parent.weights_sha256[:16]}"
    with (
        timer.step("unlearn"),
        crash_when_file_appears("unlearn.epoch", checkpoint_dir, "*.pt"),
    ):
        result = run_unlearning_task(
            parent.model,
            forget_set,
            retain_set,
            classes,
            num_classes,
            request.method,
            hparams,
            device,
            str(checkpoint_dir),
        )
    if result.engine.resumed_from_epoch:
        print(
            f"request {request.request_id}: unlearning resumed from the checkpoint of epoch "
            f"{result.engine.resumed_from_epoch}"
        )
    record.update(
        method=request.method,
        hparams=result.config.to_dict(),
        engine={
            "epoch_losses": result.engine.epoch_losses,
            "steps": result.engine.steps,
            "seconds": result.engine.seconds,
            "resumed_from_epoch": result.engine.resumed_from_epoch,
            "device": result.device,
        },
        # What the automatic selection tried, chose and why it stopped (None: fixed run).
        selection=None if result.selection is None else result.selection.to_dict(),
    )
    with timer.step("evaluate_after"):
        gates = load_gates(settings.gates_file, task_name)
        if run is None:
            report_after = evaluate_model_task(result.model, splits, device)
            after = report_after.to_dict()
            # The per-class gate reads every retained class, not only their average.
            verdict = check_gates(
                {**before, **class_accuracies(report_before.per_class_test_accuracy, classes)},
                {**after, **class_accuracies(report_after.per_class_test_accuracy, classes)},
                gates,
            )
            record["per_class_test_accuracy"] = {
                "before": report_before.per_class_test_accuracy,
                "after": report_after.per_class_test_accuracy,
            }
        else:
            after = evaluate_task_model_task(result.model, run, device)
            verdict = check_task_gates(before, after, gates)
    record.update(
        metrics={"before": before, "after": after},
        gates=gates,
        verdict=verdict.to_dict(),
    )
    workdir = settings.artifacts_dir / "runs" / request.request_id
    with timer.step("export_onnx"):
        package = package_model_task(
            result.model,
            parent.spec,
            workdir / "model",
            atol=settings.onnx_atol,
            rtol=settings.onnx_rtol,
        )
    crash_point("export.after_onnx")
    record["onnx"] = {
        "path": package.onnx_path,
        "sha256": package.onnx_sha256,
        "parity": package.parity,
    }
    record["weights_sha256"] = package.weights_sha256
    with timer.step("evidently"):
        if run is None:
            evidently = evidently_report_task(
                parent.model,
                result.model,
                splits.test_retain,
                bundle.class_names,
                workdir / "report",
                device,
            )
        else:
            evidently = task_evidently_report_task(
                parent.model, result.model, run, workdir / "report", device
            )
    record["evidently"] = evidently.to_dict()
    with timer.step("plots"):
        if run is None:
            plots = make_plots_task(
                parent.model,
                result.model,
                splits,
                report_before.per_class_test_accuracy,
                report_after.per_class_test_accuracy,
                bundle.class_names,
                workdir / "plots",
                device,
            )
        else:
            plots = task_plots_task(
                parent.model, result.model, run, before, after, workdir / "plots", device
            )
    record["plots"] = [str(p) for p in plots]

    with timer.step("mlflow"):
        run_id = create_run(
            settings,
            run_name=f"unlearn-{request.request_id}",
            tags={
                TAG_REQUEST_ID: request.request_id,
                "prefect.flow_run_id": record["flow_run_id"],
                "parent_version": parent.version,
            },
        )
        record["mlflow_run_id"] = run_id
        metrics = {
            **_flat_metrics("before", before),
            **_flat_metrics("after", after),
            "unlearn_seconds": result.engine.seconds,
        }
        log_to_run_task(
            settings,
            run_id,
            params={
                "request_id": request.request_id,
                "model": name,
                "task": task_name,
                "parent_version": parent.version,
                "method": request.method,
                "forget_classes": list(classes),
                "data.dvc_md5": data_version.md5,
                "forget_manifest.dvc_md5": manifest.dvc_md5,
                "device": result.device,
                "engine.resumed_from_epoch": result.engine.resumed_from_epoch,
                **{f"hparam.{k}": v for k, v in result.config.to_dict().items()},
                **{f"gate.{k}": v for k, v in gates.items()},
            },
            metrics=metrics,
            tags={TAG_VERDICT: verdict.label},
            artifacts=[
                (evidently.html_path, "evidently"),
                (evidently.json_path, "evidently"),
                *[(str(p), "plots") for p in plots],
                (package.weights_path, "model_files"),
                (package.onnx_path, "model_files"),
                (package.spec_path, "model_files"),
                (manifest.path, "forget_set"),
                (manifest.dvc_file, "forget_set"),
            ],
            dicts={"gate_verdict.json": verdict.to_dict(), "onnx_parity.json": package.parity},
        )
        code = record["code_version"]
        tags: dict[str, Any] = {
            TAG_REQUEST_ID: request.request_id,
            TAG_CONTENT_HASH: request.content_hash(),
            "requested_by": request.requested_by,
            **task_tags(task_name, task_options),
            **lineage_tags(parent.tags),  # a registered model's data and architecture
            "forget_classes": list(classes),
            "forget_class_names": record["forget_class_names"],
            "data.dvc_md5": data_version.md5,
            "data.git_rev": data_version.git_rev or "none",
            "data.forget_manifest_dvc_md5": manifest.dvc_md5,
            "data.forget_manifest_sha256": manifest.content_sha256,
            "code.git_sha": code["git_sha"],
            "code.package_version": code["package_version"],
            "code.git_dirty": str(code["git_dirty"]).lower(),
            "parent.version": parent.version,
            "parent.weights_sha256": parent.weights_sha256,
            "method": request.method,
            "method.hparams": result.config.to_dict(),
            "onnx_sha256": package.onnx_sha256,
            "mlflow_run_id": run_id,
            TAG_VERDICT: verdict.label,
            "gate.reasons": verdict.reasons or "none",
            **{f"metric.{k}": round(v, 4) for k, v in metrics.items()},
        }
        crash_point("registry.after_run")
        version = register_version_task(
            settings, name=name, run_id=run_id, model_dir=package.model_dir, tags=tags
        )
        # The record is on disk before the version counts as complete, so a run killed from
        # here on is finished by the next run from this record (see _finish_existing).
        record.update(version=version, status="registered")
        record["timings"] = {**timer.seconds, "total": round(time.perf_counter() - t0, 3)}
        write_request_record(settings, request.request_id, record)
        crash_point("registry.after_create_version")
        mark_complete(settings, name, version)
        crash_point("registry.after_complete")
    with timer.step("promote"):
        alias = CHAMPION if verdict.passed else CHALLENGER
        why = (
            f"request {request.request_id}: every gate passed"
            if verdict.passed
            else f"request {request.request_id}: gates failed: {'; '.join(verdict.reasons)}"
        )
        move = move_alias_task(
            settings,
            audit,
            name,
            alias,
            version,
            reason=why,
            verdict=verdict.label,
            request_id=request.request_id,
        )
        set_version_tags(settings, name, version, {TAG_ALIAS_APPLIED: "true"})
    record.update(alias=alias, alias_moves=[move], status="completed")
    shutil.rmtree(checkpoint_root, ignore_errors=True)  # resumption data; the model is registered

    total = time.perf_counter() - t0
    record["timings"] = {**timer.seconds, "total": round(total, 3)}
    overhead = pipeline_overhead(record)
    record["pipeline_overhead"] = overhead
    record["finished_at"] = utc_now()
    record_path = write_request_record(settings, request.request_id, record)
    record["record_path"] = str(record_path)
    crash_point("audit.before_completed")
    audit.append("request.completed", _completed_payload(record, record_path))
    log_to_run_task(
        settings,
        run_id,
        metrics={
            "pipeline_overhead_seconds": overhead["overhead_seconds"],
            "pipeline_total_seconds": overhead["total_seconds"],
        },
        artifacts=[(str(record_path), "audit")],
    )
    set_version_tags(
        settings,
        name,
        version,
        {"pipeline.overhead_seconds": round(overhead["overhead_seconds"], 3)},
    )
    finish_run(settings, run_id)
    create_markdown_artifact(
        _markdown(record),
        key=artifact_key("unlearn", request.request_id),
        description=f"Deletion request {request.request_id}",
    )
    headline = ("acc_test_forget", "acc_test_retain") if run is None else run.headline
    changes = ", ".join(
        f"{key} {before.get(key, float('nan')):.1f} -> {after.get(key, float('nan')):.1f}"
        for key in headline
    )
    print(
        f"request {request.request_id}: {name} v{parent.version} -> v{version} @{alias} "
        f"({verdict.label}); {changes}"
    )
    return {
        "request_id": request.request_id,
        "status": "completed",
        "model": name,
        "parent_version": parent.version,
        "version": version,
        "alias": alias,
        "verdict": verdict.label,
        "reasons": verdict.reasons,
        "metrics": record["metrics"],
        "onnx_path": package.onnx_path,
        "evidently_html": evidently.html_path,
        "record_path": str(record_path),
        "mlflow_run_id": run_id,
        "timings": record["timings"],
        "pipeline_overhead": overhead,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m flows.unlearn REQUEST.yaml")
    unlearn_flow(sys.argv[1])
