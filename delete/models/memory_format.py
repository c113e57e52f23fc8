"""Channels-last layout for the copies a run trains, where it gives the same logits.

oneDNN (CPU) and cuDNN (bf16 tensor cores) run many convolutions faster on NHWC tensors.
Measured on this project's CPU, one thread, batches of 64 MNIST images
(``docs/bench/channels_last_cpu.md``): DELETE's training steps took 13-47 % less time on
the SmallCNN, the plain and BatchNorm CNNs and MobileNetV3, and their no-grad forwards (the
teacher, the per-epoch readings) 38-69 % less; ResNet-18's steps took 7 % more, the ViT's
the same. The rule is fixed rather than timed per machine, so that one request runs the same
way twice. Converting the weights is enough: a convolution whose weight is channels-last
gives a channels-last output, whatever the input's layout.

It is not safe on every model. A ``forward`` that calls ``.view`` on a convolution's output
(LeNet-style heads) fails on a channels-last tensor, and code that reads raw strides could
compute something else. So the layout is changed only after the model's own logits on real
inputs came out the same in both, and the caller gets its layout back.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

__all__ = ["has_conv2d", "is_channels_last", "to_channels_last_if_same"]

log = logging.getLogger(__name__)

#: Images of the caller's first batch the two layouts are compared on.
_PARITY_IMAGES = 8


def has_conv2d(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-D convolution (the layers the layout speeds up).

    Example:
        >>> has_conv2d(nn.Sequential(nn.Conv2d(1, 2, 3))), has_conv2d(nn.Linear(2, 2))
        (True, False)
    """
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def is_channels_last(model: nn.Module) -> bool:
    """Whether every 2-D convolution weight of ``model`` is laid out channels-last.

    Example:
        >>> conv = nn.Conv2d(3, 4, 3)
        >>> is_channels_last(conv), is_channels_last(conv.to(memory_format=torch.channels_last))
        (False, True)
    """
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels_last = torch.channels_last
    return bool(weights) and all(w.is_contiguous(memory_format=channels_last) for w in weights)


def to_channels_last_if_same(model: nn.Module, inputs: Tensor) -> bool:
    """Convert ``model`` (in place, eval mode) to channels-last when it holds a 2-D
    convolution, ``inputs`` are images (N, C, H, W) and its logits on a few of them match
    (``allclose`` at 1e-4, relative to their scale); returns whether it was converted.

    A model already channels-last, one that raises on the new layout, or one whose logits
    change is left as it was.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)).eval()
        >>> x = torch.randn(2, 3, 6, 6)
        >>> _ = net(x)
        >>> to_channels_last_if_same(net, x), is_channels_last(net)
        (True, True)
        >>> class Viewer(nn.Module):  # a LeNet-style head that views the conv output
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(64, 2)
        ...     def forward(self, x):
        ...         y = self.conv(x)
        ...         return self.fc(y.view(y.size(0), -1))
        >>> viewer = Viewer().eval()
        >>> to_channels_last_if_same(viewer, x), is_channels_last(viewer)
        (False, False)
    """
    if inputs.dim() != 4 or not has_conv2d(model) or is_channels_last(model):
        return False
    sample = inputs[:_PARITY_IMAGES]
    try:
        # A model may refuse 8 images (a batch size written into its forward) or the layout
        # itself; either way it keeps the caller's layout and the run goes on.
        with torch.no_grad():
            before = model(sample)
            model.to(memory_format=torch.channels_last)
            after = model(sample)
    except Exception as exc:  # noqa: BLE001 - any failure means: keep the caller's layout
        log.debug("channels-last layout not used: %s", exc)
        model.to(memory_format=torch.contiguous_format)
        return False
    same = (
        isinstance(before, Tensor)
        and isinstance(after, Tensor)
        and before.shape == after.shape
        and torch.allclose(
            after.float(),
            before.float(),
            rtol=1e-4,
            atol=1e-4 * max(1.0, float(before.detach().abs().max()) if before.numel() else 0.0),
        )
    )
    if not same:
        log.debug("channels-last layout not used: the logits changed")
        model.to(memory_format=torch.contiguous_format)
    return same
