"""Before/after evaluation of an unlearned model and the promotion gates read from ``gates.yaml``.

Gates are a registry (name -> check function), so a new gate is one decorated function plus a
line in ``gates.yaml``; an unknown key in the file is an error, not silently ignored.
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

__all__ = [
    "DEFAULT_GATES",
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
    "mia_auc_band": 0.1,
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


def load_gates(path: str | os.PathLike[str] | None) -> dict[str, float]:
    """Thresholds from a YAML mapping ``gate: number``; defaults when the file is absent."""
    if path is None or not Path(path).exists():
        return dict(DEFAULT_GATES)
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GateConfigError(f"{path}: cannot read gates: {str(exc).splitlines()[0]}") from exc
    if not isinstance(doc, dict):
        raise GateConfigError(f"{path}: expected a mapping of gate: threshold")
    gates: dict[str, float] = {}
    for key, value in doc.items():
        if key not in _GATES:
            raise GateConfigError(f"{path}: unknown gate {key!r}; known: {', '.join(list_gates())}")
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise GateConfigError(f"{path}: gate {key!r} needs a number, got {value!r}")
        gates[key] = float(value)
    return gates


def check_gates(
    before: Mapping[str, float], after: Mapping[str, float], gates: Mapping[str, float]
) -> GateVerdict:
    """Run every configured gate on the parent's (``before``) and the new (``after``) metrics.

    Example:
        >>> v = check_gates({"acc_test_retain": 98.0}, {"acc_test_retain": 97.0,
        ...     "acc_test_forget": 0.0, "mia_auc": 0.55}, DEFAULT_GATES)
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
    """Accuracies on the four splits, H-Mean, per-class accuracy and both MIAs."""
    return evaluate_unlearning(model, splits, device, mia=True, seed=seed)


evaluate_model_task = task(evaluate_model, name="evaluate-model", cache_policy=NO_CACHE)
