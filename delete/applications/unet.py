"""A tiny U-Net for CPU-sized semantic segmentation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from delete.models import register_model

__all__ = ["TinyUNet"]


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
