"""Deletion certificates: a human-readable account of one request, from its audit record.

The record is the JSON the unlearn flow writes with :func:`tasks.audit.write_request_record`.
Every key is optional (a missing value prints as "not recorded"). The keys read, as the
``unlearn`` flow writes them:

.. code-block:: text

    request_id, status ("completed" | "rejected" | "failed" | ...), error
    request                  DeletionRequest.to_json_dict() (requested_by, reason, ...)
    request_content_sha256
    model (name), parent_version, version, alias
    parent_weights_sha256, weights_sha256, onnx {path, sha256}
    forget_classes [int], forget_class_names [str], method, hparams
    data_version {md5, git_rev, ...}, forget_manifest {n_samples, content_sha256, dvc_md5, ...},
    code_version {git_sha, package_version, ...}          (any keys, shown as given)
    metrics {"before": {name: value}, "after": {name: value}}
    gates {name: threshold}
    verdict {passed, checks: [{name, value, threshold, passed}], reasons: [str]}
    evidently {html_path}, mlflow_run_id, flow_run_id, started_at, finished_at
    engine {device, ...}, mlflow_tracking_uri

Also accepted: ``model`` as ``{name, parent_version, version, alias}``, ``hashes``
``{parent_weights_sha256, new_weights_sha256, onnx_sha256}``, ``gates`` holding the verdict
itself, ``completed_at`` and an ``artifacts`` mapping.

The certificate states plainly that it is empirical evidence, not a proof. All user-supplied
text is escaped (in HTML by the autoescaping jinja2 template ``templates/certificate.html.j2``;
Markdown punctuation in Markdown).

What a reader should not have to guess is said outright: each membership-inference figure gets
one sentence (the SVC member rate is left out, with the reason, where the attack cannot be read),
a request finished after its deadline is flagged late, only settings that took effect are listed
(no ``amp`` on a CPU run, no unset option), and files are named relative to the project root
(which the record's embedded MLflow store reveals, or ``root=`` gives) or by MLflow URI.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import jinja2

from delete.applications import UnknownTaskError, get_task
from delete.selection import TRIAL_OUTCOMES, trial_label
from tasks.audit import record_digest

__all__ = [
    "render_certificate",
    "DISCLAIMER",
    "TASK_DISCLAIMER",
    "MIA_EXPLANATIONS",
    "SVC_LEFT_OUT",
    "CertificateFormat",
]

CertificateFormat = Literal["md", "html"]

DISCLAIMER = (
    "This certificate reports empirical evidence that the model no longer recognises the "
    "forgotten classes: accuracy on held-out images of those classes, and a membership-inference "
    "test, measured on the data versions listed above, compared against the promotion gates. It "
    "is not a cryptographic or formal proof that every trace of the forgotten data has been "
    "removed from the model's weights, and it says nothing about data or models outside what was "
    "evaluated. The SHA-256 hashes identify the exact model files the measurements refer to."
)

#: The same, for face / backdoor / segmentation requests, which run no membership inference.
TASK_DISCLAIMER = (
    "This certificate reports empirical evidence that the model no longer recognises the "
    "forgotten classes, measured with the task's own metrics listed above (identity accuracy and "
    "verification, attack success rate and clean accuracy, or per-class IoU) on the data "
    "versions listed above, compared against the promotion gates. It is not a cryptographic or "
    "formal proof that every trace of the forgotten data has been removed from the model's "
    "weights, and it says nothing about data or models outside what was evaluated. The SHA-256 "
    "hashes identify the exact model files the measurements refer to."
)

_NOT_RECORDED = "not recorded"
_METRIC_ORDER = (
    "acc_forget",
    "acc_retain",
    "acc_train_forget",
    "acc_train_retain",
    "h_mean",
    "mia_svc_member_rate",
    "mia_auc",
    "mia_auc_std",
)


#: One sentence per membership-inference figure, printed under the metrics table.
MIA_EXPLANATIONS = {
    "mia_auc": (
        "mia_auc: how well an attacker trained on the model's losses tells the forgotten "
        "training images from unseen images of the same classes (0.5 = indistinguishable, the "
        "goal; 1.0 = still recognisably seen)."
    ),
    "mia_auc_std": (
        "mia_auc_std: the spread of that AUC across the cross-validation folds, i.e. how much "
        "of a change in mia_auc is noise."
    ),
    "mia_svc_member_rate": (
        "mia_svc_member_rate: the share (%) of forgotten training images that an SVC attack on "
        "the model's confidence calls training members; lower means they look unseen."
    ),
}

#: Why the SVC rate is left out once the forgotten classes are no longer recognised.
SVC_LEFT_OUT = (
    "mia_svc_member_rate is left out: once the model no longer recognises the forgotten classes "
    "(forget accuracy {after:.3g} % after unlearning), their confidence is near zero, where no "
    "attack training sample lies, so the SVC extrapolates and the rate lands near 0 or 100 for "
    "reasons unrelated to forgetting; mia_auc measures the same question without this failure."
)
#: Forget accuracy (%) at or below which the SVC attack only extrapolates.
_SVC_MEANINGLESS_BELOW = 5.0

#: Settings that act only on some devices: ``amp`` (bf16 autocast) runs on CUDA only.
_DEVICE_ONLY_SETTINGS = {"amp": "cuda"}


@dataclass
class _Section:
    title: str
    rows: list[tuple[str, Any]] = field(default_factory=list)  # label, value
    table: tuple[list[str], list[list[Any]]] | None = None  # headers, rows
    paragraphs: list[str] = field(default_factory=list)
    note: bool = False  # paragraphs set apart as a caveat (the disclaimer)


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    """First present, non-None value among ``keys`` of a mapping."""
    if not isinstance(mapping, Mapping):
        return default
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return default


def _fmt(value: Any) -> str:
    if value is None:
        return _NOT_RECORDED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "none"
    return " ".join(str(value).split())


def _verdict(passed: Any) -> str:
    if passed is None:
        return _NOT_RECORDED
    return "PASS" if passed else "FAIL"


def _delta(before: Any, after: Any) -> Any:
    def numeric(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    return after - before if numeric(before) and numeric(after) else None


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _parse_time(value: Any) -> dt.datetime | None:
    """An ISO-8601 time (naive = UTC), or ``None`` when absent or unreadable."""
    if not isinstance(value, str | dt.datetime):
        return None
    try:
        moment = (
            value
            if isinstance(value, dt.datetime)
            else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        )
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _deadline_status(deadline: Any, finished: Any) -> str | None:
    """``"met"``, ``"LATE: ..."`` or ``None`` (no deadline, or not finished).

    Example:
        >>> _deadline_status("2025-03-02T09:00:00Z", "2026-12-02T03:51:22+00:00")
        'LATE: finished 2026-12-02T03:51:22+00:00, 639 days after the deadline'
        >>> _deadline_status("2025-03-02", "2025-03-01T12:00:00Z")
        'met'
    """
    due, done = _parse_time(deadline), _parse_time(finished)
    if due is None or done is None:
        return None
    if done <= due:
        return "met"
    late = done - due
    amount = f"{late.days} days" if late.days else f"{late.seconds // 3600} hours"
    return f"LATE: finished {_fmt(finished)}, {amount} after the deadline"


def _applied_settings(hparams: Any, device: Any) -> Any:
    """The settings that took effect: unset ones (``None``) and device-only ones on another
    device (``amp`` on a CPU run) are dropped, since listing them claims they applied.

    Example:
        >>> _applied_settings({"amp": True, "grad_clip": None, "lr": 0.001}, "cpu")
        {'lr': 0.001}
        >>> _applied_settings({"amp": True}, "cuda:0")
        {'amp': True}
    """
    if not isinstance(hparams, Mapping):
        return hparams
    kept = {}
    for key, value in hparams.items():
        if value is None:
            continue
        needs = _DEVICE_ONLY_SETTINGS.get(str(key))
        if needs is not None and isinstance(device, str) and not device.startswith(needs):
            continue
        kept[key] = value
    return kept


def _project_root(record: Mapping[str, Any]) -> str | None:
    """The project root, from the embedded MLflow store's URI (``sqlite:///ROOT/mlflow/...``).

    Example:
        >>> _project_root({"mlflow_tracking_uri": "sqlite:////work/p/mlflow/mlflow.db"})
        '/work/p'
        >>> _project_root({"mlflow_tracking_uri": "http://mlflow:5000"}) is None
        True
    """
    uri = _get(record, "mlflow_tracking_uri")
    if not isinstance(uri, str) or not uri.startswith("sqlite:///"):
        return None
    database = PurePosixPath(uri.removeprefix("sqlite:///"))
    return str(database.parent.parent) if database.parent.name == "mlflow" else None


def _relative(value: Any, root: str | None) -> Any:
    """An absolute path under ``root`` as a project-relative path; anything else unchanged."""
    if root is None or not isinstance(value, str) or not value.startswith("/"):
        return value
    path = PurePosixPath(value)
    return str(path.relative_to(root)) if path.is_relative_to(root) else value


@dataclass(frozen=True)
class _Facts:
    """What several sections read from the record, found once (either record layout)."""

    request: Any
    request_id: Any
    model_name: Any
    version: Any
    parent_version: Any
    alias: Any
    verdict: Any
    thresholds: Any
    deadline: Any
    on_time: str | None
    device: Any
    onnx: Any
    hashes: Any


def _facts(record: Mapping[str, Any]) -> _Facts:
    request = _get(record, "request", default={})
    model = _get(record, "model", default={})
    model_block = model if isinstance(model, Mapping) else {}
    gates = _get(record, "gates", default={})
    deadline = _get(request, "deadline")
    return _Facts(
        request=request,
        request_id=_get(record, "request_id", default=_get(request, "request_id", default="?")),
        model_name=model if isinstance(model, str) else _get(model_block, "name"),
        version=_first(_get(record, "version"), _get(model_block, "version", "new_version")),
        parent_version=_first(_get(record, "parent_version"), _get(model_block, "parent_version")),
        alias=_first(_get(record, "alias"), _get(model_block, "alias")),
        # the flow keeps the thresholds in `gates` and the outcome in `verdict`
        verdict=_get(record, "verdict", default=gates if _get(gates, "checks") is not None else {}),
        thresholds=gates if isinstance(gates, Mapping) and "checks" not in gates else {},
        deadline=deadline,
        on_time=_deadline_status(deadline, _get(record, "finished_at", "completed_at")),
        device=_get(_get(record, "engine", default={}), "device"),
        onnx=_get(record, "onnx", default={}),
        hashes=_get(record, "hashes", "model_hashes", default={}),
    )


def _deadline_text(f: _Facts) -> Any:
    return f.deadline if f.on_time is None else f"{_fmt(f.deadline)} ({f.on_time})"


def _summary_section(record: Mapping[str, Any], f: _Facts) -> _Section:
    summary = _Section("Summary")
    summary.rows = [
        ("Request", f.request_id),
        ("Outcome", _get(record, "status", "outcome", default=_NOT_RECORDED)),
        ("Model", _first(f.model_name, _get(f.request, "model"))),
        ("New version", f.version),
        ("Alias", f.alias),
        ("Gates", _verdict(_get(f.verdict, "passed"))),
        ("Finished at", _get(record, "finished_at", "completed_at")),
    ]
    if f.on_time is not None:
        summary.rows.append(("Deadline", _deadline_text(f)))
    if _get(record, "error") is not None:
        summary.rows.append(("Error", record["error"]))
    return summary


def _request_section(record: Mapping[str, Any], f: _Facts) -> _Section:
    return _Section(
        "Request",
        rows=[
            ("Requested by", _get(f.request, "requested_by")),
            ("Legal basis / reason", _get(f.request, "reason")),
            ("Received at", _get(f.request, "received_at")),
            ("Deadline", _deadline_text(f)),
            ("Target model", _get(f.request, "model")),
            ("Requested classes", _get(f.request, "forget_classes")),
            ("Request content SHA-256", _get(record, "request_content_sha256")),
        ],
    )


def _forgotten_section(record: Mapping[str, Any], f: _Facts) -> _Section:
    manifest = _get(record, "forget_manifest", default={})
    data_version = _get(record, "data_version", default={})
    hparams = _get(record, "hparams", default=_get(f.request, "hparams"))
    return _Section(
        "What was forgotten",
        rows=[
            (
                "Forgotten classes",
                _get(record, "forget_classes", default=_get(f.request, "forget_classes")),
            ),
            ("Class names", _get(record, "forget_class_names")),
            (
                "Forget-set samples",
                _first(_get(manifest, "n_samples"), _get(data_version, "n_forget_samples")),
            ),
            ("Method", _get(record, "method", default=_get(f.request, "method"))),
            ("Threat model", _threat_model(record)),
            ("Settings that applied", _applied_settings(hparams, f.device) or "none"),
            ("Device", f.device),
            ("Started at", _get(record, "started_at")),
        ],
    )


def _threat_model(record: Mapping[str, Any]) -> str | None:
    """Which data the deletion used besides the forget set, said outright."""
    repair = _get(record, "repair")
    if isinstance(repair, Mapping):
        share = _get(repair, "fraction_of_train")
        share_text = f"{100 * share:.2f}% of the training set" if share is not None else ""
        return (
            f"declared repair set: {_get(repair, 'n_images')} clean images chosen by the "
            f"requester ({share_text}; at most {100 * (_get(repair, 'max_fraction') or 0):g}%), "
            f"used after unlearning by the '{_get(repair, 'step')}' repair step; their files "
            "are listed in the DVC-versioned repair.csv"
        )
    if _get(record, "threat_model") == "no-clean-data":
        return "no clean data: only the forget set was used (DELETE as in the paper)"
    return None


def _selection_section(record: Mapping[str, Any]) -> _Section | None:
    """How the settings were chosen (``None`` when a fixed setting ran): what was tried, what
    was chosen and why it stopped, as the audit record holds it."""
    selection = _get(record, "selection")
    if not isinstance(selection, Mapping):
        return None
    size = _get(selection, "selection_size", default=0)
    section = _Section(
        "How the settings were chosen",
        rows=[
            ("Mode", _get(selection, "mode")),
            ("Chosen", _get(selection, "chosen")),
            (
                "Epochs",
                f"{_fmt(_get(selection, 'epochs'))} trained, epoch "
                f"{_fmt(_get(selection, 'best_epoch'))} kept",
            ),
            (
                "Selection sample",
                f"{size} retained training images, used to choose only" if size else "none",
            ),
            ("Why it stopped", _get(selection, "stop_reason")),
        ],
    )
    tried = _get(selection, "tried", default=[])
    section.table = (
        ["Candidate", "Outcome", "Probe epochs"],
        [
            [
                _trial_label(t),
                TRIAL_OUTCOMES.get(str(_get(t, "status")), _get(t, "status")),
                len(_get(t, "signals", default=[])),
            ]
            for t in (tried if isinstance(tried, Sequence) else [])
            if isinstance(t, Mapping)
        ],
    )
    return section


def _trial_label(trial: Mapping[str, Any]) -> str:
    """The candidate, and the rule that tried it where a request ran two (a short forget set
    with a selection sample tries the same candidates under both rules)."""
    return trial_label(f"{_get(trial, 'candidate')}", _get(trial, "rule"))


def _versions_section(record: Mapping[str, Any]) -> _Section:
    versions = _Section("Data and code versions")
    for label, block in (
        ("data", _get(record, "data_version", default={})),
        ("forget set", _get(record, "forget_manifest", default={})),
        ("repair set", _get(_get(record, "repair", default={}) or {}, "manifest", default={})),
        ("code", _get(record, "code_version", default={})),
    ):
        if isinstance(block, Mapping) and block:
            versions.rows += [(f"{label}: {k}", v) for k, v in block.items()]
        elif label != "repair set":  # a request without a repair set has no such version
            versions.rows.append((f"{label} version", block or None))
    return versions


#: Hash keys the models table already shows; any other key of ``hashes`` gets its own row.
_SHOWN_HASHES = {
    "parent_weights_sha256",
    "parent_sha256",
    "original_sha256",
    "onnx_sha256",
    "new_weights_sha256",
    "new_sha256",
    "unlearned_sha256",
}


def _models_section(record: Mapping[str, Any], f: _Facts) -> _Section:
    parent_sha = _first(
        _get(record, "parent_weights_sha256"),
        _get(f.hashes, "parent_weights_sha256", "parent_sha256", "original_sha256"),
    )
    new_sha = _first(
        _get(record, "weights_sha256", "new_weights_sha256"),
        _get(f.hashes, "new_weights_sha256", "new_sha256", "unlearned_sha256"),
    )
    models = _Section("Models")
    models.table = (
        ["Model", "Version", "Weights SHA-256"],
        [
            ["original (parent)", f.parent_version, parent_sha],
            ["unlearned (new)", f.version, new_sha],
        ],
    )
    onnx_sha = _first(_get(f.onnx, "sha256"), _get(f.hashes, "onnx_sha256"))
    if onnx_sha is not None:
        models.rows.append(("ONNX SHA-256 (unlearned)", onnx_sha))
    if isinstance(f.hashes, Mapping):
        models.rows += [(k, v) for k, v in f.hashes.items() if k not in _SHOWN_HASHES]
    return models


def _metric_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The known metrics in their order, then the others by name; no per-class entries."""
    keys = [k for k in _METRIC_ORDER if k in before or k in after]
    # per-class entries ("class_acc/<name>") are in the per-class plot, not in this table
    keys += sorted(
        {k for k in (set(before) | set(after)) - set(keys) if "/" not in str(k)}, key=str
    )
    return keys


