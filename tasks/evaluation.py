"""Promotion gates, one grammar for every task, read from ``gates.yaml``.

A gate names a metric of the task's evaluation (:attr:`~delete.applications.TaskSpec.metrics`)
and bounds it:

* ``max_<metric>``: the unlearned model's value is at most the threshold;
* ``max_drop_<metric>``: it fell at most the threshold below the parent's value.

The task's per-class family (``class_acc``, ``class_iou``) is a metric too, read class by
class, so one class cannot hide behind an average: ``max_drop_class_acc`` bounds the *worst*
retained class's drop, ``max_class_acc`` the best-recognised forgotten class.

``gates.yaml`` holds one section per task (``classification:``, ``face:``, ...); a task without
a section gets its :attr:`~delete.applications.TaskSpec.default_gates`. Files written before the
one grammar keep working: top-level gates are the classification section, and the old names
are read as their new spelling (:data:`LEGACY_GATE_NAMES`). An unknown key anywhere in the file
is an error, not silently ignored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from delete.applications import TaskSpec, get_task, list_tasks
from delete.repair import THREAT_MODELS
from tasks._common import PipelineError, one_line

__all__ = [
    "LEGACY_GATE_NAMES",
    "GateCheck",
    "GateConfigError",
    "GateVerdict",
    "check_gates",
    "default_gates",
    "load_gates",
]

#: Gate names of classification's first gates.yaml -> the one grammar.
LEGACY_GATE_NAMES: dict[str, str] = {
    "max_test_forget_accuracy": "max_acc_forget",
    "max_retain_accuracy_drop": "max_drop_acc_retain",
    "max_class_accuracy_drop": "max_drop_class_acc",
    "mia_auc_band": "max_mia_gap",
}


class GateConfigError(PipelineError):
    """``gates.yaml`` is unreadable, names an unknown gate, or gives a non-numeric threshold."""


@dataclass(frozen=True)
class GateCheck:
    """One gate's outcome. ``value`` is ``None`` when the metric was not computed."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    description: str

    def reason(self) -> str:
        shown = "not computed" if self.value is None else f"{self.value:.4g}"
        return f"{self.name}: {shown} fails threshold {self.threshold:g} ({self.description})"


@dataclass(frozen=True)
class GateVerdict:
    """All gates together: promote only when ``passed``."""

    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "passed" if self.passed else "rejected"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "verdict": self.label,
            "checks": [asdict(c) for c in self.checks],
            "reasons": list(self.reasons),
        }


def _parse_gate(gate: str) -> tuple[str, bool]:
    """``max_drop_<m>`` -> ``(m, True)``; ``max_<m>`` -> ``(m, False)``; else ``("", False)``.

    Example:
        >>> _parse_gate("max_drop_acc_retain"), _parse_gate("max_asr"), _parse_gate("asr")
        (('acc_retain', True), ('asr', False), ('', False))
    """
    if gate.startswith("max_drop_"):
        return gate[len("max_drop_") :], True
    if gate.startswith("max_"):
        return gate[len("max_") :], False
    return "", False


