"""CPU-sized segmentation networks (a tiny FCN, the task's default, and a tiny U-Net), both
registered with :func:`delete.models.register_model` so their checkpoints rebuild by name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.applications.segmentation.data import SegmentationBundle
from delete.models import ModelSpec, register_model

__all__ = ["TinyFCN", "TinyUNet", "segmentation_model_spec"]


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


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyUNet(nn.Module):
    """Encoder-decoder with skip connections; returns per-pixel logits ``(N, C, H, W)``.

    Each of the ``depth`` levels halves the resolution and doubles the channels; the
    bottleneck's receptive field (about 70 pixels at depth 3) spans a whole object, which is
    what lets every pixel be classified by the object it belongs to. Height and width must be
    multiples of ``2 ** depth``.

    Args:
        num_classes: Output classes per pixel (including background).
        in_channels: Image channels.
        width: Channels of the first level.
        depth: Number of down-sampling levels.

    Example:
        >>> TinyUNet(num_classes=11, in_channels=1, width=4)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 11, 16, 16])
    """

    def __init__(
        self, num_classes: int = 11, in_channels: int = 1, width: int = 8, depth: int = 3
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        widths = [width * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList(
            [_block(in_channels, widths[0])]
            + [_block(widths[i], widths[i + 1]) for i in range(depth - 1)]
        )
        self.bottleneck = _block(widths[depth - 1], widths[depth])
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)]
        )
        self.decoders = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in range(depth)])
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        factor = 2**self.depth
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"TinyUNet(depth={self.depth}) needs height and width divisible by {factor}, "
                f"got {tuple(x.shape)}"
            )
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for level in reversed(range(self.depth)):
            x = self.decoders[level](torch.cat([self.ups[level](x), skips[level]], dim=1))
        return self.classifier(x)


register_model("tiny_unet")(TinyUNet)


def segmentation_model_spec(data: SegmentationBundle) -> ModelSpec:
    """The task's default architecture for ``data``: a :class:`TinyFCN` of width 16.

    Example:
        >>> from delete.applications.segmentation.data import SegmentationTensorDataset
        >>> ds = SegmentationTensorDataset(torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8))
        >>> segmentation_model_spec(SegmentationBundle("toy", ds, ds, ["bg", "x"])).arch
        'tiny_fcn'
    """
    c, h, _ = data.image_shape
    return ModelSpec("tiny_fcn", data.num_classes, c, h, {"width": 16})
