"""A small CNN sized for CPU training on 8x8 to 32x32 images."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["SmallCNN", "conv_stack"]


def conv_stack(in_channels: int, width: int) -> list[nn.Module]:
    """Three conv-BN-ReLU blocks, pooling after the first two; ``2 * width`` output channels.

    Pooling early matters at 28x28, where the first block would otherwise dominate the cost.

    Example:
        >>> import torch
        >>> nn.Sequential(*conv_stack(1, 8))(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 16, 2, 2])
    """
    return [
        nn.Conv2d(in_channels, width // 2, 3, padding=1, bias=False),
        nn.BatchNorm2d(width // 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(width // 2, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Three conv blocks with BatchNorm, global average pooling and a linear head.

    Works for any input size >= 8x8; exports to ONNX with a dynamic batch axis.

    Example:
        >>> import torch
        >>> SmallCNN(num_classes=10, in_channels=1)(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(*conv_stack(in_channels, width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
