"""Jensen-Shannon divergence between two models' output distributions."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from delete.metrics._validation import MetricInputError, _check_logits
from delete.metrics.mia_features import probabilities

__all__ = ["js_divergence"]


def js_divergence(logits_p: Tensor, logits_q: Tensor) -> float:
    """Mean per-sample Jensen-Shannon divergence of ``softmax(logits_p)`` and ``softmax(logits_q)``.

    ``JS(P, Q) = KL(P || M) / 2 + KL(Q || M) / 2`` with ``M = (P + Q) / 2``, in nats, so each
    term lies in ``[0, ln 2]``. It is symmetric and finite even where one distribution puts
    zero mass. Used between an unlearned model and the model retrained without the forget
    classes, on the forget set: 0 means identical behaviour.

    Args:
        logits_p: ``(N, C)`` logits of one model.
        logits_q: ``(N, C)`` logits of the other, on the same samples.

    Returns:
        The mean over the ``N`` samples.

    Example:
        >>> x = torch.tensor([[1.0, 2.0, 3.0]])
        >>> js_divergence(x, x)
        0.0
        >>> round(js_divergence(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]])), 4)
        0.6931
    """
    _check_logits(logits_p, "logits_p")
    _check_logits(logits_q, "logits_q")
    if logits_p.shape != logits_q.shape:
        raise MetricInputError(
            f"logits_p {tuple(logits_p.shape)} and logits_q {tuple(logits_q.shape)} differ in shape"
        )
    p = probabilities(logits_p)
    q = probabilities(logits_q.to(logits_p.device))
    m = 0.5 * (p + q)
    # xlogy(p, p/m): exact zeros of p contribute 0, never NaN; m > 0 wherever p > 0.
    kl_pm = torch.special.xlogy(p, p).sum(1) - torch.special.xlogy(p, m).sum(1)
    kl_qm = torch.special.xlogy(q, q).sum(1) - torch.special.xlogy(q, m).sum(1)
    js = (0.5 * (kl_pm + kl_qm)).clamp(0.0, math.log(2.0))
    return float(js.mean())
