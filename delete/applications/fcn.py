"""A tiny fully convolutional network (FCN) for CPU-sized semantic segmentation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.models import register_model

__all__ = ["TinyFCN"]


def _conv(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyFCN(nn.Module):
    """Context branch at 1/4 resolution plus a full-resolution skip; per-pixel logits.

    The context branch (two poolings, then dilated convolutions) sees about 60 pixels around
    each position, enough to tell *which* object a pixel belongs to; the full-resolution stem
    keeps boundaries sharp. Its logits are upsampled bilinearly and fused with the stem by a
    1x1 convolution. It learns object identity faster than a same-cost U-Net on the digit
    scenes, which matters on a CPU budget.

    Args:
        num_classes: Output classes per pixel (including background).
        in_channels: Image channels.
        width: Channels of the stem (the context branch uses up to ``4 * width``).

    Example:
        >>> TinyFCN(num_classes=11, in_channels=1, width=4)(torch.zeros(2, 1, 20, 24)).shape
        torch.Size([2, 11, 20, 24])
    """

    def __init__(self, num_classes: int = 11, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        self.stem = _conv(in_channels, width)
        self.context = nn.Sequential(
            nn.MaxPool2d(2),
            _conv(width, 2 * width),
            nn.MaxPool2d(2),
            _conv(2 * width, 4 * width),
            _conv(4 * width, 4 * width, dilation=2),
            _conv(4 * width, 4 * width, dilation=4),
        )
        self.classifier = nn.Conv2d(5 * width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        local = self.stem(x)
        context = F.interpolate(
            self.context(local), size=local.shape[-2:], mode="bilinear", align_corners=False
        )
        return self.classifier(torch.cat([context, local], dim=1))


register_model("tiny_fcn")(TinyFCN)