def _value(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or math.isnan(float(value)) else float(value)


def _family(metrics: Mapping[str, float], family: str, names: Collection[str]) -> dict[str, float]:
    """``{class name: value}`` of the per-class ``family`` entries for the classes ``names``."""
    out = {}
    for name in names:
        value = _value(metrics, f"{family}/{name}")
        if value is not None:
            out[name] = value
    return out


def _check(
    gate: str,
    threshold: float,
    spec: TaskSpec[Any],
    before: Mapping[str, float],
    after: Mapping[str, float],
    forgotten: Collection[str],
) -> GateCheck:
    metric, is_drop = _parse_gate(gate)
    if metric == spec.per_class_metric:
        # The worst class decides: of the retained classes for a drop, else of the forgotten.
        names = [n.split("/", 1)[1] for n in {*before, *after} if n.startswith(metric + "/")]
        group = [n for n in names if (n not in forgotten) == is_drop]
        new = _family(after, metric, group)
        if is_drop:
            parent = _family(before, metric, group)
            drops = [parent[n] - new[n] for n in parent if n in new]
            value = max(drops) if drops else None
            what = f"{spec.per_class_label} lost by the worst retained class vs the parent, points"
        else:
            value = max(new.values()) if new else None
            what = f"{spec.per_class_label} of the best-recognised forgotten class"
    elif is_drop:
        old, cur = _value(before, metric), _value(after, metric)
        value = None if old is None or cur is None else old - cur
        what = f"{metric} lost vs the parent, points"
    else:
        value = _value(after, metric)
        what = f"{metric} of the unlearned model"
    passed = value is not None and value <= threshold
    return GateCheck(gate, value, threshold, passed, f"{what}, at most the threshold")


def check_gates(
    task: str,
    before: Mapping[str, float],
    after: Mapping[str, float],
    gates: Mapping[str, float],
    forgotten: Collection[str] = (),
) -> GateVerdict:
    """Every gate of ``task`` on the parent's (``before``) and the new (``after``) metrics.

    ``forgotten``: the forgotten classes' names (the per-class gates read the others).

    Example:
        >>> v = check_gates("backdoor", {"clean_acc": 95.0}, {"clean_acc": 90.0, "asr": 1.0},
        ...     {"max_asr": 5.0, "max_drop_clean_acc": 2.0})
        >>> v.passed, v.reasons[0].split(":")[0]
        (False, 'max_drop_clean_acc')
        >>> b = {"class_acc/a": 97.0, "class_acc/b": 96.0, "class_acc/c": 99.0}
        >>> a = {"class_acc/a": 97.0, "class_acc/b": 88.0, "class_acc/c": 0.0}
        >>> check_gates("classification", b, a, {"max_drop_class_acc": 5.0}, ["c"]).checks[0].value
        8.0
    """
    spec = get_task(task)
    checks = [
        _check(name, threshold, spec, before, after, frozenset(forgotten))
        for name, threshold in sorted(gates.items())
    ]
    reasons = [c.reason() for c in checks if not c.passed]
    return GateVerdict(passed=not reasons, checks=checks, reasons=reasons)


def _threshold(path: Any, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise GateConfigError(f"{path}: gate {key!r} needs a number, got {value!r}")
    return float(value)


def _section(path: Any, task: str, section: Any) -> dict[str, float]:
    if not isinstance(section, dict):
        raise GateConfigError(f"{path}: section {task!r} must be a mapping of gate: threshold")
    if not section:
        raise GateConfigError(
            f"{path}: section {task!r} has no gates; remove it to use the defaults"
        )
    spec = get_task(task)
    known = (*spec.metrics, spec.per_class_metric)
    gates: dict[str, float] = {}
    for key, value in section.items():
        name = LEGACY_GATE_NAMES.get(str(key), str(key))
        metric, _ = _parse_gate(name)
        if metric not in known:
            raise GateConfigError(
                f"{path}: unknown {task} gate {key!r}; write max_<metric> or max_drop_<metric> "
                f"with a metric of {', '.join(known)}"
            )
        gates[name] = _threshold(path, f"{task}.{key}", value)
    return gates


def default_gates(task: str) -> dict[str, float]:
    """The gates ``task`` ships with (used when ``gates.yaml`` has no section for it)."""
    return dict(get_task(task).default_gates)


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GateConfigError(f"{path}: cannot read gates: {one_line(exc)}") from exc
    if not isinstance(doc, dict):
        raise GateConfigError(f"{path}: expected a mapping of task: {{gate: threshold}}")
    return doc


def load_gates(
    path: str | os.PathLike[str] | None, task: str, threat_model: str | None = None
) -> dict[str, float]:
    """The gates of ``task`` from ``gates.yaml``; its defaults when the file or section is absent.

    A section ``<task>.<threat model>`` (e.g. ``backdoor.declared-repair-set``) holds the
    gates of requests run under that threat model (:data:`delete.repair.THREAT_MODELS`); a
    request without one, or a file without such a section, is judged by ``<task>``.
    Every section is validated on every load, so a typo anywhere in the file stops the pipeline.
    """
    get_task(task)  # an unknown task is refused before the file is read
    if path is None or not Path(path).exists():
        return default_gates(task)
    tasks = set(list_tasks())
    variants = {f"{t}.{m}" for t in tasks for m in THREAT_MODELS}
    sections: dict[str, dict[str, float]] = {}
    legacy: dict[str, Any] = {}
    for key, value in _read(path).items():
        if key in tasks:
            sections[key] = _section(path, key, value)
        elif key in variants:
            sections[key] = _section(path, key.split(".")[0], value)
        else:
            legacy[str(key)] = value  # a top-level gate: the classification section of old files
    if legacy:
        if "classification" in sections:
            raise GateConfigError(
                f"{path}: top-level gate(s) {', '.join(sorted(legacy))} beside a classification "
                f"section; move them into it (known sections: {', '.join(sorted(tasks))})"
            )
        sections["classification"] = _section(path, "classification", legacy)
    if threat_model is not None and f"{task}.{threat_model}" in sections:
        return sections[f"{task}.{threat_model}"]
    return sections.get(task, default_gates(task))
