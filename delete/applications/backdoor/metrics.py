"""Backdoor metrics: attack success rate on triggered inputs, accuracy on clean inputs."""

from __future__ import annotations

from torch import Tensor

__all__ = ["attack_success_rate"]


def attack_success_rate(predictions: Tensor, true_labels: Tensor, target: int) -> float:
    """Share (%) of triggered non-target inputs that are predicted as ``target``.

    Args:
        predictions: Predicted labels ``(N,)`` or logits ``(N, C)`` on triggered inputs.
        true_labels: The inputs' true labels ``(N,)``; samples of the target class are ignored.
        target: The backdoor's target label.

    Raises:
        ValueError: No sample has a true label other than ``target``.

    Example:
        >>> import torch
        >>> attack_success_rate(torch.tensor([7, 2, 1, 7]), torch.tensor([0, 1, 1, 7]), target=7)
        33.33333333333333
    """
    preds = predictions.argmax(1) if predictions.dim() == 2 else predictions
    keep = true_labels != target
    if not bool(keep.any()):
        raise ValueError(f"no triggered sample has a true label other than the target {target}")
    return 100.0 * float((preds[keep] == target).double().mean())
