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

import dataclasses
import hashlib
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from torch import nn
from torch.utils.data import Dataset

from delete.api import UnlearnResult, run_unlearning, wants_selection
from delete.applications import UnknownTaskError, get_task
from delete.data import seeded_subset
from delete.errors import (
    InvalidClassError,
    InvalidForgetSetError,
    InvalidHparamError,
    InvalidRepairSetError,
    MissingRetainDataError,
    UnknownMethodError,
)
from delete.hparams import SELECTION_SAMPLE_SIZE, resolve_hparams
from delete.methods import create_method
from delete.methods._registry import get_method_class
from delete.metrics import shared_predictions
from delete.repair import RepairResult
from delete.training import make_loader
from flows._common import (
    artifact_key,
    current_flow_run_id,
    move_alias_task,
    settings_for,
    utc_now,
)
from flows._resume import (
    ConflictError,
    completed_payload,
    conflict,
    finish_existing,
    prior_content_hash,
)
from tasks._common import code_version, one_line
from tasks._faults import crash_point, crash_when_file_appears
from tasks.applications import (
    TaskMismatchError,
    TaskRun,
    evaluate_task_model_task,
    model_task,
    prepare_task_run,
    task_evidently_report_task,
    task_plots_task,
    task_tags,
)
from tasks.audit import AuditLog, open_audit_log, write_request_record
from tasks.coordination import alive, model_slot
from tasks.dataset import (
    DataVersionMismatchError,
    ForgetManifest,
    extract_forget_set_task,
    push_to_remote_task,
)
from tasks.evaluation import GateVerdict, check_gates, load_gates
from tasks.export import ModelPackage, package_model_task
from tasks.image_dataset import lineage_tags, load_model_dataset_task
from tasks.record import RequestRecord
from tasks.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_ALIAS_APPLIED,
    TAG_CONTENT_HASH,
    TAG_REQUEST_ID,
    TAG_VERDICT,
    ModelNotFoundError,
    ModelRegistry,
    ResolvedModel,
    describe_version,
    iso_to_millis,
    log_to_run_task,
    mlflow_page,
    register_version_task,
    resolve_model_task,
)
from tasks.repair_set import RepairPlan, resolve_repair_plan, run_repair_task, threat_model
from tasks.report import EvidentlyReport
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
    InvalidRepairSetError,
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


def classify_error(exc: BaseException) -> str:
    """``"rejected"`` for a request that cannot be honoured as written, else ``"failed"``."""
    return "rejected" if isinstance(exc, REJECTION_ERRORS) else "failed"


def pipeline_overhead(record: Mapping[str, Any]) -> dict[str, float]:
    """Seconds of the whole flow, of the bare unlearning compute, and their difference.

    Example:
        >>> pipeline_overhead({"timings": {"total": 50.0, "unlearn": 8.0}})
        {'total_seconds': 50.0, 'unlearn_seconds': 8.0, 'overhead_seconds': 42.0}
    """
    timings = record.get("timings") or {}
    # The repair step of a declared repair set is compute too, not pipeline overhead.
    compute = float(timings.get("unlearn", 0.0)) + float(timings.get("repair", 0.0))
    total = float(timings.get("total", 0.0))
    return {"total_seconds": total, "unlearn_seconds": compute, "overhead_seconds": total - compute}


@task(name="unlearn", cache_policy=NO_CACHE)
def run_unlearning_task(
    model: nn.Module,
    forget_set: Dataset,
    retain_set: Dataset,
    forget_classes: tuple[int, ...],
    num_classes: int,
    method: str,
    hparams: dict[str, Any],
    device: str,
    checkpoint_dir: str,
) -> UnlearnResult:
    """The unlearning compute (:func:`delete.run_unlearning`); deliberately never retried.

    When the method selects automatically (DELETE without a pinned ``lr``/``epochs``), it
    gets a selection sample: :data:`SELECTION_SAMPLE_SIZE` retained *training* samples drawn
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
    method: str, dataset: str, requested: Mapping[str, Any], task: str
) -> dict[str, Any]:
    """The method's hyper-parameters, validated before any work is done on the request."""
    hparams = resolve_hparams(
        method,
        requested,
        dataset=dataset,
        task_defaults=get_task(task).hparam_defaults(method),
    )
    batch_size = hparams.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidHparamError(f"batch_size must be a positive integer, got {batch_size!r}")
    create_method(method, **{k: v for k, v in hparams.items() if k != "batch_size"})
    return hparams


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


