"""Evidently report: how the unlearned model's behaviour on the *retained* classes moved.

Reference = the parent model's predictions on the retained-class test images; current = the
unlearned model's predictions on the same images. The classification preset shows quality on
both, the drift preset tests whether the predicted-label and confidence distributions shifted.
Saved as a standalone HTML page (for people) and JSON (for machines).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import Tensor, nn

from delete.data import ImageTensorDataset
from delete.metrics import predict

__all__ = [
    "EvidentlyReport",
    "build_evidently_report",
    "build_evidently_report_from_logits",
    "evidently_report_task",
]


@dataclass(frozen=True)
class EvidentlyReport:
    """Where the report went and its headline numbers."""

    html_path: str
    json_path: str
    reference_accuracy: float | None
    current_accuracy: float | None
    drifted_columns: float | None
    drift_share: float | None
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _label_names(labels: Tensor, class_names: Sequence[str]) -> list[Any]:
    """How classes are named in the report's columns: their names, except with exactly two
    retained classes, where Evidently switches to binary metrics with ``pos_label=1`` and fails
    on any label set without ``1``. There the two retained classes become ``0`` and ``1`` (in
    class order) and every other class ``2, 3, ...``.

    Example:
        >>> _label_names(torch.tensor([0, 2, 2]), ["a", "b", "c"])
        [0, 2, 1]
        >>> _label_names(torch.tensor([0, 1, 2]), ["a", "b", "c"])
        ['a', 'b', 'c']
    """
    present = sorted(set(labels.tolist()))
    if len(present) != 2:
        return list(class_names)
    others = [i for i in range(len(class_names)) if i not in present]
    order = {cls: code for code, cls in enumerate(present + others)}
    return [order[i] for i in range(len(class_names))]


def _frame(logits: Tensor, labels: Tensor, names: Sequence[Any]) -> Any:
    import pandas as pd

    probs = torch.softmax(logits.float(), dim=1)
    confidence, predicted = probs.max(dim=1)
    return pd.DataFrame(
        {
            "target": [names[i] for i in labels.tolist()],
            "prediction": [names[i] for i in predicted.tolist()],
            "confidence": confidence.numpy().astype(float),
        }
    )


def _headline(snapshot: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {"accuracy": None, "drifted": None, "share": None}
    for metric in snapshot.get("metrics", []):
        name, value = str(metric.get("metric_name", "")), metric.get("value")
        if name.startswith("Accuracy(") and isinstance(value, int | float):
            out["accuracy"] = float(value)
        elif name.startswith("DriftedColumnsCount(") and isinstance(value, dict):
            out["drifted"], out["share"] = value.get("count"), value.get("share")
    return out


def build_evidently_report(
    original: nn.Module,
    unlearned: nn.Module,
    retained_test: ImageTensorDataset,
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "auto",
) -> EvidentlyReport:
    """Run both models on ``retained_test`` and write ``evidently_report.{html,json}``."""
    ref_logits, labels = predict(original, retained_test, device)
    cur_logits, _ = predict(unlearned, retained_test, device)
    return build_evidently_report_from_logits(ref_logits, cur_logits, labels, class_names, out_dir)


def build_evidently_report_from_logits(
    ref_logits: Tensor,
    cur_logits: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
) -> EvidentlyReport:
    """The report from both models' logits ``(N, C)`` on the same samples (images or pixels)."""
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset

    definition = DataDefinition(
        classification=[MulticlassClassification(target="target", prediction_labels="prediction")],
        categorical_columns=["target", "prediction"],
        numerical_columns=["confidence"],
    )
    names = _label_names(labels, class_names)
    reference = Dataset.from_pandas(_frame(ref_logits, labels, names), definition)
    current = Dataset.from_pandas(_frame(cur_logits, labels, names), definition)
    report = Report(
        [ClassificationPreset(), DataDriftPreset(columns=["prediction", "confidence"])],
        include_tests=True,
    )
    with warnings.catch_warnings():
        # sklearn warns about labels absent from a sample; the forgotten class is absent by design
        warnings.simplefilter("ignore")
        snapshot = report.run(current, reference)
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    html, js = directory / "evidently_report.html", directory / "evidently_report.json"
    snapshot.save_html(str(html))
    snapshot.save_json(str(js))
    head = _headline(snapshot.dict())
    # Evidently's preset scores the current data only; the reference accuracy is one line here.
    reference_accuracy = float((ref_logits.argmax(dim=1) == labels).float().mean())
    return EvidentlyReport(
        html_path=str(html),
        json_path=str(js),
        reference_accuracy=reference_accuracy,
        current_accuracy=head["accuracy"],
        drifted_columns=head["drifted"],
        drift_share=head["share"],
        n_samples=len(labels),
    )


evidently_report_task = task(build_evidently_report, name="evidently-report", cache_policy=NO_CACHE)
