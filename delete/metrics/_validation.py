"""Input checks shared by the metrics, and the error they raise."""

from __future__ import annotations

from torch import Tensor

from delete.errors import UnlearningError

__all__ = ["MetricInputError"]


class MetricInputError(UnlearningError):
    """A metric received empty, mis-shaped or out-of-range input."""


def _check_nonempty(tensor: Tensor, what: str) -> None:
    if tensor.numel() == 0 or len(tensor) == 0:
        raise MetricInputError(f"{what} is empty; the metric is undefined on no samples")


def _check_logits(logits: Tensor, what: str) -> None:
    if logits.dim() != 2:
        raise MetricInputError(f"{what} must be shaped (N, C), got {tuple(logits.shape)}")
    _check_nonempty(logits, what)


def _check_labels(logits: Tensor, labels: Tensor, what: str) -> None:
    """``labels`` is an integer vector, one class index per row of ``logits``."""
    if labels.dim() != 1 or len(labels) != len(logits):
        raise MetricInputError(
            f"{what} labels must be shaped ({len(logits)},) to match the logits, "
            f"got {tuple(labels.shape)}"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise MetricInputError(f"{what} labels must be integer class indices, got {labels.dtype}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise MetricInputError(
            f"{what} labels must lie in [0, {logits.shape[1] - 1}], "
            f"got [{int(labels.min())}, {int(labels.max())}]"
        )
