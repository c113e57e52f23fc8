"""Seeded, reproducible supervised training of the original (and the retrained) model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from delete._device import resolve_device
from delete.progress import EpochProgress, report_epoch

__all__ = ["TrainConfig", "train_classifier", "make_loader"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Supervised training hyper-parameters (SGD + cosine schedule)."""

    epochs: int = 15
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    seed: int = 0


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader whose shuffling is fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0
    )


def train_classifier(
    model: nn.Module,
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
    device: str | torch.device = "auto",
    *,
    progress: bool = False,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> nn.Module:
    """Train ``model`` in place with cross-entropy; same seed, same data -> same weights.

    Args:
        loss_fn: ``loss(outputs, targets)`` to use instead of plain cross-entropy (a margin
            loss for face identities, cross-entropy with an ignore index for segmentation).

    Returns:
        The trained model, in eval mode, on ``device``.
    """
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    model.to(dev).train()
    loader = make_loader(dataset, config.batch_size, shuffle=True, seed=config.seed)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * len(loader)
    )
    report_epoch(EpochProgress("train", "train", id(model), 0, config.epochs))
    for epoch in tqdm(range(config.epochs), desc="train", disable=not progress):
        total = 0.0
        for inputs, targets in loader:
            inputs, targets = inputs.to(dev), targets.to(dev)
            outputs = model(inputs)
            loss = (
                F.cross_entropy(outputs, targets) if loss_fn is None else loss_fn(outputs, targets)
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        mean = total / max(len(loader), 1)
        log.debug("train epoch %d loss %.4f", epoch + 1, mean)
        report_epoch(EpochProgress("train", "train", id(model), epoch + 1, config.epochs, mean))
    return model.eval()
