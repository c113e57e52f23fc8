"""Semantic segmentation metrics: confusion matrix, per-class IoU, mean IoU over some classes.

The pixel counting is torchmetrics' (``multiclass_confusion_matrix``: the same integer counts,
ignored pixels dropped). The IoU reduction stays here: torchmetrics' ``multiclass_jaccard_index``
gives the same IoU, NaN for absent classes included (``zero_division=nan``), but divides in
float32, so its values differ from these float64 ones by up to ~1e-7 relative (pinned in
``tests/unit/test_applications_segmentation.py``), and the pipeline's gates and audit records
read these values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_confusion_matrix

__all__ = ["confusion_matrix", "iou_per_class", "mean_iou"]


def confusion_matrix(
    predictions: Tensor, targets: Tensor, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """``(K, K)`` pixel counts, rows = true class, columns = predicted class.

    Args:
        predictions: Predicted classes ``(N, H, W)`` (or logits ``(N, K, H, W)``).
        targets: True classes, same shape as the predicted classes.
        num_classes: ``K``.
        ignore_index: Target value of pixels that are not counted.

    Example:
        >>> confusion_matrix(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 255]]), 2).tolist()
        [[1, 0], [0, 1]]
    """
    preds = predictions.argmax(1) if predictions.dim() == targets.dim() + 1 else predictions
    if preds.shape != targets.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and targets {tuple(targets.shape)} differ"
        )
    t = targets[targets != ignore_index]
    if t.numel() and (int(t.max()) >= num_classes or int(t.min()) < 0):
        raise ValueError(f"target class out of range 0..{num_classes - 1} (not {ignore_index})")
    # Validated above with this library's one-line message; torchmetrics' own checks would
    # only repeat them in other words.
    return multiclass_confusion_matrix(
        preds.long(), targets.long(), num_classes, ignore_index=ignore_index, validate_args=False
    )


def iou_per_class(confusion: Tensor) -> Tensor:
    """Intersection over union of each class, ``nan`` for a class absent from targets and preds.

    Example:
        >>> iou_per_class(torch.tensor([[3, 1, 0], [1, 1, 0], [0, 0, 0]])).tolist()
        [0.6, 0.3333333333333333, nan]
    """
    conf = confusion.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(iou: Tensor, classes: Sequence[int] | None = None) -> float:
    """Mean of the per-class IoU over ``classes`` (all by default), ignoring ``nan`` entries.

    Example:
        >>> mean_iou(torch.tensor([0.6, 0.2, float("nan")], dtype=torch.float64), [1, 2])
        0.2
    """
    values = iou if classes is None else iou[torch.as_tensor(list(classes), dtype=torch.long)]
    values = values[~torch.isnan(values)]
    return float(values.double().mean()) if values.numel() else float("nan")
