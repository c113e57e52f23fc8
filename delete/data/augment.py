"""Training augmentations that operate on one float image ``(C, H, W)``."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["RandomCropFlip"]


class RandomCropFlip:
    """Zero-pad by ``pad``, crop back to the original size at random, flip left-right with p=0.5.

    With ``pad=4`` on 32x32 images this is the standard CIFAR training augmentation
    (``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``).

    Example:
        >>> out = RandomCropFlip(4)(torch.ones(3, 32, 32), torch.Generator().manual_seed(0))
        >>> tuple(out.shape)
        (3, 32, 32)
    """

    def __init__(self, pad: int = 4, flip: bool = True) -> None:
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad = pad
        self.flip = flip

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        _, height, width = image.shape
        if self.pad > 0:
            padded = torch.nn.functional.pad(image, (self.pad,) * 4)
            dy, dx = torch.randint(0, 2 * self.pad + 1, (2,), generator=generator).tolist()
            image = padded[:, dy : dy + height, dx : dx + width]
        if self.flip and bool(torch.rand((), generator=generator) < 0.5):
            image = image.flip(-1)
        return image

    def __repr__(self) -> str:
        return f"RandomCropFlip(pad={self.pad}, flip={self.flip})"
