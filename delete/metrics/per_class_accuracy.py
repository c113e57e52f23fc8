"""Per-class top-1 accuracy in percent: the pure function and its stateful wrapper."""

from __future__ import annotations

import torch
from torch import Tensor

from delete.metrics._validation import MetricInputError, _check_labels, _check_logits

__all__ = ["per_class_accuracy", "PerClassAccuracy"]


def _counts(logits: Tensor, targets: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    if num_classes < 1:
        raise MetricInputError(f"num_classes must be positive, got {num_classes}")
    if logits.dim() == 2 and logits.shape[1] != num_classes:
        raise MetricInputError(
            f"logits have {logits.shape[1]} classes but num_classes is {num_classes}"
        )
    _check_logits(logits, "logits")
    _check_labels(logits, targets, "per-class accuracy")
    targets = targets.to(logits.device).long()
    hits = (logits.argmax(dim=1) == targets).long()
    total = torch.bincount(targets, minlength=num_classes)
    correct = torch.bincount(targets, weights=hits.double(), minlength=num_classes)
    return correct.double().cpu(), total.double().cpu()


def _percent(correct: Tensor, total: Tensor) -> Tensor:
    out = torch.full_like(total, float("nan"))
    seen = total > 0
    out[seen] = 100.0 * correct[seen] / total[seen]
    return out.float()


def per_class_accuracy(logits: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Accuracy of each class's samples, in percent.

    Args:
        logits: ``(N, C)`` logits with ``C == num_classes``.
        targets: True class indices ``(N,)``.
        num_classes: Number of classes ``C``.

    Returns:
        A float tensor ``(num_classes,)``; classes with no sample are ``nan``.

    Example:
        >>> logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [3.0, 0.0, 0.0]])
        >>> per_class_accuracy(logits, torch.tensor([0, 1, 1]), num_classes=3)
        tensor([100.,  50.,  nan])
    """
    correct, total = _counts(logits, targets, num_classes)
    return _percent(correct, total)


class PerClassAccuracy:
    """Accumulates :func:`per_class_accuracy` over batches.

    Example:
        >>> metric = PerClassAccuracy(num_classes=2)
        >>> metric.update(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1]))
        >>> metric.compute()
        tensor([100.,   0.])
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.correct = torch.zeros(num_classes, dtype=torch.float64)
        self.total = torch.zeros(num_classes, dtype=torch.float64)

    def update(self, logits: Tensor, targets: Tensor) -> None:
        """Add one batch; an empty batch is ignored."""
        if targets.numel() == 0:
            return
        correct, total = _counts(logits.detach(), targets, self.num_classes)
        self.correct += correct
        self.total += total

    def compute(self) -> Tensor:
        """Per-class accuracy in percent since the last reset (``nan`` for unseen classes)."""
        return _percent(self.correct, self.total)

    def reset(self) -> None:
        """Forget every batch seen so far."""
        self.correct.zero_()
        self.total.zero_()
