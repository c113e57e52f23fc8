"""Loss functions shared by the unlearning methods.

The DELETE loss is the paper's decoupled distillation objective: the frozen teacher's logits
for the forget classes are masked to ``-inf`` before the softmax, and the student is trained to
match that masked distribution. For ``T = 1`` the loss decomposes exactly into a *forgetting
term* ``-log(1 - p_forget)`` and a *retention term* ``KL(t_hat || p_hat)`` over the remaining
classes (see ``tests/unit/test_losses.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["mask_logits", "masked_teacher_distribution", "delete_loss", "distillation_kl"]


def _flatten_class_dim(logits: Tensor) -> Tensor:
    """(N, C) stays; (N, C, *spatial) becomes (N * prod(spatial), C) so pixels count as samples."""
    if logits.dim() == 2:
        return logits
    if logits.dim() < 2:
        raise ValueError(f"logits must be shaped (N, C) or (N, C, H, W), got {tuple(logits.shape)}")
    num_classes = logits.shape[1]
    return logits.movedim(1, -1).reshape(-1, num_classes)


def mask_logits(logits: Tensor, classes: Sequence[int] | Tensor) -> Tensor:
    """Return a copy of ``logits`` whose entries for ``classes`` (dim 1) are ``-inf``.

    Example:
        >>> mask_logits(torch.tensor([[1.0, 2.0, 3.0]]), [1])
        tensor([[1., -inf, 3.]])
    """
    index = torch.as_tensor(classes, dtype=torch.long, device=logits.device)
    masked = logits.clone()
    masked.index_fill_(1, index, float("-inf"))
    return masked


def masked_teacher_distribution(
    teacher_logits: Tensor, forget_classes: Sequence[int] | Tensor, temperature: float = 1.0
) -> Tensor:
    """Softmax of the teacher logits with the forget classes removed (their probability is 0).

    Example:
        >>> masked_teacher_distribution(torch.tensor([[0.0, 5.0, 0.0]]), [1])
        tensor([[0.5000, 0.0000, 0.5000]])
    """
    return F.softmax(mask_logits(teacher_logits.float(), forget_classes) / temperature, dim=1)


def distillation_kl(
    student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0
) -> Tensor:
    """``KL(target || softmax(student / T))`` with batch-mean reduction, times ``T**2``.

    Spatial logits ``(N, C, H, W)`` are averaged over every pixel.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> abs(float(distillation_kl(logits, torch.softmax(logits, dim=1)))) < 1e-6
        True
    """
    log_student = F.log_softmax(_flatten_class_dim(student_logits).float() / temperature, dim=1)
    target = _flatten_class_dim(target_probs).float()
    # kl_div uses xlogy, so the exact zeros of masked classes contribute 0, never NaN.
    loss = F.kl_div(log_student, target, reduction="batchmean")
    return loss * (temperature * temperature) if temperature != 1.0 else loss


def delete_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    forget_classes: Sequence[int] | Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """DELETE: KL(softmax(masked_teacher / T) || softmax(student / T)).

    Args:
        student_logits: ``(N, C)`` or ``(N, C, H, W)`` logits of the model being unlearned.
        teacher_logits: Logits of the frozen original model, same shape.
        forget_classes: Class indices whose teacher logits are set to ``-inf``.
        temperature: Softmax temperature ``T``; the loss is scaled by ``T**2`` when ``T != 1``.

    Returns:
        A scalar: batch-mean KL (pixel-mean for spatial logits).

    Example:
        >>> teacher = torch.tensor([[4.0, 1.0, 1.0]])
        >>> student = torch.tensor([[0.0, 0.0, 0.0]])
        >>> round(float(delete_loss(student, teacher, [0])), 4)  # log(3/2): p_forget = 1/3
        0.4055
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    target = masked_teacher_distribution(teacher_logits.detach(), forget_classes, temperature)
    return distillation_kl(student_logits, target, temperature)
