"""Evidently report: how the unlearned model's behaviour on the *retained* classes moved.

Reference = the parent model's predictions on the retained-class test images; current = the
unlearned model's predictions on the same images. The classification preset shows quality on
both, the drift preset tests whether the predicted-label and confidence distributions shifted.
Saved as a standalone HTML page (for people) and JSON (for machines).

The interactive page needs JavaScript, which MLflow's artifact view does not run (it shows HTML
in a sandboxed iframe), so the same headline numbers are also written without scripts: a static
header at the top of ``evidently_report.html``, ``evidently_summary.html`` (a plain table),
``evidently_summary.png`` (per-class bars) and ``evidently_summary.md``.
"""

from __future__ import annotations

import html
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DRIFT_EXPLANATION",
    "EvidentlyReport",
    "build_evidently_report_from_logits",
]

#: What "drift" means in this report; printed next to every drift figure.
DRIFT_EXPLANATION = (
    "Drift here means that the distribution of the model's outputs (predicted label and "
    "confidence) on the same retained-class images shifted between the parent and the unlearned "
    "model; unlearning moves the forgotten classes' probability to the retained ones, so a small "
    "shift is expected, and the promotion gates, not this test, decide whether the model is "
    "promoted."
)


@dataclass(frozen=True)
class EvidentlyReport:
    """Where the report went and its headline numbers.

    The fields after ``n_samples`` have defaults so that reports built by older code (and
    records read back from disk) still construct.

    Attributes:
        retained_metrics: ``{"reference": {...}, "current": {...}}`` with ``accuracy``,
            ``precision``, ``recall``, ``f1`` (macro over the retained classes only) and
            ``per_class`` (accuracy of each retained class, by class name).
    """

    html_path: str
    json_path: str
    reference_accuracy: float | None
    current_accuracy: float | None
    drifted_columns: float | None
    drift_share: float | None
    n_samples: int
    title: str | None = None
    summary_html_path: str | None = None
    summary_png_path: str | None = None
    summary_md_path: str | None = None
    retained_metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def files(self) -> list[str]:
        """Every file of the report, interactive page first (what to log to the MLflow run)."""
        paths = (
            self.html_path,
            self.json_path,
            self.summary_html_path,
            self.summary_png_path,
            self.summary_md_path,
        )
        return [p for p in paths if p is not None]

    def summary_line(self) -> str:
        """One Markdown line for the registry's version description.

        Example:
            >>> report = EvidentlyReport("r.html", "r.json", 0.9561, 0.93554, 1.0, 0.5, 900)
            >>> report.summary_line()[:66]
            'Evidently, retained classes (parent -> unlearned): accuracy 0.956 '
            >>> "drift in 1 of the 2 output columns" in report.summary_line()
            True
        """
        parts = []
        if self.reference_accuracy is not None and self.current_accuracy is not None:
            parts.append(f"accuracy {self.reference_accuracy:.3f} -> {self.current_accuracy:.3f}")
        if self.drifted_columns is not None:
            parts.append(
                f"drift in {self.drifted_columns:.0f} of the {len(_DRIFT_COLUMNS)} output "
                "columns (a small shift is expected)"
            )
        return "Evidently, retained classes (parent -> unlearned): " + "; ".join(parts) + "."


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


_DRIFT_COLUMNS = ("prediction", "confidence")


