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

Also accepted: ``model`` as ``{name, parent_version, version, alias}``, ``hashes``
``{parent_weights_sha256, new_weights_sha256, onnx_sha256}``, ``gates`` holding the verdict
itself, ``completed_at`` and an ``artifacts`` mapping.

The certificate states plainly that it is empirical evidence, not a proof. All user-supplied
text is escaped (HTML entities in HTML; Markdown punctuation in Markdown).
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tasks.audit import record_digest

__all__ = ["render_certificate", "DISCLAIMER", "TASK_DISCLAIMER", "CertificateFormat"]

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
    "acc_test_forget",
    "acc_test_retain",
    "acc_train_forget",
    "acc_train_retain",
    "h_mean",
    "mia_svc_member_rate",
    "mia_auc",
    "mia_auc_std",
)


@dataclass
class _Section:
    title: str
    rows: list[tuple[str, Any]] = field(default_factory=list)  # label, value
    table: tuple[list[str], list[list[Any]]] | None = None  # headers, rows
    paragraphs: list[str] = field(default_factory=list)


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


def _sections(record: Mapping[str, Any]) -> tuple[str, list[_Section]]:
    request = _get(record, "request", default={})
    request_id = _get(record, "request_id", default=_get(request, "request_id", default="?"))
    status = _get(record, "status", "outcome", default=_NOT_RECORDED)
    model = _get(record, "model", default={})
    model_block = model if isinstance(model, Mapping) else {}
    model_name = model if isinstance(model, str) else _get(model_block, "name")
    version = _first(_get(record, "version"), _get(model_block, "version", "new_version"))
    parent_version = _first(_get(record, "parent_version"), _get(model_block, "parent_version"))
    alias = _first(_get(record, "alias"), _get(model_block, "alias"))
    gates = _get(record, "gates", default={})
    # the flow keeps the thresholds in `gates` and the outcome in `verdict`
    verdict = _get(record, "verdict", default=gates if _get(gates, "checks") is not None else {})
    thresholds = gates if isinstance(gates, Mapping) and "checks" not in gates else {}
    data_version = _get(record, "data_version", default={})
    manifest = _get(record, "forget_manifest", default={})
    hashes = _get(record, "hashes", "model_hashes", default={})
    onnx = _get(record, "onnx", default={})

    summary = _Section("Summary")
    summary.rows = [
        ("Request", request_id),
        ("Outcome", status),
        ("Model", _first(model_name, _get(request, "model"))),
        ("New version", version),
        ("Alias", alias),
        ("Gates", _verdict(_get(verdict, "passed"))),
        ("Finished at", _get(record, "finished_at", "completed_at")),
    ]
    if _get(record, "error") is not None:
        summary.rows.append(("Error", record["error"]))

    req = _Section("Request")
    req.rows = [
        ("Requested by", _get(request, "requested_by")),
        ("Legal basis / reason", _get(request, "reason")),
        ("Received at", _get(request, "received_at")),
        ("Deadline", _get(request, "deadline")),
        ("Target model", _get(request, "model")),
        ("Requested classes", _get(request, "forget_classes")),
        ("Request content SHA-256", _get(record, "request_content_sha256")),
    ]

    forgot = _Section("What was forgotten")
    forgot.rows = [
        (
            "Forgotten classes",
            _get(record, "forget_classes", default=_get(request, "forget_classes")),
        ),
        ("Class names", _get(record, "forget_class_names")),
        (
            "Forget-set samples",
            _first(_get(manifest, "n_samples"), _get(data_version, "n_forget_samples")),
        ),
        ("Method", _get(record, "method", default=_get(request, "method"))),
        ("Hyper-parameters", _get(record, "hparams", default=_get(request, "hparams")) or "none"),
        ("Started at", _get(record, "started_at")),
    ]

    versions = _Section("Data and code versions")
    for label, block in (
        ("data", data_version),
        ("forget set", manifest),
        ("code", _get(record, "code_version", default={})),
    ):
        if isinstance(block, Mapping) and block:
            versions.rows += [(f"{label}: {k}", v) for k, v in block.items()]
        else:
            versions.rows.append((f"{label} version", block or None))

    models = _Section("Models")
    parent_sha = _first(
        _get(record, "parent_weights_sha256"),
        _get(hashes, "parent_weights_sha256", "parent_sha256", "original_sha256"),
    )
    new_sha = _first(
        _get(record, "weights_sha256", "new_weights_sha256"),
        _get(hashes, "new_weights_sha256", "new_sha256", "unlearned_sha256"),
    )
    models.table = (
        ["Model", "Version", "Weights SHA-256"],
        [
            ["original (parent)", parent_version, parent_sha],
            ["unlearned (new)", version, new_sha],
        ],
    )
    onnx_sha = _first(_get(onnx, "sha256"), _get(hashes, "onnx_sha256"))
    if onnx_sha is not None:
        models.rows.append(("ONNX SHA-256 (unlearned)", onnx_sha))
    shown = {"parent_weights_sha256", "parent_sha256", "original_sha256", "onnx_sha256"}
    shown |= {"new_weights_sha256", "new_sha256", "unlearned_sha256"}
    if isinstance(hashes, Mapping):
        models.rows += [(k, v) for k, v in hashes.items() if k not in shown]

    metrics = _Section("Metrics before and after")
    block = _get(record, "metrics", default={})
    before = _get(block, "before", default={})
    after = _get(block, "after", default={})
    before = before if isinstance(before, Mapping) else {}
    after = after if isinstance(after, Mapping) else {}
    keys = [k for k in _METRIC_ORDER if k in before or k in after]
    keys += sorted((set(before) | set(after)) - set(keys), key=str)
    metric_rows = []
    for k in keys:
        b, a = _get(before, k), _get(after, k)
        if isinstance(b, Mapping | list) or isinstance(a, Mapping | list):
            continue  # per-class tables live in the MLflow run
        metric_rows.append([k, b, a, _delta(b, a)])
    metrics.table = (["Metric", "Before", "After", "Change"], metric_rows)
    if not metric_rows:
        metrics.paragraphs.append("No metrics were recorded.")

    gate_section = _Section("Promotion gates")
    checks = _get(verdict, "checks", default=[])
    gate_rows = [
        [_get(c, "name"), _get(c, "value"), _get(c, "threshold"), _verdict(_get(c, "passed"))]
        for c in (checks if isinstance(checks, Sequence) else [])
        if isinstance(c, Mapping)
    ]
    if not gate_rows and isinstance(thresholds, Mapping):
        gate_rows = [[k, None, v, _NOT_RECORDED] for k, v in thresholds.items()]
    gate_section.table = (["Gate", "Value", "Threshold", "Verdict"], gate_rows)
    gate_section.rows = [("Overall", _verdict(_get(verdict, "passed")))]
    reasons = _get(verdict, "reasons", default=[])
    if reasons:
        gate_section.rows.append(("Reasons", reasons))

    trail = _Section("Audit trail")
    trail.rows = [
        ("Record content digest (SHA-256 of canonical JSON)", record_digest(dict(record)))
    ]
    evidently = _get(record, "evidently", default={})
    trail.rows += [
        (label, value)
        for label, value in (
            ("ONNX file", _get(onnx, "path")),
            ("Evidently report", _get(evidently, "html_path")),
            ("MLflow run", _get(record, "mlflow_run_id")),
            ("Prefect flow run", _get(record, "flow_run_id")),
        )
        if value is not None
    ]
    artifacts = _get(record, "artifacts", default={})
    if isinstance(artifacts, Mapping):
        trail.rows += [(f"artifact: {k}", v) for k, v in artifacts.items()]

    honesty = _Section("What this certificate does and does not show")
    task = _get(record, "task", default="classification")
    honesty.paragraphs.append(DISCLAIMER if task in (None, "classification") else TASK_DISCLAIMER)

    title = f"Deletion certificate: request {request_id}"
    return title, [summary, req, forgot, versions, models, metrics, gate_section, trail, honesty]


