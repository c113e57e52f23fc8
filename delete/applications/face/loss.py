"""Additive-margin softmax losses for the cosine identity head (CosFace, ArcFace).

The margin is applied to the true label's logit only, and only in the loss: the model's
logits stay plain scaled cosines, so inference and unlearning never see a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.applications.face.model import CosineHead
from delete.applications.task_spec import LossFn
from delete.errors import UnknownModelError

__all__ = ["CosineMarginLoss", "face_margin_loss"]


@dataclass(frozen=True)
class CosineMarginLoss:
    """Cross-entropy on ``s * cos(theta)`` logits with a margin on the true class.

    * ``cosface``: the true logit becomes ``s * (cos(theta) - m)``.
    * ``arcface``: the true logit becomes ``s * cos(theta + m)`` (with the usual linear
      fallback ``cos(theta) - m * sin(m)`` where ``theta + m`` would pass ``pi``).

    Attributes:
        scale: ``s``, the scale of the model's
            :class:`~delete.applications.face.model.CosineHead`.
        margin: ``m`` (cosine units for CosFace, radians for ArcFace).
        kind: ``"cosface"`` or ``"arcface"``.

    Example:
        >>> loss = CosineMarginLoss(scale=10.0, margin=0.2)
        >>> logits = torch.tensor([[10.0, 0.0]])  # cos = 1 to the true class, 0 to the other
        >>> round(float(loss(logits, torch.tensor([0]))), 4)  # CE of logits [8, 0]
        0.0003
    """

    scale: float = 10.0
    margin: float = 0.2
    kind: Literal["cosface", "arcface"] = "cosface"

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")
        if self.margin < 0:
            raise ValueError(f"margin must be non-negative, got {self.margin}")
        if self.kind not in ("cosface", "arcface"):
            raise ValueError(f"kind must be 'cosface' or 'arcface', got {self.kind!r}")

    def margin_logits(self, logits: Tensor, targets: Tensor) -> Tensor:
        """The logits with the margin applied to each sample's true class."""
        cos = (logits.float() / self.scale).clamp(-1.0, 1.0)
        true_cos = cos.gather(1, targets.long()[:, None])
        if self.kind == "cosface":
            true_new = true_cos - self.margin
        else:
            # acos has an infinite gradient at +-1: keep the argument strictly inside.
            theta = torch.acos(true_cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
            fallback = true_cos - self.margin * math.sin(self.margin)
            true_new = torch.where(
                theta + self.margin < math.pi, torch.cos(theta + self.margin), fallback
            )
        return self.scale * cos.scatter(1, targets.long()[:, None], true_new)

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(self.margin_logits(logits, targets), targets)


def face_margin_loss(model: nn.Module, margin: float = 0.2) -> LossFn:
    """CosFace loss whose scale matches the model's cosine head.

    Raises:
        UnknownModelError: The model has no :class:`CosineHead` named ``head``.

    Example:
        >>> from delete.applications.face.model import CosineFaceNet
        >>> face_margin_loss(CosineFaceNet(3, 1, scale=8.0)).scale
        8.0
    """
    head = getattr(model, "head", None)
    if not isinstance(head, CosineHead):
        raise UnknownModelError(
            f"face training needs a model with a CosineHead at .head, got {type(model).__name__}"
        )
    return CosineMarginLoss(scale=head.scale, margin=margin)
