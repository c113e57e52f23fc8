"""The per-request audit record, as a typed, frozen model.

The unlearn flow builds a :class:`RequestRecord` from what its steps returned, writes it before
the new version counts as complete (``status="registered"``), and once more when the request is
done (``completed``, or ``rejected``/``failed``). Its JSON is the file
``audit/records/<request_id>.json`` whose SHA-256 the audit chain holds, and what
``unlearn audit certificate`` renders; the field names are that file's keys.

A record is never changed in place: :meth:`RequestRecord.with_` returns a validated copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

__all__ = ["RequestRecord", "RecordStatus"]

RecordStatus = Literal["running", "registered", "completed", "rejected", "failed"]


class RequestRecord(BaseModel):
    """One deletion request: what was asked, what ran on which data, what came out.

    Attributes:
        request_id: The request's id (``None`` only when the request could not be parsed).
        status: ``registered`` (version written, not yet complete), ``completed``,
            ``rejected`` (cannot be honoured as written) or ``failed`` (the pipeline failed).
        request: The request's fields; ``request_content_sha256`` their canonical hash.
        model, task, task_options: The registered model and the task its versions serve.
        parent_version, parent_aliases, parent_weights_sha256: What was unlearned from.
        forget_classes, forget_class_names: The resolved classes.
        data_version: The dataset's DVC md5 and git revision.
        forget_manifest: The forget set's manifest (path, DVC md5, content hash).
        threat_model, repair: ``no-clean-data``, or ``declared-repair-set`` with the repair
            set's plan, its DVC manifest (``repair.csv``) and the repair step's record.
        method, hparams, engine, selection: How it was unlearned (``selection``: what the
            automatic selection tried, chose and why it stopped; ``None`` for a fixed run).
        metrics: ``{"before": {...}, "after": {...}}`` in the task's vocabulary.
        gates, verdict: The thresholds and the gate verdict.
        onnx, weights_sha256, evidently, plots: The artifacts.
        mlflow_run_id, version, alias, alias_moves: Where it was registered and promoted.
        timings, pipeline_overhead: Seconds per step; overhead = total - unlearning.
        error, error_type: Why a rejected or failed request ended.
        resumed_after_interruption, note: Set when a later run finished a killed one.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str | None
    status: RecordStatus
    started_at: str | None = None
    finished_at: str | None = None
    flow_run_id: str | None = None
    code_version: dict[str, Any] | None = None
    mlflow_tracking_uri: str | None = None
    request: dict[str, Any] | None = None
    request_content_sha256: str | None = None
    model: str | None = None
    task: str | None = None
    task_options: dict[str, Any] | None = None
    parent_version: int | str | None = None
    parent_aliases: list[str] | None = None
    parent_weights_sha256: str | None = None
    forget_classes: list[int] | str | None = None
    forget_class_names: list[str] | None = None
    data_version: dict[str, Any] | None = None
    forget_manifest: dict[str, Any] | None = None
    threat_model: str | None = None
    repair: dict[str, Any] | None = None
    method: str | None = None
    hparams: dict[str, Any] | None = None
    engine: dict[str, Any] | None = None
    selection: dict[str, Any] | None = None
    metrics: dict[str, dict[str, float]] | None = None
    gates: dict[str, float] | None = None
    verdict: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None
    weights_sha256: str | None = None
    evidently: dict[str, Any] | None = None
    plots: list[str] | None = None
    mlflow_run_id: str | None = None
    version: int | None = None
    alias: str | None = None
    alias_moves: list[dict[str, Any]] | None = None
    timings: dict[str, float] | None = None
    pipeline_overhead: dict[str, float] | None = None
    error: str | None = None
    error_type: str | None = None
    resumed_after_interruption: bool | None = None
    note: str | None = None

    def with_(self, **changes: Any) -> RequestRecord:
        """A validated copy with ``changes`` applied (the record itself never changes).

        Example:
            >>> r = RequestRecord(request_id="r1", status="registered")
            >>> r.with_(status="completed").status, r.status
            ('completed', 'registered')
        """
        return type(self).model_validate({**self.model_dump(), **changes})

    def to_json_dict(self) -> dict[str, Any]:
        """The record file's JSON object (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        """Read back a record file's object (raises ``pydantic.ValidationError`` if foreign)."""
        return cls.model_validate(dict(data))