def _metrics_section(record: Mapping[str, Any]) -> _Section:
    block = _get(record, "metrics", default={})
    before = _get(block, "before", default={})
    after = _get(block, "after", default={})
    before = before if isinstance(before, Mapping) else {}
    after = after if isinstance(after, Mapping) else {}
    keys = _metric_keys(before, after)
    forget_after = _first(_get(after, "acc_train_forget"), _get(after, "acc_forget"))
    svc_left_out = (
        "mia_svc_member_rate" in keys
        and isinstance(forget_after, int | float)
        and forget_after <= _SVC_MEANINGLESS_BELOW
    )
    if svc_left_out:
        keys.remove("mia_svc_member_rate")
    metric_rows = []
    for k in keys:
        b, a = _get(before, k), _get(after, k)
        if isinstance(b, Mapping | list) or isinstance(a, Mapping | list):
            continue  # per-class tables live in the MLflow run
        metric_rows.append([k, b, a, _delta(b, a)])
    metrics = _Section("Metrics before and after")
    metrics.table = (["Metric", "Before", "After", "Change"], metric_rows)
    if not metric_rows:
        metrics.paragraphs.append("No metrics were recorded.")
    metrics.paragraphs += [MIA_EXPLANATIONS[k] for k in MIA_EXPLANATIONS if k in keys]
    if svc_left_out:
        metrics.paragraphs.append(SVC_LEFT_OUT.format(after=forget_after))
    return metrics


