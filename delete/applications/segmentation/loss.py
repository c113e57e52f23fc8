"""The segmentation training loss: per-pixel cross-entropy, background down-weighted."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.applications.segmentation.data import IGNORE_INDEX
from delete.applications.task_spec import LossFn

__all__ = ["PixelCrossEntropy", "segmentation_loss"]


@dataclass(frozen=True)
class PixelCrossEntropy:
    """Per-pixel cross-entropy that skips :data:`IGNORE_INDEX` and can down-weight background.

    Attributes:
        background_weight: Weight of class 0 (the other classes weigh 1). Background covers
            most pixels of most scenes; down-weighting it makes objects learnt sooner.
        ignore_index: Target value of pixels that do not count.

    Example:
        >>> loss = PixelCrossEntropy(background_weight=1.0)
        >>> round(float(loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 255]]]))), 4)  # log 2
        0.6931
    """

    background_weight: float = 1.0
    ignore_index: int = IGNORE_INDEX

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        weight = torch.ones(logits.shape[1], device=logits.device)
        weight[0] = self.background_weight
        return F.cross_entropy(
            logits.float(), targets, weight=weight, ignore_index=self.ignore_index
        )


def segmentation_loss(model: nn.Module, background_weight: float = 0.1) -> LossFn:
    """The training loss of segmentation models: :class:`PixelCrossEntropy`, background at 0.1.

    Example:
        >>> segmentation_loss(nn.Identity()).background_weight
        0.1
    """
    return PixelCrossEntropy(background_weight=background_weight)