def _answers(logits: Tensor, excluded: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Each sample's predicted class and its probability, the ``excluded`` classes left out.

    Leaving the forgotten classes out makes both models answer over the same label set: a
    parent that calls a retained image "7" is read as its most likely retained class, so no
    empty "7" column enters the macro averages (it dragged the parent's precision down and made
    the unlearned model look better than its parent).

    Example:
        >>> _answers(torch.tensor([[0.0, 5.0, 1.0]]), [1])[0].tolist()
        [2]
    """
    probs = torch.softmax(logits.float(), dim=1)
    scores = probs.clone()
    if len(excluded):
        scores[:, list(excluded)] = -1.0
    predicted = scores.argmax(dim=1)
    return predicted, probs.gather(1, predicted[:, None])[:, 0]


def _frame(
    logits: Tensor, labels: Tensor, names: Sequence[Any], excluded: Sequence[int] = ()
) -> Any:
    import pandas as pd

    predicted, confidence = _answers(logits, excluded)
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


def _run_report(
    ref_frame: Any,
    cur_frame: Any,
    directory: Path,
    title: str,
    reference_name: str,
    current_name: str,
) -> tuple[Path, Path, dict[str, Any]]:
    """Run Evidently on both frames; write its HTML and JSON under ``directory``.

    Returns:
        The HTML path, the JSON path and the snapshot as a dict.
    """
    from evidently import DataDefinition, Dataset, MulticlassClassification, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset

    definition = DataDefinition(
        classification=[MulticlassClassification(target="target", prediction_labels="prediction")],
        categorical_columns=["target", "prediction"],
        numerical_columns=["confidence"],
    )
    reference = Dataset.from_pandas(ref_frame, definition)
    current = Dataset.from_pandas(cur_frame, definition)
    report = Report(
        [ClassificationPreset(), DataDriftPreset(columns=list(_DRIFT_COLUMNS))],
        include_tests=True,
        metadata={"title": title, "reference": reference_name, "current": current_name},
    )
    with warnings.catch_warnings():
        # sklearn warns about labels absent from a sample; the forgotten class is absent by design
        warnings.simplefilter("ignore")
        snapshot = report.run(current, reference, name=title)
    directory.mkdir(parents=True, exist_ok=True)
    html_file, js = directory / "evidently_report.html", directory / "evidently_report.json"
    snapshot.save_html(str(html_file))
    snapshot.save_json(str(js))
    return html_file, js, snapshot.dict()


def _write_summaries(directory: Path, summary: _Summary) -> tuple[Path, Path, Path]:
    """The summary beside the report: HTML page, Markdown and PNG (in that order)."""
    summary_html = directory / "evidently_summary.html"
    summary_html.write_text(summary.html_page())
    summary_md = directory / "evidently_summary.md"
    summary_md.write_text(summary.markdown())
    return summary_html, summary_md, summary.png(directory / "evidently_summary.png")


def build_evidently_report_from_logits(
    ref_logits: Tensor,
    cur_logits: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    request_id: str | None = None,
    forget_classes: Sequence[int] | None = None,
    reference_name: str = "parent model",
    current_name: str = "unlearned model",
    title: str | None = None,
) -> EvidentlyReport:
    """The report from both models' logits ``(N, C)`` on the same samples (images or pixels).

    Args:
        ref_logits: The parent's logits (Evidently's *Reference*).
        cur_logits: The unlearned model's logits (Evidently's *Current*).
        labels: True classes of the samples (retained classes only, by contract).
        class_names: Name of every class of the model.
        out_dir: Where the report's files go.
        request_id: Named in the title.
        forget_classes: The forgotten classes. When given, both models' answers are read over
            the retained classes only, so every metric excludes them (see :func:`_answers`).
        reference_name: How the Reference column is labelled, e.g. ``"parent model (v1)"``.
        current_name: How the Current column is labelled, e.g. ``"unlearned model (v2)"``.
        title: The report's title (default: built from ``request_id`` and the two names).
    """
    excluded = sorted({int(c) for c in forget_classes or ()})
    title = title or (
        (f"Request {request_id}: " if request_id else "")
        + f"retained-class behaviour, {reference_name} vs {current_name}"
    )
    names = _label_names(labels, class_names)
    ref_frame = _frame(ref_logits, labels, names, excluded)
    cur_frame = _frame(cur_logits, labels, names, excluded)
    directory = Path(out_dir)
    html_file, js, snapshot_dict = _run_report(
        ref_frame, cur_frame, directory, title, reference_name, current_name
    )
    head = _headline(snapshot_dict)
    drift = _drift_rows(snapshot_dict)
    excluded_set = set(excluded)
    retained = [c for c in sorted(set(labels.tolist())) if c not in excluded_set]
    metrics = {
        "reference": _retained_metrics(ref_frame, labels, retained, names, class_names, excluded),
        "current": _retained_metrics(cur_frame, labels, retained, names, class_names, excluded),
    }
    forgotten = [class_names[c] for c in excluded]
    summary = _Summary(title, reference_name, current_name, forgotten, len(labels), metrics, drift)
    _inject_header(html_file, title, summary.html_body())
    summary_html, summary_md, summary_png = _write_summaries(directory, summary)
    return EvidentlyReport(
        html_path=str(html_file),
        json_path=str(js),
        # Both from the same frames as the report's body, so the numbers agree with it.
        reference_accuracy=metrics["reference"]["accuracy"],
        current_accuracy=metrics["current"]["accuracy"],
        drifted_columns=head["drifted"],
        drift_share=head["share"],
        n_samples=len(labels),
        title=title,
        summary_html_path=str(summary_html),
        summary_png_path=str(summary_png),
        summary_md_path=str(summary_md),
        retained_metrics=metrics,
    )


def _retained_metrics(
    frame: Any,
    labels: Tensor,
    retained: Sequence[int],
    names: Sequence[Any],
    class_names: Sequence[str],
    excluded: Sequence[int],
) -> dict[str, Any]:
    """Accuracy, macro precision / recall / F1 over the retained label set, and per-class
    accuracy, computed from the same frame Evidently scores."""
    from sklearn.metrics import precision_recall_fscore_support

    target, predicted = frame["target"].tolist(), frame["prediction"].tolist()
    if excluded:
        label_set = [names[c] for c in retained]
    else:  # no forgotten classes named: Evidently's own label set (target and predictions)
        label_set = sorted(set(target) | set(predicted), key=str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, _ = precision_recall_fscore_support(
            target, predicted, labels=label_set, average="macro", zero_division=0
        )
    hits = [t == p for t, p in zip(target, predicted, strict=True)]
    per_class: dict[str, float] = {}
    for c in retained:
        rows = [h for h, y in zip(hits, labels.tolist(), strict=True) if y == c]
        per_class[str(class_names[c])] = sum(rows) / len(rows)
    return {
        "accuracy": sum(hits) / max(len(hits), 1),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "per_class": per_class,
    }


def _drift_rows(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{column, method, p_value, threshold, drifted}]`` from the ``ValueDrift`` metrics."""
    rows = []
    for metric in snapshot.get("metrics", []):
        config = metric.get("config") or {}
        value = metric.get("value")
        if not str(metric.get("metric_name", "")).startswith("ValueDrift("):
            continue
        if not isinstance(value, int | float):
            continue
        threshold = config.get("threshold")
        method = str(config.get("method") or "")
        # p-value tests drift when the value is *below* the threshold, distances when above
        below = "p_value" in method
        drifted = None
        if isinstance(threshold, int | float):
            drifted = value < threshold if below else value >= threshold
        rows.append(
            {
                "column": config.get("column"),
                "method": method,
                "value": float(value),
                "threshold": threshold,
                "drifted": drifted,
            }
        )
    return rows