def _gates_section(f: _Facts) -> _Section:
    checks = _get(f.verdict, "checks", default=[])
    gate_rows = [
        [_get(c, "name"), _get(c, "value"), _get(c, "threshold"), _verdict(_get(c, "passed"))]
        for c in (checks if isinstance(checks, Sequence) else [])
        if isinstance(c, Mapping)
    ]
    if not gate_rows and isinstance(f.thresholds, Mapping):
        gate_rows = [[k, None, v, _NOT_RECORDED] for k, v in f.thresholds.items()]
    gates = _Section("Promotion gates")
    gates.table = (["Gate", "Value", "Threshold", "Verdict"], gate_rows)
    gates.rows = [("Overall", _verdict(_get(f.verdict, "passed")))]
    reasons = _get(f.verdict, "reasons", default=[])
    if reasons:
        gates.rows.append(("Reasons", reasons))
    return gates


def _trail_section(record: Mapping[str, Any], f: _Facts) -> _Section:
    trail = _Section("Audit trail")
    trail.rows = [
        ("Record content digest (SHA-256 of canonical JSON)", record_digest(dict(record)))
    ]
    evidently = _get(record, "evidently", default={})
    model_version = (
        _mlflow_uri("models:/", f.model_name, f.version) if f.version is not None else None
    )
    trail.rows += [
        (label, value)
        for label, value in (
            ("ONNX file", _get(f.onnx, "path")),
            ("Evidently report", _get(evidently, "html_path")),
            ("MLflow run", _mlflow_uri("runs:/", _get(record, "mlflow_run_id"))),
            ("MLflow model version", model_version),
            ("Prefect flow run", _get(record, "flow_run_id")),
        )
        if value is not None
    ]
    artifacts = _get(record, "artifacts", default={})
    if isinstance(artifacts, Mapping):
        trail.rows += [(f"artifact: {k}", v) for k, v in artifacts.items()]
    return trail


