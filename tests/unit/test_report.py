"""The Evidently report: titled, labelled parent vs unlearned, retained classes only, readable
without JavaScript (MLflow's artifact view runs none)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.report import DRIFT_EXPLANATION, build_evidently_report_from_logits

NAMES = [f"digit-{i}" for i in range(10)]
FORGET = 7


def _logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Retained-class samples; the parent calls a sixth of them "7" (its forgotten class)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([c for c in range(10) if c != FORGET for _ in range(12)])
    parent = torch.randn(len(labels), 10, generator=g)
    parent[torch.arange(len(labels)), labels] += 4.0
    parent[::6, FORGET] += 8.0  # wrong, and on the class that is about to be forgotten
    unlearned = parent.clone()
    unlearned[:, FORGET] -= 20.0
    return parent, unlearned, labels


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Any:
    parent, unlearned, labels = _logits()
    return build_evidently_report_from_logits(
        parent,
        unlearned,
        labels,
        NAMES,
        tmp_path_factory.mktemp("report"),
        request_id="forget-digit-7",
        forget_classes=[FORGET],
        reference_name="parent model (v1)",
        current_name="unlearned model (v2)",
    )


def _without_scripts(page: str) -> str:
    return re.sub(r"<script.*?</script>", "", page, flags=re.S)


def test_title_and_labels_name_the_request_and_both_models(report: Any) -> None:
    assert report.title == (
        "Request forget-digit-7: retained-class behaviour, "
        "parent model (v1) vs unlearned model (v2)"
    )
    for path in (report.html_path, report.summary_html_path, report.summary_md_path):
        text = Path(path).read_text()
        assert report.title in text
        assert "Reference = the parent model (v1); Current = the unlearned model (v2)" in text
    assert f"<title>{report.title}</title>" in Path(report.html_path).read_text()


def test_retained_metrics_leave_the_forgotten_class_out(report: Any) -> None:
    from sklearn.metrics import precision_score

    parent, _, labels = _logits()
    retained = [c for c in range(10) if c != FORGET]
    scores = parent.clone()
    scores[:, FORGET] = float("-inf")
    expected = precision_score(labels, scores.argmax(1), labels=retained, average="macro")
    ref = report.retained_metrics["reference"]
    assert ref["precision"] == pytest.approx(expected)
    assert "digit-7" not in ref["per_class"] and len(ref["per_class"]) == 9
    # the parent's "7" answers count as its best retained class, as the unlearned model's do
    assert report.reference_accuracy == pytest.approx(report.current_accuracy)
    # Evidently's own figures come from the same frames: the report body agrees with the summary
    values = {m["metric_name"].split("(")[0]: m["value"] for m in _snapshot(report)}
    assert values["Precision"] == pytest.approx(report.retained_metrics["current"]["precision"])


def test_without_forget_classes_the_old_call_still_works(tmp_path: Path) -> None:
    parent, unlearned, labels = _logits()
    plain = build_evidently_report_from_logits(parent, unlearned, labels, NAMES, tmp_path)
    # the parent's "7" answers stay wrong and the empty "7" column stays in its macro average
    assert plain.reference_accuracy is not None and plain.current_accuracy is not None
    assert plain.reference_accuracy < plain.current_accuracy
    assert plain.retained_metrics["reference"]["precision"] < 0.9
    assert plain.summary_png_path is not None and Path(plain.summary_png_path).stat().st_size


def test_drift_is_explained_wherever_it_is_shown(report: Any) -> None:
    assert "distribution of the model's outputs" in DRIFT_EXPLANATION
    assert "small" in DRIFT_EXPLANATION
    for path in (report.html_path, report.summary_html_path, report.summary_md_path):
        assert DRIFT_EXPLANATION in Path(path).read_text().replace("&#x27;", "'")
    assert "a small shift is expected" in report.summary_line()


def test_summary_is_readable_without_javascript(report: Any) -> None:
    summary = Path(report.summary_html_path).read_text()
    assert "<script" not in summary
    assert "Reference: parent model (v1)" in summary and "accuracy of class digit-8" in summary
    # Evidently's page carries the same table before its scripts, so it is not blank in MLflow
    static = _without_scripts(Path(report.html_path).read_text())
    assert 'id="unlearn-summary"' in static and "precision (macro, retained classes)" in static
    assert Path(report.summary_png_path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.files() == [
        report.html_path,
        report.json_path,
        report.summary_html_path,
        report.summary_png_path,
        report.summary_md_path,
    ]


def _snapshot(report: Any) -> list[dict[str, Any]]:
    return list(json.loads(Path(report.json_path).read_text())["metrics"])
