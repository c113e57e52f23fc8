"""Sharpening a soft model's logits before the automatic selection distils them.

DELETE matches the student to the original's masked softmax. On a model whose outputs are
soft (temperature-scaled for calibration, or trained to low confidence), forgetting has to
move the forgotten logit several times further in the model's own units, and the selection's
signals, computed on those soft distributions, shrink with them. Measured on MNIST-5k with
models divided by a temperature of 4 (``docs/bench/sharpen_cpu.md``): a ConvNeXt lost up to
4.56 points retained forget-only and 3.56 with the selection sample, a BatchNorm MLP 3.33 and
3.56. Multiplying every logit of the original and the student by one factor, chosen so that
the original's mean top-1 probability on the forget images reads ``target``, trains such a
model as its sharper twin: argmax, and so every accuracy, is unchanged.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["mean_top_probability", "sharpening_scale"]


def mean_top_probability(logits: Tensor, scale: float = 1.0) -> float:
    """Mean over images of the largest class probability of ``softmax(scale * logits)``.

    Example:
        >>> import torch, math
        >>> z = torch.tensor([[math.log(4.0), 0.0]])  # probabilities 0.8 and 0.2
        >>> round(mean_top_probability(z), 4), round(mean_top_probability(z, 0.0), 4)
        (0.8, 0.5)
    """
    flat = logits.detach().float().movedim(1, -1).reshape(-1, logits.shape[1])
    return float((flat * scale).softmax(1).max(1).values.mean())


def sharpening_scale(logits: Tensor, target: float, *, most: float = 100.0) -> float:
    """The factor ``s >= 1`` at which ``softmax(s * logits)`` has mean top-1 probability
    ``target`` (:func:`mean_top_probability`); 1 when it already reads ``target`` or more, and
    at most ``most`` (logits that are all equal cannot be sharpened).

    Example:
        >>> import torch, math
        >>> z = torch.tensor([[1.0, 0.0]])  # top-1 sigmoid(s): 0.8 at s = log(4)
        >>> round(sharpening_scale(z, 0.8), 4), round(math.log(4.0), 4)
        (1.3863, 1.3863)
        >>> sharpening_scale(torch.tensor([[5.0, 0.0]]), 0.8)  # confident already
        1.0
    """
    if mean_top_probability(logits) >= target:
        return 1.0
    low, high = 1.0, most
    if mean_top_probability(logits, high) < target:
        return high
    for _ in range(60):  # the mean top-1 probability grows with the scale: bisect
        middle = (low + high) / 2
        low, high = (
            (middle, high) if mean_top_probability(logits, middle) < target else (low, middle)
        )
    return high
