"""One prediction per model state and dataset inside a scope.

A deletion request reads the same images with the same two models several times: the
evaluation scores the parent and the unlearned model on the forget set and the test split,
then the Evidently report compares their retained test logits and the membership plot their
forget-class losses. At 50,000 images those repeated passes were a third of the pipeline's
overhead. Inside :func:`shared_predictions`, :func:`delete.metrics.predict` returns the
logits it already computed for the same model *state* on the same dataset object.

The key is the model's identity plus the storage pointer and version counter of every
parameter and buffer (an optimiser step or ``load_state_dict`` bumps them, so a model trained
in place is predicted afresh), the dataset's identity, the batch size and the device. The
scope keeps every key's model and dataset alive, so an id is never reused while the scope
lasts. Outside a scope nothing is cached.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from torch import nn

__all__ = ["model_state_key", "shared", "shared_predictions"]

T = TypeVar("T")

#: key -> (objects kept alive for the key's ids, value); ``None`` outside a scope.
_SCOPE: ContextVar[dict[Hashable, tuple[tuple[object, ...], Any]] | None] = ContextVar(
    "delete_shared_predictions", default=None
)


@contextmanager
def shared_predictions() -> Iterator[None]:
    """Within the block, the same model state on the same dataset is predicted once.

    Example:
        >>> import torch
        >>> from delete.data import ImageTensorDataset
        >>> from delete.metrics import predict
        >>> ds = ImageTensorDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 0]))
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> with shared_predictions():
        ...     first, _ = predict(model, ds, "cpu")
        ...     with torch.no_grad():
        ...         _ = model[1].bias.add_(1.0)  # a new state: predicted again
        ...     second, _ = predict(model, ds, "cpu")
        >>> bool(torch.allclose(second, first + 1.0))
        True
    """
    token = _SCOPE.set({})
    try:
        yield
    finally:
        _SCOPE.reset(token)


def model_state_key(model: nn.Module) -> tuple[tuple[int, int], ...]:
    """Storage pointer and version counter of every parameter and buffer.

    Example:
        >>> import torch
        >>> layer = nn.Linear(2, 1)
        >>> before = model_state_key(layer)
        >>> with torch.no_grad():
        ...     _ = layer.weight.mul_(2.0)
        >>> model_state_key(layer) == before
        False
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((t.data_ptr(), t._version) for t in tensors)


def shared(key: Hashable, keep: tuple[object, ...], compute: Callable[[], T]) -> T:
    """``compute()``, or inside a scope the value already computed for ``key``.

    Args:
        key: What identifies the value; ids in it must belong to objects in ``keep``.
        keep: Objects held for as long as the scope lasts, so that their ids stay theirs.
        compute: Produces the value on a miss (or always, outside a scope).
    """
    scope = _SCOPE.get()
    if scope is None:
        return compute()
    hit = scope.get(key)
    if hit is not None:
        return hit[1]  # type: ignore[no-any-return]
    value = compute()
    scope[key] = (keep, value)
    return value