@dataclass
class _Run:
    """What one flow run knows while it works: its settings, clock and the MLflow run it opened
    (the failure path marks that run FAILED)."""

    settings: PipelineSettings
    audit: AuditLog
    device: str
    started: RequestRecord
    t0: float = field(default_factory=time.perf_counter)
    timer: _Timer = field(default_factory=_Timer)
    mlflow_run_id: str | None = None

    def timings(self) -> dict[str, float]:
        return {**self.timer.seconds, "total": round(time.perf_counter() - self.t0, 3)}


def _parse(request: DeletionRequest | Mapping[str, Any] | str) -> DeletionRequest:
    if isinstance(request, DeletionRequest):
        return request
    if isinstance(request, str):
        from tasks.requests import load_request

        return load_request(request)
    return parse_request(dict(request), source="request")


def _scalars(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow metrics: the scalar ones (per-class entries stay in the record and the plot)."""
    return {f"{prefix}_{k}": round(float(v), 4) for k, v in metrics.items() if "/" not in k}


def _relative(path: Any, root: Path) -> str:
    """``path`` relative to the project root (the artifact is read on other machines)."""
    try:
        return Path(str(path)).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _markdown(record: Mapping[str, Any], root: Path) -> str:
    """The Prefect artifact of a completed request; files relative to the project root."""
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
    for key in sorted(k for k in after if "/" not in k):
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
        f"* MLflow: run `{record.get('mlflow_run_id')}`, version page {record.get('mlflow_page')}",
        f"* ONNX: `{_relative(record.get('onnx', {}).get('path'), root)}`",
        f"* Evidently report: `{_relative(record.get('evidently', {}).get('html_path'), root)}`",
        f"* audit record: `{_relative(record.get('record_path'), root)}`",
        f"* seconds: total {record.get('timings', {}).get('total')}, unlearning "
        f"{record.get('timings', {}).get('unlearn')}",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Loaded:
    """A request resolved against its model: the parent version, the task's data and classes."""

    parent: ResolvedModel
    run: TaskRun
    bundle: Any
    data_version: Any
    hparams: dict[str, Any]
    repair: RepairPlan | None = None


@dataclass(frozen=True)
class _Judged:
    before: dict[str, float]
    after: dict[str, float]
    gates: dict[str, float]
    verdict: GateVerdict


@dataclass(frozen=True)
class _Artifacts:
    package: ModelPackage
    evidently: EvidentlyReport
    plots: list[Path]


@dataclass(frozen=True)
class _Repair:
    """The declared repair set as it ran: its plan, its DVC manifest and the step's record."""

    plan: RepairPlan
    manifest: ForgetManifest
    result: RepairResult

    def to_record(self) -> dict[str, Any]:
        return {
            **self.plan.to_record(),
            "manifest": self.manifest.to_dict(),
            "run": self.result.to_dict(),
        }


@dataclass(frozen=True)
class _Work:
    """Everything a request produced before registration, in one typed value."""

    loaded: _Loaded
    manifest: ForgetManifest
    result: UnlearnResult
    judged: _Judged
    artifacts: _Artifacts
    repair: _Repair | None = None


def _run_name() -> str:
    """``unlearn/<request_id>``: the Prefect UI lists runs by the request they serve."""
    from prefect.runtime import flow_run

    request = flow_run.parameters.get("request")
    if isinstance(request, dict):
        return f"unlearn/{request.get('request_id', 'unnamed')}"
    try:
        return f"unlearn/{_parse(str(request)).request_id}"
    except Exception:  # noqa: BLE001 - an unreadable file still gets a run; it is rejected in it
        return f"unlearn/{Path(str(request)).stem}"


@flow(name="unlearn", log_prints=True, flow_run_name=_run_name)
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
    settings = settings_for(root)
    audit = open_audit_log(settings)  # no key, no run: nothing may happen unaudited
    ctx = _Run(
        settings,
        audit,
        device,
        RequestRecord(
            request_id=request.get("request_id") if isinstance(request, dict) else None,
            status="running",
            started_at=utc_now(),
            flow_run_id=current_flow_run_id(),
            code_version=code_version(),
            mlflow_tracking_uri=settings.mlflow_tracking_uri,
        ),
    )
    try:
        parsed = _parse(request)
        ctx.started = ctx.started.with_(
            request_id=parsed.request_id,
            request=parsed.to_json_dict(),
            request_content_sha256=parsed.content_hash(),
        )
        ref = parsed.model_ref()
        # model_slot: a Prefect concurrency slot when several hosts share the registry, the
        # local flock on one machine; alive: this run's pulse, for `unlearn recover`
        lock = model_slot(settings, ref.name, lock_timeout_s) if hold_lock else nullcontext()
        with alive(settings), lock:
            return _apply(ctx, parsed)
    except Exception as exc:
        _record_failure(ctx, exc)
        raise AssertionError("unreachable") from exc  # _record_failure always raises


def _record_failure(ctx: _Run, exc: Exception) -> None:
    """Write the rejected/failed record and its audit event, then raise the outcome."""
    status = classify_error(exc)
    reason = one_line(exc)
    record = ctx.started.with_(
        status=status,
        error=reason,
        error_type=type(exc).__name__,
        finished_at=utc_now(),
        timings=ctx.timings(),
    )
    record_path = None
    # Only a parsed request has a safe id to file a record under, and a conflicting one
    # must not replace the record of the request that holds the id.
    if record.request and record.request_id and not isinstance(exc, ConflictError):
        record_path = str(
            write_request_record(ctx.settings, record.request_id, record.to_json_dict())
        )
    ctx.audit.append(
        f"request.{status}",
        {
            "request_id": record.request_id,
            "model": (record.request or {}).get("model"),
            "request_content_sha256": record.request_content_sha256,
            "reason": reason,
            "error_type": type(exc).__name__,
            "record_path": record_path,
            # the file's digest, as `unlearn audit certificate` checks it
            "record_sha256": hashlib.sha256(Path(record_path).read_bytes()).hexdigest()
            if record_path
            else None,
            "flow_run_id": record.flow_run_id,
        },
    )
    if ctx.mlflow_run_id:
        try:
            log_to_run_task(
                ctx.settings, ctx.mlflow_run_id, tags={"error": reason, "status": status}
            )
            ModelRegistry.of(ctx.settings).finish_run(ctx.mlflow_run_id, "FAILED")
        except Exception as log_exc:  # noqa: BLE001 - the request's outcome matters more
            print(f"could not mark MLflow run {ctx.mlflow_run_id} failed: {one_line(log_exc)}")
    raise RequestOutcomeError(record.request_id, status, reason, record_path) from exc


def _apply(ctx: _Run, request: DeletionRequest) -> dict[str, Any]:
    """The one path every request takes, whatever its task."""
    name = request.model_ref().name
    with ctx.timer.step("idempotency"):
        done = _already_applied(ctx, request, name)
        if done is not None:
            return done
    loaded = _load(ctx, request)
    with ctx.timer.step("forget_set"):
        manifest = extract_forget_set_task(
            ctx.settings,
            loaded.bundle,
            loaded.run.forget_classes,
            request.request_id,
            indices=loaded.run.manifest_indices,
        )
        repair_manifest = _repair_manifest(ctx, request, loaded)
        dvc_files = [m.dvc_file for m in (manifest, repair_manifest) if m is not None]
        push_to_remote_task(
            ctx.settings, [str(Path(f).relative_to(ctx.settings.root)) for f in dvc_files]
        )
    # The evaluation, the Evidently report and the membership plot read the same splits with
    # the same two models: each split is predicted once per model state.
    with shared_predictions():
        with ctx.timer.step("evaluate_before"):
            before = evaluate_task_model_task(loaded.parent.model, loaded.run, ctx.device)
        result = _unlearn(ctx, request, loaded)
        repaired = _repair(ctx, loaded, result, repair_manifest)
        if repaired is not None:  # the repaired model is the one judged, exported, registered
            result = dataclasses.replace(result, model=repaired.result.model)
        with ctx.timer.step("evaluate_after"):
            judged = _judge(ctx, loaded, before, result)
        artifacts = _artifacts(ctx, request, loaded, result, judged)
    work = _Work(loaded, manifest, result, judged, artifacts, repaired)
    record = _lineage_record(ctx, request, work)
    with ctx.timer.step("mlflow"):
        record = _register(ctx, request, work, record)
    return _promote(ctx, request, work, record)


def _already_applied(ctx: _Run, request: DeletionRequest, name: str) -> dict[str, Any] | None:
    """The summary of an earlier complete version of this request, after finishing it; else
    ``None`` once a killed run's debris is cleared."""
    existing = [
        v
        for v, tags in ModelRegistry.of(ctx.settings).versions_for_request(name, request.request_id)
        if tags.get("pipeline.complete") == "true"
    ]
    if existing:
        return finish_existing(ctx.settings, ctx.audit, request, name, existing[0])
    prior = prior_content_hash(ctx.settings, request.request_id)
    if prior is not None and prior != request.content_hash():
        raise conflict(request, prior, "see its audit record")
    # Runs of this request still RUNNING were left by killed processes (the model's lock
    # is held, so no live run of the same request can exist).
    ModelRegistry.of(ctx.settings).close_stale_runs(request.request_id)
    for version in ModelRegistry.of(ctx.settings).delete_incomplete_versions(
        name, request.request_id
    ):
        ctx.audit.append(
            "version.discarded",
            {
                "request_id": request.request_id,
                "model": name,
                "version": version,
                "reason": "incomplete version left by an interrupted run",
            },
        )
    return None


def _load(ctx: _Run, request: DeletionRequest) -> _Loaded:
    """Parent version, its dataset at the pinned DVC version, the task's forget set and the
    method's hyper-parameters: everything is checked before any work is done."""
    name = request.model_ref().name
    with ctx.timer.step("load_model"):
        parent = resolve_model_task(ctx.settings, request.model_ref())
    task_name, task_options = model_task(parent.tags)
    if request.task != task_name:
        raise TaskMismatchError(
            f"request is a {request.task} request but model {name} version {parent.version} "
            f"is a {task_name} model; set task: {task_name} or name a {request.task} model"
        )
    with ctx.timer.step("load_data"):
        # the model's own data: a registered ImageFolder at its recorded md5, else data/
        bundle, data_version = load_model_dataset_task(
            ctx.settings, parent.tags, request.data_version
        )
        run = prepare_task_run(task_name, bundle, task_options, request.forget_classes)
        if parent.spec.num_classes != run.num_classes:
            raise InvalidClassError(
                f"model {name} version {parent.version} has {parent.spec.num_classes} outputs "
                f"but dataset {run.data.name} has {run.num_classes} classes"
            )
        hparams = _method_hparams(request.method, run.data.name, request.hparams, task_name)
        # A declared repair set is checked here, before any work: one line if ill-formed.
        plan = (
            None
            if request.repair_set is None
            else resolve_repair_plan(ctx.settings, bundle, run, request.repair_set)
        )
    return _Loaded(parent, run, bundle, data_version, hparams, plan)


def _unlearn(ctx: _Run, request: DeletionRequest, loaded: _Loaded) -> UnlearnResult:
    checkpoint_root = ctx.settings.artifacts_dir / "checkpoints" / request.request_id
    # A resumed run must continue the same computation: same request content, same parent.
    weights = loaded.parent.weights_sha256
    checkpoint_dir = checkpoint_root / f"{request.content_hash()[:16]}-{weights[:16]}"
    with (
        ctx.timer.step("unlearn"),
        crash_when_file_appears("unlearn.epoch", checkpoint_dir, "*.pt"),
    ):
        result = run_unlearning_task(
            loaded.parent.model,
            loaded.run.forget_set,
            loaded.run.retain_set,
            loaded.run.forget_classes,
            loaded.run.num_classes,
            request.method,
            loaded.hparams,
            ctx.device,
            str(checkpoint_dir),
        )
    if result.engine.resumed_from_epoch:
        print(
            f"request {request.request_id}: unlearning resumed from the checkpoint of epoch "
            f"{result.engine.resumed_from_epoch}"
        )
    return result


def _repair_manifest(ctx: _Run, request: DeletionRequest, loaded: _Loaded) -> ForgetManifest | None:
    """``repair.csv`` beside the forget manifest, versioned by DVC; ``None`` without a
    declared repair set."""
    if loaded.repair is None:
        return None
    return extract_forget_set_task(
        ctx.settings,
        loaded.bundle,
        loaded.run.forget_classes,
        request.request_id,
        indices=list(loaded.repair.indices),
        manifest_name="repair.csv",
    )


def _repair(
    ctx: _Run, loaded: _Loaded, result: UnlearnResult, manifest: ForgetManifest | None
) -> _Repair | None:
    """The task's repair step on the declared repair set (``None`` without one)."""
    if loaded.repair is None or manifest is None:
        return None
    with ctx.timer.step("repair"):
        repaired = run_repair_task(
            result.model,
            loaded.parent.model,
            loaded.repair,
            loaded.run,
            int(loaded.hparams.get("batch_size", 64)),
            ctx.device,
        )
    return _Repair(loaded.repair, manifest, repaired)


def _judge(ctx: _Run, loaded: _Loaded, before: dict[str, float], result: UnlearnResult) -> _Judged:
    after = evaluate_task_model_task(result.model, loaded.run, ctx.device)
    gates = load_gates(ctx.settings.gates_file, loaded.run.name, threat_model(loaded.repair))
    verdict = check_gates(
        loaded.run.name, before, after, gates, forgotten=loaded.run.forget_class_names
    )
    return _Judged(before, after, gates, verdict)


def _artifacts(
    ctx: _Run, request: DeletionRequest, loaded: _Loaded, result: UnlearnResult, judged: _Judged
) -> _Artifacts:
    workdir = ctx.settings.artifacts_dir / "runs" / request.request_id
    parent, run = loaded.parent, loaded.run
    with ctx.timer.step("export_onnx"):
        package = package_model_task(
            result.model,
            parent.spec,
            workdir / "model",
            atol=ctx.settings.onnx_atol,
            rtol=ctx.settings.onnx_rtol,
        )
    crash_point("export.after_onnx")
    with ctx.timer.step("evidently"):
        evidently = task_evidently_report_task(
            parent.model,
            result.model,
            run,
            workdir / "report",
            ctx.device,
            request_id=request.request_id,
            parent_version=parent.version,
        )
    with ctx.timer.step("plots"):
        plots = task_plots_task(
            parent.model,
            result.model,
            run,
            judged.before,
            judged.after,
            workdir / "plots",
            ctx.device,
        )
    return _Artifacts(package, evidently, list(plots))


def _lineage_record(ctx: _Run, request: DeletionRequest, work: _Work) -> RequestRecord:
    """The request's record as it stands once every artifact exists (not yet registered)."""
    loaded, manifest, result = work.loaded, work.manifest, work.result
    judged, artifacts = work.judged, work.artifacts
    parent, run = loaded.parent, loaded.run
    return ctx.started.with_(
        model=request.model_ref().name,
        task=run.name,
        task_options=run.options,
        parent_version=parent.version,
        parent_aliases=parent.aliases,
        parent_weights_sha256=parent.weights_sha256,
        forget_classes=list(run.forget_classes),
        forget_class_names=run.forget_class_names,
        data_version=loaded.data_version.to_dict(),
        forget_manifest=manifest.to_dict(),
        threat_model=threat_model(loaded.repair),
        repair=None if work.repair is None else work.repair.to_record(),
        method=request.method,
        hparams=result.config.to_dict(),
        engine={
            "epoch_losses": result.engine.epoch_losses,
            "steps": result.engine.steps,
            "seconds": result.engine.seconds,
            "resumed_from_epoch": result.engine.resumed_from_epoch,
            "device": result.device,
            # Decided at run time, so a rerun can be checked against it.
            **result.runtime,
        },
        # What the automatic selection tried, chose and why it stopped (None: fixed run).
        selection=None if result.selection is None else result.selection.to_dict(),
        metrics={"before": judged.before, "after": judged.after},
        gates=judged.gates,
        verdict=judged.verdict.to_dict(),
        onnx={
            "path": artifacts.package.onnx_path,
            "sha256": artifacts.package.onnx_sha256,
            "parity": artifacts.package.parity,
        },
        weights_sha256=artifacts.package.weights_sha256,
        evidently=artifacts.evidently.to_dict(),
        plots=[str(p) for p in artifacts.plots],
    )


def _log_inputs(ctx: _Run, request: DeletionRequest, work: _Work, run_id: str) -> None:
    """The DVC-pinned data and the forget manifest as the run's inputs (the UI's Datasets)."""
    version = work.loaded.data_version
    ModelRegistry.of(ctx.settings).log_dataset_input(
        run_id,
        name=work.loaded.run.data.name,
        path=version.path,
        digest=version.md5,
        details={"git_rev": version.git_rev or "none"},
    )
    ModelRegistry.of(ctx.settings).log_dataset_input(
        run_id,
        name=f"forget-set/{request.request_id}",
        path=work.manifest.dvc_file,
        digest=work.manifest.dvc_md5,
        context="forget",
    )


def _run_params(request: DeletionRequest, work: _Work) -> dict[str, Any]:
    run, result = work.loaded.run, work.result
    return {
        "request_id": request.request_id,
        "model": request.model_ref().name,
        "task": run.name,
        "parent_version": work.loaded.parent.version,
        "method": request.method,
        "forget_classes": list(run.forget_classes),
        "data.dvc_md5": work.loaded.data_version.md5,
        "forget_manifest.dvc_md5": work.manifest.dvc_md5,
        "threat_model": threat_model(work.loaded.repair),
        "device": result.device,
        "engine.resumed_from_epoch": result.engine.resumed_from_epoch,
        **{f"engine.{k}": v for k, v in result.runtime.items()},
        **{f"hparam.{k}": v for k, v in result.config.to_dict().items()},
        **{f"gate.{k}": v for k, v in work.judged.gates.items()},
    }


def _run_artifacts(work: _Work) -> list[tuple[str, str | None]]:
    package, manifest = work.artifacts.package, work.manifest
    return [
        *[(p, "evidently") for p in work.artifacts.evidently.files()],
        *[(str(p), "plots") for p in work.artifacts.plots],
        (package.weights_path, "model_files"),
        (package.onnx_path, "model_files"),
        (package.spec_path, "model_files"),
        (manifest.path, "forget_set"),
        (manifest.dvc_file, "forget_set"),
    ]


def _version_tags(
    request: DeletionRequest,
    work: _Work,
    record: RequestRecord,
    run_id: str,
    metrics: Mapping[str, float],
) -> dict[str, Any]:
    """The new version's tags: everything a later request or an auditor rebuilds from."""
    parent, run, manifest = work.loaded.parent, work.loaded.run, work.manifest
    verdict, code = work.judged.verdict, record.code_version or {}
    return {
        TAG_REQUEST_ID: request.request_id,
        TAG_CONTENT_HASH: request.content_hash(),
        "requested_by": request.requested_by,
        **task_tags(run.name, run.options),
        **lineage_tags(parent.tags),  # a registered model's data and architecture
        "forget_classes": list(run.forget_classes),
        "forget_class_names": run.forget_class_names,
        "data.dvc_md5": work.loaded.data_version.md5,
        "data.git_rev": work.loaded.data_version.git_rev or "none",
        "data.forget_manifest_dvc_md5": manifest.dvc_md5,
        "data.forget_manifest_sha256": manifest.content_sha256,
        "threat_model": threat_model(work.loaded.repair),
        **_repair_tags(work.repair),
        "code.git_sha": code.get("git_sha"),
        "code.package_version": code.get("package_version"),
        "code.git_dirty": str(code.get("git_dirty")).lower(),
        "parent.version": parent.version,
        "parent.weights_sha256": parent.weights_sha256,
        "method": request.method,
        "method.hparams": work.result.config.to_dict(),
        "onnx_sha256": work.artifacts.package.onnx_sha256,
        "mlflow_run_id": run_id,
        TAG_VERDICT: verdict.label,
        "gate.reasons": verdict.reasons or "none",
        **{f"metric.{k}": v for k, v in metrics.items()},
    }


def _repair_tags(repair: _Repair | None) -> dict[str, Any]:
    """The declared repair set on the version: its size, its DVC manifest and its step."""
    if repair is None:
        return {}
    return {
        "repair.step": repair.plan.step,
        "repair.n_images": len(repair.plan.indices),
        "repair.manifest_dvc_md5": repair.manifest.dvc_md5,
        "repair.manifest_sha256": repair.manifest.content_sha256,
    }


def _register(
    ctx: _Run, request: DeletionRequest, work: _Work, record: RequestRecord
) -> RequestRecord:
    """One MLflow run with everything, the new version, the record, then the completion tag."""
    settings, name, verdict = ctx.settings, request.model_ref().name, work.judged.verdict
    run_id = ModelRegistry.of(settings).create_run(
        run_name=f"unlearn-{request.request_id}",
        tags={
            TAG_REQUEST_ID: request.request_id,
            "prefect.flow_run_id": record.flow_run_id,
            "parent_version": work.loaded.parent.version,
        },
        # the run spans the request's work, not only its registration
        start_time_ms=iso_to_millis(record.started_at) if record.started_at else None,
    )
    ctx.mlflow_run_id = run_id
    _log_inputs(ctx, request, work, run_id)
    metrics = {
        **_scalars("before", work.judged.before),
        **_scalars("after", work.judged.after),
        "unlearn_seconds": work.result.engine.seconds,
    }
    log_to_run_task(
        settings,
        run_id,
        params=_run_params(request, work),
        metrics=metrics,
        tags={TAG_VERDICT: verdict.label},
        artifacts=_run_artifacts(work),
        dicts={
            "gate_verdict.json": verdict.to_dict(),
            "onnx_parity.json": work.artifacts.package.parity,
        },
    )
    tags = _version_tags(request, work, record, run_id, metrics)
    crash_point("registry.after_run")
    version = register_version_task(
        settings, name=name, run_id=run_id, model_dir=work.artifacts.package.model_dir, tags=tags
    )
    # The record is on disk before the version counts as complete, so a run killed from
    # here on is finished by the next run from this record (see flows._resume).
    record = record.with_(
        mlflow_run_id=run_id, version=version, status="registered", timings=ctx.timings()
    )
    write_request_record(settings, request.request_id, record.to_json_dict())
    crash_point("registry.after_create_version")
    ModelRegistry.of(settings).mark_complete(name, version)
    crash_point("registry.after_complete")
    return record


def _move_alias(
    ctx: _Run, request: DeletionRequest, work: _Work, record: RequestRecord
) -> tuple[str, dict[str, Any]]:
    """``@champion`` when every gate passed, else ``@challenger``; the version says why."""
    name, version, verdict = str(record.model), int(record.version or 0), work.judged.verdict
    alias = CHAMPION if verdict.passed else CHALLENGER
    why = (
        f"request {request.request_id}: every gate passed"
        if verdict.passed
        else f"request {request.request_id}: gates failed: {'; '.join(verdict.reasons)}"
    )
    move = move_alias_task(
        ctx.settings,
        ctx.audit,
        name,
        alias,
        version,
        reason=why,
        verdict=verdict.label,
        request_id=request.request_id,
    )
    ModelRegistry.of(ctx.settings).set_version_tags(name, version, {TAG_ALIAS_APPLIED: "true"})
    ModelRegistry.of(ctx.settings).set_version_description(
        name,
        version,
        describe_version(
            request_id=request.request_id,
            forget_class_names=record.forget_class_names or [],
            verdict=verdict.label,
            alias=alias,
            parent_version=work.loaded.parent.version,
            method=request.method,
            reasons=verdict.reasons,
            evidently=work.artifacts.evidently.summary_line(),
        ),
    )
    return alias, move


def _promote(
    ctx: _Run, request: DeletionRequest, work: _Work, record: RequestRecord
) -> dict[str, Any]:
    """Move the alias the verdict earns, write the final record and ``request.completed``."""
    settings, name = ctx.settings, str(record.model)
    version, run_id = int(record.version or 0), str(record.mlflow_run_id)
    verdict, artifacts = work.judged.verdict, work.artifacts
    reasons, parent_version = verdict.reasons, work.loaded.parent.version
    with ctx.timer.step("promote"):
        alias, move = _move_alias(ctx, request, work, record)
    # resumption data; the model is registered
    shutil.rmtree(settings.artifacts_dir / "checkpoints" / request.request_id, ignore_errors=True)
    timings = ctx.timings()
    overhead = pipeline_overhead({"timings": timings})
    record = record.with_(
        alias=alias,
        alias_moves=[move],
        status="completed",
        timings=timings,
        pipeline_overhead=overhead,
        finished_at=utc_now(),
    )
    record_path = write_request_record(settings, request.request_id, record.to_json_dict())
    crash_point("audit.before_completed")
    ctx.audit.append("request.completed", completed_payload(record, record_path))
    log_to_run_task(
        settings,
        run_id,
        metrics={
            "pipeline_overhead_seconds": overhead["overhead_seconds"],
            "pipeline_total_seconds": overhead["total_seconds"],
        },
        artifacts=[(str(record_path), "audit")],
    )
    ModelRegistry.of(settings).set_version_tags(
        name,
        version,
        {"pipeline.overhead_seconds": round(overhead["overhead_seconds"], 3)},
    )
    ModelRegistry.of(settings).finish_run(
        run_id, end_time_ms=iso_to_millis(record.finished_at or utc_now())
    )
    page, local = mlflow_page(settings, run_id, name, version)
    shown = {
        **record.to_json_dict(),
        "record_path": str(record_path),
        "mlflow_page": page + (" (start `unlearn ui` first)" if local else ""),
    }
    create_markdown_artifact(
        _markdown(shown, settings.root),
        key=artifact_key("unlearn", request.request_id),
        description=f"Deletion request {request.request_id}",
    )
    before, after = work.judged.before, work.judged.after
    changes = ", ".join(
        f"{key} {before.get(key, float('nan')):.1f} -> {after.get(key, float('nan')):.1f}"
        for key in work.loaded.run.headline
    )
    print(
        f"request {request.request_id}: {name} v{parent_version} -> v{version} @{alias} "
        f"({verdict.label}); {changes}"
    )
    return {
        "request_id": request.request_id,
        "status": "completed",
        "model": name,
        "parent_version": parent_version,
        "version": version,
        "alias": alias,
        "verdict": verdict.label,
        "reasons": reasons,
        "metrics": {"before": before, "after": after},
        "onnx_path": artifacts.package.onnx_path,
        "evidently_html": artifacts.evidently.html_path,
        "record_path": str(record_path),
        "mlflow_run_id": run_id,
        "timings": timings,
        "pipeline_overhead": overhead,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m flows.unlearn REQUEST.yaml")
    unlearn_flow(sys.argv[1])
