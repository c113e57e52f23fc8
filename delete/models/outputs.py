"""Logits from whatever a classifier's ``forward`` returns.

Outside models do not all return a logits tensor: torchvision's GoogLeNet and Inception v3
return a named tuple ``(logits, aux...)`` in train mode (a tensor in eval mode), and models
in the Hugging Face style return a mapping or an object with ``logits``. Unlearning trains the
student in train mode, so :func:`delete.api.run_unlearning` runs both models behind
:class:`LogitsOnly` and hands the caller's own module back; :func:`delete.metrics.predict`
reads eval-mode outputs through :func:`logits_of`.

Some classifiers end in ``nn.Softmax`` and return probabilities. DELETE masks and distils
logits: a softmax of probabilities is nearly uniform, and on a LeNet-5 ending in ``Softmax``
the defaults lost 4.8 points retained and never read the class as forgotten. Their log is a
logits tensor of the same softmax, so :func:`logits_of` returns that (:func:`as_logits`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from delete.errors import UnsupportedOutputError

__all__ = ["LogitsOnly", "UnsupportedOutputError", "as_logits", "logits_of"]

#: Keys (or attributes) that name the logits in a mapping-like output, in order.
LOGIT_KEYS = ("logits", "out")


def as_logits(output: Tensor) -> Tensor:
    """``output`` as logits: probabilities (non-negative, summing to 1 over the class
    dimension, dim 1) become their log, which has the same softmax; anything else is returned
    as is.

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> as_logits(z) is z
        True
        >>> torch.allclose(as_logits(z.softmax(1)).softmax(1), z.softmax(1))
        True
        >>> [round(v) for v in as_logits(torch.tensor([[1.0, 0.0]]))[0].tolist()]  # finite
        [0, -87]
    """
    if output.dim() < 2 or output.shape[1] < 2 or not output.is_floating_point():
        return output
    with torch.no_grad():
        sums = output.detach().float().sum(1)
        probabilities = bool((output >= 0).all()) and bool(((sums - 1).abs() <= 1e-3).all())
    if not probabilities:
        return output
    # Clamped: a probability that underflowed to 0 gives a large finite negative logit.
    return output.clamp_min(torch.finfo(output.dtype).tiny).log()


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output (probabilities as their log: :func:`as_logits`).

    A tensor is returned as is; a mapping or an object with ``logits`` (or ``out``, as
    torchvision's segmentation models name it) gives that; a tuple or list (GoogLeNet's and
    Inception's named tuples of main and auxiliary logits) gives its first element.

    Raises:
        UnsupportedOutputError: None of these holds a tensor.

    Example:
        >>> import torch
        >>> t = torch.tensor([[0.5, -1.0]])
        >>> logits_of(t) is t, logits_of({"logits": t}) is t, logits_of((t, t + 1)) is t
        (True, True, True)
        >>> logits_of("text")
        Traceback (most recent call last):
        ...
        delete.errors.UnsupportedOutputError: the model returned str, not logits: \
expected a tensor, a tuple whose first element is one, or a mapping or object with 'logits'
    """
    return as_logits(_logits_tensor(output))


def _logits_tensor(output: Any) -> Tensor:
    """The tensor :func:`logits_of` reads, before probabilities become their log."""
    if isinstance(output, Tensor):
        return output
    for key in LOGIT_KEYS:
        found = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(found, Tensor):
            return found
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise UnsupportedOutputError(
        f"the model returned {type(output).__name__}, not logits: expected a tensor, a tuple"
        " whose first element is one, or a mapping or object with 'logits'"
    )


class LogitsOnly(nn.Module):
    """``inner`` whose ``forward`` returns only its logits (:func:`logits_of`).

    Auxiliary heads (GoogLeNet's, Inception's) get no gradient through it: DELETE distils the
    main head, the one the model predicts with. :attr:`read_probabilities` tells whether a
    forward returned probabilities, given as their log (the run record says so). ``scale``
    multiplies the logits (the automatic selection sharpens a soft model's:
    :mod:`delete.selection.sharpen`); it changes no argmax.

    Example:
        >>> import torch
        >>> class Pair(nn.Linear):
        ...     def forward(self, x):
        ...         return super().forward(x), x
        >>> LogitsOnly(Pair(2, 3))(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(self, inner: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.inner = inner
        self.read_probabilities = False
        self.scale = scale

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        found = _logits_tensor(self.inner(*args, **kwargs))
        logits = as_logits(found)
        self.read_probabilities |= logits is not found
        return logits if self.scale == 1.0 else logits * self.scale