def _honesty_section(record: Mapping[str, Any]) -> _Section:
    # The membership-inference sentence belongs to tasks whose spec runs that test.
    disclaimer = DISCLAIMER if _has_membership_test(record) else TASK_DISCLAIMER
    return _Section(
        "What this certificate does and does not show", paragraphs=[disclaimer], note=True
    )


def _has_membership_test(record: Mapping[str, Any]) -> bool:
    """Whether the record's task measures membership inference (its ``TaskSpec.membership``);
    a record without a task is a classification one, an unknown task has no such test."""
    try:
        spec = get_task(_get(record, "task") or "classification")
    except UnknownTaskError:
        return False
    return spec.membership is not None


def _relativize(sections: list[_Section], base: str | None) -> None:
    """Name every file under the project root ``base`` relative to it (in place)."""
    for section in sections:
        section.rows = [(label, _relative(value, base)) for label, value in section.rows]
        if section.table is not None:
            headers, rows = section.table
            section.table = (headers, [[_relative(c, base) for c in row] for row in rows])


def _sections(
    record: Mapping[str, Any],
    root: str | os.PathLike[str] | None = None,
    log_entry: Mapping[str, Any] | None = None,
) -> tuple[str, list[_Section]]:
    """The certificate's title and sections, in the order both formats print them."""
    f = _facts(record)
    trail = _trail_section(record, f)
    selection = _selection_section(record)
    sections = [
        _summary_section(record, f),
        _request_section(record, f),
        _forgotten_section(record, f),
        *([selection] if selection is not None else []),
        _versions_section(record),
        _models_section(record, f),
        _metrics_section(record),
        _gates_section(f),
        trail,
        _honesty_section(record),
    ]
    base = str(root) if root is not None else _project_root(record)
    _relativize(sections, base)
    if base is not None:
        trail.rows.append(("File paths", "relative to the project root"))
    if log_entry is not None:
        trail.rows += _log_rows(log_entry)
    return f"Deletion certificate: request {f.request_id}", sections


