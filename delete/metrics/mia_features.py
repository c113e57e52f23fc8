"""Per-sample features of a model's output that membership-inference attacks read.

Members (training samples) tend to get a higher true-class probability, a lower entropy and
a lower *modified entropy* than unseen samples; these functions compute those signals from
probability vectors so the attacks in :mod:`delete.metrics.svc_mia` and
:mod:`delete.metrics.forget_vs_unseen_auc` share one definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from delete.metrics._validation import _check_labels, _check_logits

__all__ = [
    "probabilities",
    "true_class_confidence",
    "prediction_entropy",
    "modified_entropy",
    "cross_entropy_loss",
]

# log(1e-30): the floor the published code uses for log(0); any large negative value works.
_EPS = 1e-30


def probabilities(logits: Tensor) -> Tensor:
    """Softmax of ``(N, C)`` logits, computed in float64.

    Example:
        >>> probabilities(torch.tensor([[0.0, 0.0]]))
        tensor([[0.5000, 0.5000]], dtype=torch.float64)
    """
    _check_logits(logits, "logits")
    return F.softmax(logits.detach().double(), dim=1)


def true_class_confidence(probs: Tensor, labels: Tensor) -> Tensor:
    """Probability assigned to each sample's true label, ``p_y``.

    Example:
        >>> true_class_confidence(torch.tensor([[0.2, 0.8], [0.6, 0.4]]), torch.tensor([1, 1]))
        tensor([0.8000, 0.4000])
    """
    _check_logits(probs, "probabilities")
    _check_labels(probs, labels, "confidence")
    return probs.gather(1, labels.long().to(probs.device)[:, None]).squeeze(1)


def prediction_entropy(probs: Tensor) -> Tensor:
    """Shannon entropy ``-sum_i p_i log p_i`` (nats) of each probability vector; ``0 log 0 = 0``.

    Example:
        >>> prediction_entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
        tensor([0.6931, 0.0000])
    """
    _check_logits(probs, "probabilities")
    return 0.0 - torch.special.xlogy(probs, probs).sum(dim=1)


def modified_entropy(probs: Tensor, labels: Tensor) -> Tensor:
    """Modified prediction entropy of Song & Mittal (USENIX Security 2021), Eq. (5).

    ``Mentr(p, y) = -(1 - p_y) log(p_y) - sum_{i != y} p_i log(1 - p_i)``

    It is small when the model is confidently right and large when it is confidently
    wrong, unlike plain entropy which cannot tell the two apart. Logs are floored at
    ``log(1e-30)`` so ``p = 0`` or ``p = 1`` stay finite.

    This fixes two bugs of the ``m_entropy`` in the SalUn and DELETE code: (1) it used
    ``log(p_i)`` instead of ``log(1 - p_i)`` for the non-true classes, and (2) it indexed
    ``probs[:, labels]``, which swaps the columns of *every* label present in the batch for
    every row instead of only each row's own label. Here the true class is selected per row.

    Example:
        >>> round(float(modified_entropy(torch.tensor([[0.5, 0.5]]), torch.tensor([0]))[0]), 4)
        0.6931
        >>> modified_entropy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        tensor([  0.0000, 138.1551])
    """
    _check_logits(probs, "probabilities")
    _check_labels(probs, labels, "modified entropy")
    p = probs.double()
    is_true = F.one_hot(labels.long().to(p.device), p.shape[1]).bool()
    log_p = torch.log(p.clamp_min(_EPS))
    log_not_p = torch.log((1.0 - p).clamp_min(_EPS))
    terms = torch.where(is_true, (1.0 - p) * log_p, p * log_not_p)
    return (0.0 - terms.sum(dim=1)).to(probs.dtype)  # 0.0 - x: no -0.0


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample cross-entropy ``-log p_y`` in float64 (finite even when ``p_y`` underflows).

    Example:
        >>> cross_entropy_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
        tensor([0.6931], dtype=torch.float64)
    """
    _check_logits(logits, "logits")
    _check_labels(logits, labels, "loss")
    return F.cross_entropy(logits.detach().double(), labels.long(), reduction="none")
