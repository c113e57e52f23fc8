"""Logits from whatever a classifier's ``forward`` returns.

Outside models do not all return a logits tensor: torchvision's GoogLeNet and Inception v3
return a named tuple ``(logits, aux...)`` in train mode (a tensor in eval mode), and models
in the Hugging Face style return a mapping or an object with ``logits``. Unlearning trains the
student in train mode, so :func:`delete.api.run_unlearning` runs both models behind
:class:`LogitsOnly` and hands the caller's own module back; :func:`delete.metrics.predict`
reads eval-mode outputs through :func:`logits_of`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from delete.errors import UnsupportedOutputError

__all__ = ["LogitsOnly", "UnsupportedOutputError", "logits_of"]

#: Keys (or attributes) that name the logits in a mapping-like output, in order.
LOGIT_KEYS = ("logits", "out")


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output.

    A tensor is returned as is; a mapping or an object with ``logits`` (or ``out``, as
    torchvision's segmentation models name it) gives that; a tuple or list (GoogLeNet's and
    Inception's named tuples of main and auxiliary logits) gives its first element.

    Raises:
        UnsupportedOutputError: None of these holds a tensor.

    Example:
        >>> import torch
        >>> t = torch.zeros(2, 3)
        >>> logits_of(t) is t, logits_of({"logits": t}) is t, logits_of((t, t + 1)) is t
        (True, True, True)
        >>> logits_of("text")
        Traceback (most recent call last):
        ...
        delete.errors.UnsupportedOutputError: the model returned str, not logits: \
expected a tensor, a tuple whose first element is one, or a mapping or object with 'logits'
    """
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
    main head, the one the model predicts with.

    Example:
        >>> import torch
        >>> class Pair(nn.Linear):
        ...     def forward(self, x):
        ...         return super().forward(x), x
        >>> LogitsOnly(Pair(2, 3))(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return logits_of(self.inner(*args, **kwargs))
