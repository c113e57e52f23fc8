"""Shared evaluation plumbing: model outputs over a dataset, batch by batch, without gradients."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

__all__: list[str] = []


def _outputs(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    fn: Callable[[Tensor], Tensor] | None = None,
    batch_size: int = 256,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(fn(images) or model(images), targets)`` per batch, on the CPU, in eval mode.

    The model's train/eval mode is restored when the iteration ends.

    Example:
        >>> from delete.data import ImageTensorDataset
        >>> ds = ImageTensorDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 1]))
        >>> out = list(_outputs(nn.Flatten(), ds, torch.device("cpu"), batch_size=2))
        >>> [tuple(o.shape) for o, _ in out]
        [(2, 4), (1, 4)]
    """
    was_training = model.training
    model.eval()
    forward = fn if fn is not None else model
    try:
        with torch.no_grad():
            for inputs, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                yield forward(inputs.to(device)).float().cpu(), targets
    finally:
        model.train(was_training)
