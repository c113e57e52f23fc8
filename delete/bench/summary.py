"""Aggregation of benchmark runs: mean and standard deviation per method, CSV and Markdown."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from delete.bench.config import BenchConfig

__all__ = ["SUMMARY_METRICS", "summarize", "to_markdown", "write_csv", "mean_std"]

#: Metrics summarised per method: (column, Markdown header, decimals).
SUMMARY_METRICS: tuple[tuple[str, str, int], ...] = (
    ("acc_test_forget", "Test forget ↓", 1),
    ("acc_test_retain", "Test retain ↑", 1),
    ("h_mean", "H-Mean ↑", 1),
    ("acc_train_forget", "Train forget ↓", 1),
    ("acc_train_retain", "Train retain ↑", 1),
    ("mia_svc_member_rate", "MIA-SVC % (≈Retrain)", 1),
    ("mia_auc", "MIA AUC (0.5)", 3),
    ("mia_auc_std", "MIA AUC fold std", 3),
    ("js_to_reference", "JS to Retrain ↓", 4),
    ("seconds", "Time s ↓", 1),
    ("time_ratio", "Time / Retrain ↓", 3),
)

_RETAIN_MARK = "†"


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (``nan`` for one value) and count of the finite values.

    Example:
        >>> mean_std([1.0, 3.0, float("nan")])
        (2.0, 1.4142135623730951, 2)
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return float("nan"), float("nan"), 0
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, float("nan"), 1
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)
    return mean, math.sqrt(var), len(finite)


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One dict per method (first-seen order): runs, failures and ``<metric>_mean/_std``.

    Example:
        >>> rows = [{"method": "a", "needs_retain": False, "status": "ok", "h_mean": v}
        ...         for v in (90.0, 92.0)]
        >>> summary = summarize(rows)[0]
        >>> summary["method"], summary["runs"], summary["h_mean_mean"]
        ('a', 2, 91.0)
    """
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    out: list[dict[str, Any]] = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        entry: dict[str, Any] = {
            "method": method,
            "needs_retain": bool(mine[0].get("needs_retain", False)),
            "runs": len(mine),
            "failed": sum(1 for r in mine if r.get("status") != "ok"),
        }
        for key, _, _ in SUMMARY_METRICS:
            mean, std, _ = mean_std(r.get(key, float("nan")) for r in mine)
            entry[f"{key}_mean"] = mean
            entry[f"{key}_std"] = std
        out.append(entry)
    return out


def _cell(mean: float, std: float, decimals: int) -> str:
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def to_markdown(summary: Sequence[dict[str, Any]], config: BenchConfig | None = None) -> str:
    """The summary as a Markdown table, ``mean ± std`` over seeds and scenarios.

    Example:
        >>> rows = [{"method": "delete", "needs_retain": False, "status": "ok", "h_mean": 97.0}]
        >>> print(to_markdown(summarize(rows)).splitlines()[0][:40])
        | Method | Runs | Test forget ↓ | Test r
    """
    header = ["Method", "Runs"] + [title for _, title, _ in SUMMARY_METRICS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * len(SUMMARY_METRICS)) + "|",
    ]
    for entry in summary:
        name = str(entry["method"])
        label = f"{name} {_RETAIN_MARK}" if entry["needs_retain"] else name
        if name == "delete":
            label = f"**{label}**"
        runs = f"{entry['runs'] - entry['failed']}/{entry['runs']}"
        cells = [
            _cell(entry[f"{key}_mean"], entry[f"{key}_std"], decimals)
            for key, _, decimals in SUMMARY_METRICS
        ]
        lines.append("| " + " | ".join([label, runs, *cells]) + " |")
    notes = [
        "",
        f"{_RETAIN_MARK} needs the retained training data. `original` is the model before "
        "unlearning (its time is the training time); `retrain` is trained from scratch "
        "without the forget classes, the reference for MIA-SVC, JS and the time ratio. "
        "Accuracies and MIA-SVC in %, mean ± sample std over seeds x scenarios. "
        "MIA-SVC (the papers' attack) flips between ~0 and ~100 when forget samples fall "
        "outside the shadow data, so single runs are unreliable; MIA AUC (forget-train vs "
        "unseen test samples of the same classes, 0.5 = indistinguishable) is the stable one.",
    ]
    no_retain = [
        e
        for e in summary
        if not e["needs_retain"] and e["method"] != "original" and math.isfinite(e["h_mean_mean"])
    ]
    if no_retain:
        best = max(no_retain, key=lambda e: e["h_mean_mean"])
        notes.append(
            f"Best H-Mean without retained data: {best['method']} ({best['h_mean_mean']:.1f})."
        )
    if config is not None:
        notes.insert(0, "")
        notes.insert(1, f"_{config.describe()}._")
    return "\n".join(lines + notes)


def _format(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def write_csv(
    rows: Sequence[dict[str, Any]], path: Path, columns: Sequence[str] | None = None
) -> Path:
    """Write ``rows`` as CSV (header from ``columns`` or the first row's keys); NaN as ``nan``."""
    fields = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _format(row.get(k, float("nan"))) for k in fields})
    return path
