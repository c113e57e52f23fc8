"""Figures logged with every unlearning run: per-class accuracy and MIA score histograms."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["per_class_accuracy_plot", "mia_histogram_plot"]


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt

    return plt


def per_class_accuracy_plot(
    before: Sequence[float],
    after: Sequence[float],
    class_names: Sequence[str],
    forget_classes: Sequence[int],
    path: str | os.PathLike[str],
    *,
    ylabel: str = "test accuracy (%)",
    title: str | None = None,
) -> Path:
    """Grouped bars of a per-class score (default: test accuracy), before and after.

    The forgotten classes are shaded.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = torch.arange(len(class_names)).float()
    ax.bar((x - 0.2).tolist(), list(before), width=0.4, label="before (parent)", color="#7a9cc6")
    ax.bar((x + 0.2).tolist(), list(after), width=0.4, label="after (unlearned)", color="#d9844a")
    for c in forget_classes:
        ax.axvspan(c - 0.5, c + 0.5, color="#d62728", alpha=0.08)
    ax.set_xticks(x.tolist(), [str(n) for n in class_names])
    ax.set_ylim(0, 105)
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"Per-class test accuracy; forgotten: {list(forget_classes)} (shaded)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def mia_histogram_plot(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], path: str | os.PathLike[str]
) -> Path:
    """Loss histograms of forget-class train (members) vs test (unseen) samples, before/after.

    After a good unlearning the two histograms overlap: an attacker cannot tell them apart.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=False)
    for ax, (title, scores) in zip(
        axes, (("before (parent)", before), ("after (unlearned)", after)), strict=True
    ):
        for name, color in (("train_forget", "#1f77b4"), ("test_forget", "#ff7f0e")):
            ax.hist(
                scores[name].numpy(), bins=30, alpha=0.55, density=True, color=color, label=name
            )
        ax.set_title(f"MIA score: log(1 + loss), {title}", fontsize=9)
        ax.set_xlabel("log(1 + cross-entropy)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