def _mlflow_uri(scheme: str, *parts: Any) -> str | None:
    """``runs:/ID`` or ``models:/NAME/VERSION``; ``None`` when a part is missing."""
    if any(p is None for p in parts):
        return None
    return scheme + "/".join(str(p) for p in parts)


# --- Markdown ------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&])")


def _md(value: Any) -> str:
    """Markdown-safe inline text: one line, punctuation that could start markup escaped."""
    return _MD_SPECIAL.sub(r"\\\1", _fmt(value))


def _render_md(title: str, sections: list[_Section]) -> str:
    out = [f"# {_md(title)}", ""]
    for s in sections:
        out += [f"## {_md(s.title)}", ""]
        if s.table is not None:
            headers, cells = s.table
            if cells:
                out.append("| " + " | ".join(_md(h) for h in headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in cells]
                out.append("")
        out += [f"- **{_md(label)}:** {_md(value)}" for label, value in s.rows]
        if s.rows:
            out.append("")
        for p in s.paragraphs:
            out += [_md(p), ""]
    return "\n".join(out).rstrip() + "\n"


# --- HTML ----------------------------------------------------------------------------------


@functools.cache
def _html_template() -> jinja2.Template:
    """``templates/certificate.html.j2``, found in the source tree and in an installed wheel.

    Autoescape is on for the whole page: every value (request fields, class names, errors) is
    text, so a request cannot inject markup into the certificate.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tasks", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = _fmt
    return env.get_template("certificate.html.j2")


def _render_html(title: str, sections: list[_Section]) -> str:
    return _html_template().render(title=title, sections=sections)


def _log_rows(entry: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [
        (
            "Audit log entry (hash chain and signature verified)",
            f"seq {_get(entry, 'seq')} ({_get(entry, 'event')})",
        ),
        ("Audit log time", _get(entry, "ts")),
        ("Audit log entry hash", _get(entry, "hash")),
        ("Record SHA-256 cited by the log", _get(_get(entry, "payload"), "record_sha256")),
    ]


def render_certificate(
    record: Mapping[str, Any],
    fmt: CertificateFormat = "md",
    log_entry: Mapping[str, Any] | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
) -> str:
    """Render a deletion certificate from a request's audit record.

    Args:
        record: The request's audit record (see the module docstring for its keys).
        fmt: ``"md"`` (Markdown) or ``"html"`` (a standalone page, user content escaped).
        log_entry: The audit-log record that cites this request, shown as evidence that the
            record is in the tamper-evident log. Pass it only after :meth:`AuditLog.verify`
            succeeded and its ``record_sha256`` matched the record (``unlearn audit
            certificate`` does both).
        root: The project root: files under it are named relative to it. Default: read from
            the record's embedded MLflow store URI; paths stay absolute when neither tells.

    Raises:
        ValueError: Unknown ``fmt`` or ``record`` is not a mapping.

    Example:
        >>> md = render_certificate({"request_id": "r1", "forget_classes": [3]})
        >>> md.splitlines()[0]
        '# Deletion certificate: request r1'
        >>> "not a cryptographic or formal proof" in md
        True
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"audit record must be a JSON object, not {type(record).__name__}")
    title, sections = _sections(record, root, log_entry)
    if fmt == "md":
        return _render_md(title, sections)
    if fmt == "html":
        return _render_html(title, sections)
    raise ValueError(f"unknown certificate format {fmt!r}; use 'md' or 'html'")