@dataclass
class _Summary:
    """The report's headline, rendered without scripts (HTML, Markdown, PNG)."""

    title: str
    reference_name: str
    current_name: str
    forgotten: list[str]
    n_samples: int
    metrics: dict[str, Any]
    drift: list[dict[str, Any]]

    def legend(self) -> str:
        excluded = (
            f" The forgotten classes ({', '.join(self.forgotten)}) are left out of every metric: "
            "each model's answer is its most likely retained class."
            if self.forgotten
            else ""
        )
        return (
            f"Reference = the {self.reference_name}; Current = the {self.current_name}. Both are "
            f"scored on the same {self.n_samples} retained-class test samples.{excluded}"
        )

    def metric_rows(self) -> list[tuple[str, float, float]]:
        ref, cur = self.metrics["reference"], self.metrics["current"]
        rows = [
            ("accuracy", ref["accuracy"], cur["accuracy"]),
            ("precision (macro, retained classes)", ref["precision"], cur["precision"]),
            ("recall (macro, retained classes)", ref["recall"], cur["recall"]),
            ("F1 (macro, retained classes)", ref["f1"], cur["f1"]),
        ]
        rows += [
            (f"accuracy of class {name}", value, cur["per_class"].get(name, float("nan")))
            for name, value in ref["per_class"].items()
        ]
        return rows

    def drift_rows(self) -> list[tuple[str, str, str, str]]:
        return [
            (
                str(d["column"]),
                d["method"],
                f"{d['value']:.4g} (threshold {d['threshold']})",
                "yes" if d["drifted"] else "no" if d["drifted"] is not None else "?",
            )
            for d in self.drift
        ]

    def html_body(self) -> str:
        e = html.escape
        head = (
            f"<tr><th>metric</th><th>Reference: {e(self.reference_name)}</th>"
            f"<th>Current: {e(self.current_name)}</th><th>change</th></tr>"
        )
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{ref:.4f}</td><td>{cur:.4f}</td>"
            f"<td>{cur - ref:+.4f}</td></tr>"
            for name, ref, cur in self.metric_rows()
        )
        drift = "".join(
            "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in self.drift_rows()
        )
        return (
            f"<p>{e(self.legend())}</p>"
            f'<table class="evsum">{head}{rows}</table>'
            "<h3>Drift of the model's outputs</h3>"
            '<table class="evsum"><tr><th>output column</th><th>test</th><th>statistic</th>'
            f"<th>drift detected</th></tr>{drift}</table>"
            f'<p class="evnote">{e(DRIFT_EXPLANATION)}</p>'
        )

    def html_page(self) -> str:
        return (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{_SUMMARY_CSS}</style></head>"
            f'<body><h1 id="evidently-summary">{html.escape(self.title)}</h1>'
            f"{self.html_body()}</body></html>\n"
        )

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", self.legend(), ""]
        lines += [
            f"| metric | Reference: {self.reference_name} "
            f"| Current: {self.current_name} | change |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {name} | {ref:.4f} | {cur:.4f} | {cur - ref:+.4f} |"
            for name, ref, cur in self.metric_rows()
        ]
        lines += ["", "| output column | test | statistic | drift detected |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.drift_rows()]
        return "\n".join([*lines, "", DRIFT_EXPLANATION, ""])

    def png(self, path: Path) -> Path:
        """Per-class accuracy bars, Reference vs Current, with the headline in the title."""
        import matplotlib

        matplotlib.use("Agg")  # files only; never open a window
        import matplotlib.pyplot as plt

        ref, cur = self.metrics["reference"], self.metrics["current"]
        names = list(ref["per_class"])
        fig, ax = plt.subplots(figsize=(8, 3.8))
        x = list(range(len(names)))
        for shift, scores, label, color in (
            (-0.2, ref["per_class"], f"Reference: {self.reference_name}", "#7a9cc6"),
            (0.2, cur["per_class"], f"Current: {self.current_name}", "#d9844a"),
        ):
            heights = [scores.get(n, 0.0) for n in names]
            ax.bar([i + shift for i in x], heights, width=0.4, label=label, color=color)
        ax.set_xticks(x, names)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy (retained classes)")
        drifted = sum(1 for d in self.drift if d["drifted"])
        ax.set_title(
            f"{self.title}\naccuracy {ref['accuracy']:.3f} -> {cur['accuracy']:.3f}; "
            f"output drift in {drifted} of {len(self.drift)} columns (small shift expected)",
            fontsize=9,
        )
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


_SUMMARY_CSS = (
    "body{font-family:system-ui,sans-serif;margin:1rem;color:#222}"
    ".evsum{border-collapse:collapse;margin:.5rem 0}.evsum td,.evsum th{border:1px solid #ccc;"
    "padding:.2rem .6rem;text-align:left}.evsum th{background:#f3f3f3}"
    ".evnote{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem}"
)


def _inject_header(path: Path, title: str, body: str) -> None:
    """Put the title and the static summary at the top of Evidently's page.

    They render without JavaScript, so the page says what it compares even where the
    interactive part cannot run (MLflow's sandboxed artifact view).
    """
    page = path.read_text(encoding="utf-8")
    header = (
        f'<style>{_SUMMARY_CSS}</style><div id="unlearn-summary" style="padding:0 1rem">'
        f"<h1>{html.escape(title)}</h1>{body}</div>"
    )
    page = page.replace("<head>", f"<head><title>{html.escape(title)}</title>", 1)
    page = page.replace("<body>", "<body>" + header, 1)
    path.write_text(page, encoding="utf-8")
