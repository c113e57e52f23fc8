"""Per-class test accuracy of the original, retrained and DELETE models, per scenario."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_per_class_accuracy"]

_SERIES: tuple[tuple[str, str], ...] = (
    ("original", "#7f7f7f"),
    ("retrain", "#1f77b4"),
    ("delete", "#d62728"),
)


def _mean_per_class(rows: Sequence[dict[str, Any]], method: str, scenario: str) -> list[float]:
    lists = [
        json.loads(r["per_class_test_accuracy"])
        for r in rows
        if r["method"] == method and r["scenario"] == scenario and r.get("status") == "ok"
    ]
    if not lists:
        return []
    return [
        sum(vals) / len(vals) if (vals := [v for v in col if math.isfinite(v)]) else float("nan")
        for col in zip(*lists, strict=True)
    ]


def plot_per_class_accuracy(
    rows: Sequence[dict[str, Any]], path: Path, class_names: Sequence[str] | None = None
) -> Path:
    """Grouped bars of per-class test accuracy, one panel per forget scenario (mean over seeds).

    Uses matplotlib's object API with the Agg canvas, so no display and no global backend
    change. The forgotten classes are shaded.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in rows))
    fig = Figure(figsize=(10, 2.8 * max(len(scenarios), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(scenarios), 1), 1, squeeze=False)[:, 0]
    width = 0.8 / len(_SERIES)
    for ax, scenario in zip(axes, scenarios, strict=False):
        forget = [int(c) for c in scenario.split("+")]
        num_classes = 0
        for i, (method, color) in enumerate(_SERIES):
            values = _mean_per_class(rows, method, scenario)
            num_classes = max(num_classes, len(values))
            xs = [c + (i - (len(_SERIES) - 1) / 2) * width for c in range(len(values))]
            ax.bar(xs, values, width=width, color=color, label=method)
        for c in forget:
            ax.axvspan(c - 0.45, c + 0.45, color="#ffdd57", alpha=0.35, zorder=0)
        names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
        ax.set_xticks(range(num_classes), names[:num_classes])
        ax.set_ylim(0, 119)
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"forget {scenario} (shaded)")
        ax.legend(loc="upper right", fontsize="small", ncols=len(_SERIES))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
