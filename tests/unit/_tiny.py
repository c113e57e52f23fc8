"""Tiny synthetic problems shared by the unit tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(nn.Module):
    """A conv + BN + linear classifier on 1x8x8 inputs: small enough for milliseconds per step."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.conv(x))).flatten(1))


def tiny_data(
    n: int = 32, num_classes: int = 4, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.rand(n, 1, 8, 8, generator=g) + labels.view(-1, 1, 1, 1) * 0.5
    return images, labels


def loader_of(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


def tiny_problem(forget: int = 1, num_classes: int = 4) -> tuple[TinyNet, DataLoader, DataLoader]:
    torch.manual_seed(0)
    images, labels = tiny_data(num_classes=num_classes)
    mask = labels == forget
    return (
        TinyNet(num_classes),
        loader_of(images[mask], labels[mask]),
        loader_of(images[~mask], labels[~mask]),
    )