# --- Markdown ------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|&])")


def _md(value: Any) -> str:
    """Markdown-safe inline text: one line, punctuation that could start markup escaped."""
    return _MD_SPECIAL.sub(r"\\\1", _fmt(value))


def _render_md(title: str, sections: list[_Section], log_entry: Mapping[str, Any] | None) -> str:
    out = [f"# {_md(title)}", ""]
    for s in sections:
        out += [f"## {_md(s.title)}", ""]
        if s.table is not None:
            headers, rows = s.table
            if rows:
                out.append("| " + " | ".join(_md(h) for h in headers) + " |")
                out.append("|" + "---|" * len(headers))
                out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
                out.append("")
        rows = list(s.rows)
        if s.title == "Audit trail" and log_entry is not None:
            rows += _log_rows(log_entry)
        out += [f"- **{_md(label)}:** {_md(value)}" for label, value in rows]
        if rows:
            out.append("")
        for p in s.paragraphs:
            out += [_md(p), ""]
    return "\n".join(out).rstrip() + "\n"


# --- HTML ----------------------------------------------------------------------------------

_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;"
    "padding:.25rem .6rem;text-align:left}th{background:#f3f3f3}code{word-break:break-all}"
    ".note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5rem 1rem}"
)


def _h(value: Any) -> str:
    return html.escape(_fmt(value), quote=True)


def _render_html(title: str, sections: list[_Section], log_entry: Mapping[str, Any] | None) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_h(title)}</h1>",
    ]
    for s in sections:
        out.append(f"<h2>{_h(s.title)}</h2>")
        if s.table is not None and s.table[1]:
            headers, rows = s.table
            out.append("<table><tr>" + "".join(f"<th>{_h(h)}</th>" for h in headers) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
        rows = list(s.rows)
        if s.title == "Audit trail" and log_entry is not None:
            rows += _log_rows(log_entry)
        if rows:
            out.append("<table>")
            out += [f"<tr><th>{_h(k)}</th><td>{_h(v)}</td></tr>" for k, v in rows]
            out.append("</table>")
        css = ' class="note"' if s.title.startswith("What this certificate") else ""
        out += [f"<p{css}>{_h(p)}</p>" for p in s.paragraphs]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


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
) -> str:
    """Render a deletion certificate from a request's audit record.

    Args:
        record: The request's audit record (see the module docstring for its keys).
        fmt: ``"md"`` (Markdown) or ``"html"`` (a standalone page, user content escaped).
        log_entry: The audit-log record that cites this request, shown as evidence that the
            record is in the tamper-evident log. Pass it only after :meth:`AuditLog.verify`
            succeeded and its ``record_sha256`` matched the record (``unlearn audit
            certificate`` does both).

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
    title, sections = _sections(record)
    if fmt == "md":
        return _render_md(title, sections, log_entry)
    if fmt == "html":
        return _render_html(title, sections, log_entry)
    raise ValueError(f"unknown certificate format {fmt!r}; use 'md' or 'html'")
