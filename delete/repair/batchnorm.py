"""BatchNorm statistics re-estimated on a chosen set of images."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["recalibrate_batchnorm"]


def recalibrate_batchnorm(
    model: nn.Module, images: Iterable[tuple[Tensor, Tensor]], device: torch.device | str = "cpu"
) -> int:
    """Replace every BatchNorm layer's running statistics by their plain average over ``images``.

    Unlearning on forget-only batches (all triggered images, or one class) moves the running
    statistics towards that data; a few clean images put them back where clean inputs live.
    The statistics are a cumulative average (``momentum=None``) over every batch, whatever the
    layers' own momentum; parameters are untouched and the model's mode is restored.

    Args:
        model: Trained in place (its running statistics only).
        images: ``(images, labels)`` batches; the labels are not read.
        device: Where the forward passes run.

    Returns:
        The number of images read (0 when the model has no BatchNorm: nothing is run).

    Example:
        >>> bn = nn.BatchNorm1d(1)
        >>> recalibrate_batchnorm(bn, [(torch.tensor([[1.0], [3.0]]), torch.zeros(2))])
        2
        >>> float(bn.running_mean), float(bn.running_var)
        (2.0, 2.0)
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    seen = 0
    model.train()
    try:
        with torch.no_grad():
            for inputs, _ in images:
                model(inputs.to(device))
                seen += len(inputs)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.train(was_training)
    return seen
