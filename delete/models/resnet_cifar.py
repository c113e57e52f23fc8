"""ResNet-18 for 32x32 inputs: 3x3 stride-1 stem and no max-pool (the standard CIFAR variant)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from torchvision.models import ResNet

__all__ = ["resnet18_cifar"]


def resnet18_cifar(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    """ResNet-18 whose stem keeps 32x32 resolution (11.2 M parameters at 10 classes).

    torchvision's ImageNet stem (7x7 stride-2 conv + max-pool) shrinks a 32x32 image to 8x8
    before the first block; the CIFAR stem is one 3x3 stride-1 conv. Module names stay
    torchvision's (``conv1``, ``layer1``..``layer4``, ``fc``), so state_dicts interoperate.

    Args:
        num_classes: Output width.
        in_channels: Input channels (3 for CIFAR).

    Example:
        >>> import torch
        >>> resnet18_cifar(num_classes=4)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 4])
    """
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # Same initialisation torchvision gives every other conv of the network.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()  # type: ignore[assignment]
    return model
