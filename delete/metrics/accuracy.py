"""Top-1 accuracy in percent: the pure function and its stateful wrapper."""

from __future__ import annotations

import torch
from torch import Tensor

from delete.metrics._validation import MetricInputError, _check_nonempty

__all__ = ["accuracy", "Accuracy"]


def _correct_and_total(logits_or_preds: Tensor, targets: Tensor) -> tuple[int, int]:
    """Count correct predictions; logits have one more (class) dimension than the targets."""
    if logits_or_preds.dim() == targets.dim() + 1:
        preds = logits_or_preds.argmax(dim=1)
    elif logits_or_preds.shape == targets.shape:
        preds = logits_or_preds
    else:
        raise MetricInputError(
            f"predictions {tuple(logits_or_preds.shape)} do not fit targets "
            f"{tuple(targets.shape)}; pass logits (N, C) or class indices (N,)"
        )
    if preds.shape != targets.shape:
        raise MetricInputError(
            f"logits {tuple(logits_or_preds.shape)} do not fit targets {tuple(targets.shape)}"
        )
    correct = int((preds.long() == targets.to(preds.device).long()).sum())
    return correct, targets.numel()


def accuracy(logits_or_preds: Tensor, targets: Tensor) -> float:
    """Share of correct top-1 predictions, in percent.

    Args:
        logits_or_preds: Logits ``(N, C)`` (or ``(N, C, *spatial)``), or predicted class
            indices with the same shape as ``targets``.
        targets: True class indices ``(N,)`` (or ``(N, *spatial)``).

    Returns:
        Accuracy in ``[0, 100]``.

    Raises:
        MetricInputError: Empty input or shapes that do not fit.

    Example:
        >>> accuracy(torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))
        66.66666666666667
        >>> accuracy(torch.tensor([1, 1]), torch.tensor([1, 0]))
        50.0
    """
    _check_nonempty(targets, "targets")
    correct, total = _correct_and_total(logits_or_preds, targets)
    return 100.0 * correct / total


class Accuracy:
    """Accumulates :func:`accuracy` over batches (``update``), then ``compute`` / ``reset``.

    Example:
        >>> metric = Accuracy()
        >>> metric.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
        >>> metric.update(torch.tensor([0, 0, 1]), torch.tensor([1, 0, 1]))
        >>> metric.compute()
        75.0
        >>> metric.reset(); metric.total
        0
    """

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits_or_preds: Tensor, targets: Tensor) -> None:
        """Add one batch; an empty batch is ignored."""
        if targets.numel() == 0:
            return
        with torch.no_grad():
            correct, total = _correct_and_total(logits_or_preds.detach(), targets)
        self.correct += correct
        self.total += total

    def compute(self) -> float:
        """Accuracy in percent over every batch since the last reset."""
        if self.total == 0:
            raise MetricInputError("Accuracy.compute() called before any non-empty update()")
        return 100.0 * self.correct / self.total

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.correct = 0
        self.total = 0
