"""Before/after evaluation of an unlearned model and the promotion gates read from ``gates.yaml``.

Gates are a registry (name -> check function), so a new gate is one decorated function plus a
line in ``gates.yaml``; an unknown key in the file is an error, not silently ignored.

The other tasks (``face``, ``backdoor``, ``segmentation``) have a section each in the same file,
written over the task's own headline metrics: ``max_<metric>`` bounds the unlearned model's
value, ``max_drop_<metric>`` bounds how far it fell below the parent's.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.data import UnlearningSplits
from delete.metrics import UnlearningReport, evaluate_unlearning
from tasks._common import PipelineError
from tasks.applications import CLASSIFICATION

__all__ = [
    "DEFAULT_GATES",
    "DEFAULT_TASK_GATES",
    "check_task_gates",
    "class_accuracies",
    "CLASS_ACC_PREFIX",
    "GateCheck",
    "GateVerdict",
    "GateConfigError",
    "register_gate",
    "list_gates",
    "load_gates",
    "check_gates",
    "evaluate_model",
    "evaluate_model_task",
]

#: Used when the project root has no ``gates.yaml``; the same values as the shipped file.
DEFAULT_GATES: dict[str, float] = {
    "max_test_forget_accuracy": 5.0,
    "max_retain_accuracy_drop": 3.0,
    "max_class_accuracy_drop": 5.0,
    "mia_auc_band": 0.1,
}

#: Retained training images the pipeline's evaluation scores at most (a seeded subset).
TRAIN_RETAIN_EVAL_CAP = 5000

#: Prefix of the per-class test accuracies that :func:`class_accuracies` adds to the metrics
#: the gates read (never logged as metrics or tags: one per class would drown them).
CLASS_ACC_PREFIX = "class_acc."


#: Per-task gates when ``gates.yaml`` has no section for the task; the shipped file's values.
#: The backdoor thresholds are the product's target: ASR under 5% for at most 2 points of
#: clean accuracy.
DEFAULT_TASK_GATES: dict[str, dict[str, float]] = {
    "face": {"max_acc_forget": 5.0, "max_drop_acc_retain": 3.0},
    "backdoor": {"max_asr": 5.0, "max_drop_clean_acc": 2.0},
    "segmentation": {"max_iou_forget": 5.0, "max_drop_miou_retain": 5.0},
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


_GateFn = Callable[[Mapping[str, float], Mapping[str, float], float], GateCheck]
_GATES: dict[str, _GateFn] = {}


def register_gate(name: str) -> Callable[[_GateFn], _GateFn]:
    """Register ``fn(before_metrics, after_metrics, threshold) -> GateCheck`` under ``name``."""

    def decorator(fn: _GateFn) -> _GateFn:
        _GATES[name] = fn
        return fn

    return decorator


def list_gates() -> list[str]:
    return sorted(_GATES)


def _metric(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None or math.isnan(float(value)) else float(value)


@register_gate("max_test_forget_accuracy")
def _forget_accuracy(
    before: Mapping[str, float], after: Mapping[str, float], limit: float
) -> GateCheck:
    value = _metric(after, "acc_test_forget")
    return GateCheck(
        "max_test_forget_accuracy",
        value,
        limit,
        value is not None and value <= limit,
        "test accuracy on the forgotten classes, percent, must be at most the threshold",
    )


@register_gate("max_retain_accuracy_drop")
def _retain_drop(
    before: Mapping[str, float], after: Mapping[str, float], limit: float
) -> GateCheck:
    old, new = _metric(before, "acc_test_retain"), _metric(after, "acc_test_retain")
    drop = None if old is None or new is None else old - new
    return GateCheck(
        "max_retain_accuracy_drop",
        drop,
        limit,
        drop is not None and drop <= limit,
        "test accuracy lost on the retained classes vs the parent, percentage points",
    )


@register_gate("max_class_accuracy_drop")
def _worst_class_drop(
    before: Mapping[str, float], after: Mapping[str, float], limit: float
) -> GateCheck:
    """The worst retained class's drop: an average over nine classes hides one that fell.

    Example:
        >>> b = {"class_acc.0": 97.0, "class_acc.1": 96.0}
        >>> _worst_class_drop(b, {"class_acc.0": 97.0, "class_acc.1": 88.0}, 5.0).value
        8.0
    """
    drops = [
        old - new
        for key in before
        if key.startswith(CLASS_ACC_PREFIX)
        and (old := _metric(before, key)) is not None
        and (new := _metric(after, key)) is not None
    ]
    worst = max(drops) if drops else None
    return GateCheck(
        "max_class_accuracy_drop",
        worst,
        limit,
        worst is not None and worst <= limit,
        "test accuracy lost by the worst retained class vs the parent, percentage points",
    )


def class_accuracies(
    per_class: list[float], forget_classes: tuple[int, ...] | list[int]
) -> dict[str, float]:
    """``{"class_acc.<i>": accuracy}`` of the *retained* classes, for the per-class gate.

    Example:
        >>> class_accuracies([99.0, 0.0, 97.5], (1,))
        {'class_acc.0': 99.0, 'class_acc.2': 97.5}
    """
    forget = set(forget_classes)
    return {
        f"{CLASS_ACC_PREFIX}{i}": float(acc)
        for i, acc in enumerate(per_class)
        if i not in forget and not math.isnan(float(acc))
    }


@register_gate("mia_auc_band")
def _mia_band(before: Mapping[str, float], after: Mapping[str, float], band: float) -> GateCheck:
    auc = _metric(after, "mia_auc")
    distance = None if auc is None else abs(auc - 0.5)
    return GateCheck(
        "mia_auc_band",
        distance,
        band,
        distance is not None and distance <= band,
        "|forget-vs-unseen MIA AUC - 0.5| must be within the band",
    )


def _threshold(path: Any, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise GateConfigError(f"{path}: gate {key!r} needs a number, got {value!r}")
    return float(value)


def _task_gate_metric(gate: str) -> tuple[str, bool]:
    """``max_drop_<m>`` -> ``(m, True)``; ``max_<m>`` -> ``(m, False)``."""
    if gate.startswith("max_drop_"):
        return gate[len("max_drop_") :], True
    if gate.startswith("max_"):
        return gate[len("max_") :], False
    return "", False


def _task_section(path: Any, task_name: str, section: Any) -> dict[str, float]:
    from delete.applications import get_task

    if not isinstance(section, dict):
        raise GateConfigError(f"{path}: section {task_name!r} must be a mapping of gate: threshold")
    if not section:
        raise GateConfigError(
            f"{path}: section {task_name!r} has no gates; remove it to use the defaults"
        )
    metrics = get_task(task_name).headline
    gates: dict[str, float] = {}
    for key, value in section.items():
        metric, _ = _task_gate_metric(str(key))
        if metric not in metrics:
            raise GateConfigError(
                f"{path}: unknown {task_name} gate {key!r}; write max_<metric> or "
                f"max_drop_<metric> with a metric of {', '.join(metrics)}"
            )
        gates[str(key)] = _threshold(path, f"{task_name}.{key}", value)
    return gates


def load_gates(path: str | os.PathLike[str] | None, task: str = CLASSIFICATION) -> dict[str, float]:
    """The thresholds of ``task`` from ``gates.yaml``; defaults when the file is absent.

    Top-level ``gate: number`` entries are the classification gates; a top-level key named
    after another task holds that task's section. Every section is validated on every load,
    so a typo anywhere in the file stops the pipeline.
    """
    from delete.applications import list_tasks

    doc: Any = {}
    if path is not None and Path(path).exists():
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise GateConfigError(f"{path}: cannot read gates: {str(exc).splitlines()[0]}") from exc
        if not isinstance(doc, dict):
            raise GateConfigError(f"{path}: expected a mapping of gate: threshold")
    elif task == CLASSIFICATION:
        return dict(DEFAULT_GATES)
    tasks = set(list_tasks()) - {CLASSIFICATION}
    gates: dict[str, float] = {}
    sections: dict[str, dict[str, float]] = {}
    for key, value in doc.items():
        if key in tasks:
            sections[key] = _task_section(path, key, value)
        elif key in _GATES:
            gates[key] = _threshold(path, key, value)
        else:
            known = ", ".join([*list_gates(), *(f"{t} (section)" for t in sorted(tasks))])
            raise GateConfigError(f"{path}: unknown gate {key!r}; known: {known}")
    if task == CLASSIFICATION:
        # a file holding only task sections must not leave classification ungated
        return gates if gates else dict(DEFAULT_GATES)
    if task not in tasks:
        raise GateConfigError(f"no gates for unknown task {task!r}")
    return sections.get(task, dict(DEFAULT_TASK_GATES[task]))


def check_task_gates(
    before: Mapping[str, float], after: Mapping[str, float], gates: Mapping[str, float]
) -> GateVerdict:
    """The gates of a ``face``/``backdoor``/``segmentation`` section on the task's metrics.

    Example:
        >>> v = check_task_gates({"clean_acc": 95.0}, {"clean_acc": 90.0, "asr": 1.0},
        ...     {"max_asr": 5.0, "max_drop_clean_acc": 2.0})
        >>> v.passed, v.reasons[0].split(":")[0]
        (False, 'max_drop_clean_acc')
    """
    checks = []
    for gate, threshold in sorted(gates.items()):
        metric, is_drop = _task_gate_metric(gate)
        new = _metric(after, metric)
        if is_drop:
            old = _metric(before, metric)
            value = None if old is None or new is None else old - new
            what = f"{metric} lost vs the parent, points"
        else:
            value = new
            what = f"{metric} of the unlearned model, percent"
        passed = value is not None and value <= threshold
        checks.append(GateCheck(gate, value, threshold, passed, f"{what}, at most the threshold"))
    reasons = [c.reason() for c in checks if not c.passed]
    return GateVerdict(passed=not reasons, checks=checks, reasons=reasons)


def check_gates(
    before: Mapping[str, float], after: Mapping[str, float], gates: Mapping[str, float]
) -> GateVerdict:
    """Run every configured gate on the parent's (``before``) and the new (``after``) metrics.

    Example:
        >>> v = check_gates({"acc_test_retain": 98.0, "class_acc.0": 98.0},
        ...     {"acc_test_retain": 97.0, "acc_test_forget": 0.0, "mia_auc": 0.55,
        ...      "class_acc.0": 96.0}, DEFAULT_GATES)
        >>> v.passed, [c.name for c in v.checks if not c.passed]
        (True, [])
    """
    checks = [_GATES[name](before, after, threshold) for name, threshold in sorted(gates.items())]
    reasons = [c.reason() for c in checks if not c.passed]
    return GateVerdict(passed=not reasons, checks=checks, reasons=reasons)


def evaluate_model(
    model: nn.Module,
    splits: UnlearningSplits,
    device: str | torch.device = "auto",
    *,
    seed: int = 0,
) -> UnlearningReport:
    """Accuracies on the four splits, H-Mean, per-class accuracy and both MIAs.

    At most :data:`TRAIN_RETAIN_EVAL_CAP` retained training images are scored (a seeded
    subset): scoring all 45,000 of a 50,000-image dataset took 50 s before and again after
    unlearning. The test split, which the gates read, is always scored whole.
    """
    return evaluate_unlearning(
        model, splits, device, mia=True, seed=seed, max_train_retain=TRAIN_RETAIN_EVAL_CAP
    )


evaluate_model_task = task(evaluate_model, name="evaluate-model", cache_policy=NO_CACHE)
