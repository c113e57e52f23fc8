"""Registering an original model as version 1 @champion: one code path for ``register`` and
``bootstrap``.

Whoever trained the model (a team, with ``unlearn register``; the demo, with ``bootstrap``),
its first version is evaluated with its task's own metrics, packaged (weights, spec, ONNX with
parity checked in onnxruntime), logged to one MLflow run, registered with the tags a deletion
request rebuilds everything from, marked complete, given ``@champion`` when the model has none,
and announced in the audit log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from delete.models import ModelSpec
from flows._common import current_flow_run_id, move_alias_task, utc_now
from tasks._common import code_version
from tasks.applications import task_tags
from tasks.audit import AuditLog
from tasks.dataset import DataVersion
from tasks.export import ModelPackage, package_model_task
from tasks.registry import (
    CHAMPION,
    TAG_ALIAS_APPLIED,
    TAG_REQUEST_ID,
    TAG_VERDICT,
    ModelRegistry,
    log_to_run_task,
    register_version_task,
)
from tasks.settings import PipelineSettings

__all__ = ["Original", "RegisteredOriginal", "register_original"]


@dataclass(frozen=True)
class Original:
    """An original model and what its first version records.

    Attributes:
        name: Registered model name.
        model, spec: The trained model and its architecture.
        task, task_options: The task it serves and the data options it was trained with.
        origin: ``register`` or ``bootstrap`` (the version's ``origin`` and request_id tags).
        data_version: The DVC version of its dataset.
        metrics: Its task's evaluation on the test split (scalars are logged and tagged; the
            per-class entries go to the run's ``original_metrics.json`` and the audit log).
        params: MLflow run parameters (how it was trained or where it came from).
        tags: Extra version tags (a card's lineage, the training recipe).
        artifacts: Extra files for the run (``(path, artifact folder)``).
        audit_event: The audit event announcing it, with ``audit_payload`` added to it.
    """

    name: str
    model: nn.Module
    spec: ModelSpec
    task: str
    task_options: Mapping[str, Any]
    origin: str
    data_version: DataVersion
    metrics: Mapping[str, float]
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)
    artifacts: Sequence[tuple[str, str]] = ()
    audit_event: str = "model.registered"
    audit_payload: Mapping[str, Any] = field(default_factory=dict)
    alias_reason: str = ""


@dataclass(frozen=True)
class RegisteredOriginal:
    version: int
    mlflow_run_id: str
    onnx_path: str
    champion: int | None


def _scalars(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in metrics.items() if "/" not in k}


def register_original(
    settings: PipelineSettings, audit: AuditLog, original: Original
) -> RegisteredOriginal:
    """Package, log, register, complete and promote ``original`` (see the module docstring)."""
    registry = ModelRegistry.of(settings)
    package = package_model_task(
        original.model,
        original.spec,
        settings.artifacts_dir / original.origin / original.name / "model",
        atol=settings.onnx_atol,
        rtol=settings.onnx_rtol,
    )
    code = code_version()
    run_id = _log_run(settings, original, package, code)
    tags = _version_tags(original, package, code)
    version = register_version_task(
        settings, name=original.name, run_id=run_id, model_dir=package.model_dir, tags=tags
    )
    registry.mark_complete(original.name, version)
    # A re-registered name never demotes a champion produced by later deletions.
    if registry.get_alias(original.name, CHAMPION) is None:
        move_alias_task(
            settings,
            audit,
            original.name,
            CHAMPION,
            version,
            reason=original.alias_reason or f"{original.origin}: original model",
            verdict="n/a",
            request_id=None,
        )
    registry.set_version_tags(original.name, version, {TAG_ALIAS_APPLIED: "true"})
    audit.append(original.audit_event, _audit_payload(original, version, package, code, run_id))
    registry.finish_run(run_id)
    return RegisteredOriginal(
        version=version,
        mlflow_run_id=run_id,
        onnx_path=str(Path(package.onnx_path)),
        champion=registry.get_alias(original.name, CHAMPION),
    )


def _log_run(
    settings: PipelineSettings, original: Original, package: ModelPackage, code: dict[str, Any]
) -> str:
    """The MLflow run of the registration: parameters, metrics, weights, ONNX and evidence."""
    run_id = ModelRegistry.of(settings).create_run(
        run_name=f"{original.origin}-{original.name}",
        tags={TAG_REQUEST_ID: original.origin, "prefect.flow_run_id": current_flow_run_id()},
    )
    log_to_run_task(
        settings,
        run_id,
        params={
            **original.params,
            "data.dvc_md5": original.data_version.md5,
            "task": original.task,
            **{f"task.{k}": v for k, v in original.task_options.items()},
        },
        metrics=_scalars(original.metrics),
        artifacts=[
            (package.weights_path, "model_files"),
            (package.onnx_path, "model_files"),
            *original.artifacts,
        ],
        dicts={
            "onnx_parity.json": package.parity,
            "code_version.json": code,
            "original_metrics.json": dict(original.metrics),
        },
    )
    return run_id


def _version_tags(
    original: Original, package: ModelPackage, code: dict[str, Any]
) -> dict[str, Any]:
    """Version 1's tags: its origin, data and code versions, task, metrics and ONNX hash."""
    return {
        TAG_REQUEST_ID: original.origin,
        "origin": original.origin,
        "forget_classes": [],
        "data.dvc_md5": original.data_version.md5,
        "data.git_rev": original.data_version.git_rev or "none",
        "data.dvc_file_committed": str(original.data_version.dvc_file_committed).lower(),
        "code.git_sha": code["git_sha"],
        "code.package_version": code["package_version"],
        "code.git_dirty": str(code["git_dirty"]).lower(),
        **task_tags(original.task, original.task_options),
        **original.tags,
        **{f"metric.{k}": v for k, v in _scalars(original.metrics).items()},
        "onnx_sha256": package.onnx_sha256,
        TAG_VERDICT: "n/a",
    }


def _audit_payload(
    original: Original, version: int, package: ModelPackage, code: dict[str, Any], run_id: str
) -> dict[str, Any]:
    """The audit log's entry for the registration."""
    return {
        "model": original.name,
        "version": version,
        "task": original.task,
        "task_options": dict(original.task_options),
        "data_version": original.data_version.to_dict(),
        "metrics": dict(original.metrics),
        "weights_sha256": package.weights_sha256,
        "onnx_sha256": package.onnx_sha256,
        "code_version": code,
        "mlflow_run_id": run_id,
        "flow_run_id": current_flow_run_id(),
        "at": utc_now(),
        **original.audit_payload,
    }
