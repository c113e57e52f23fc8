"""Class-centric splits: forget classes vs retained classes, on train and test alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from delete.data.tensor_dataset import ImageTensorDataset

__all__ = [
    "UnlearningSplits",
    "class_mask",
    "split_by_classes",
    "make_unlearning_splits",
    "stratified_split",
    "seeded_subset",
]


def class_mask(labels: Tensor, classes: Sequence[int]) -> Tensor:
    """Boolean mask of the samples whose label is in ``classes``.

    Example:
        >>> class_mask(torch.tensor([0, 1, 2, 1]), [1])
        tensor([False,  True, False,  True])
    """
    return torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))


def split_by_classes(
    dataset: ImageTensorDataset, forget_classes: Sequence[int]
) -> tuple[ImageTensorDataset, ImageTensorDataset]:
    """Split a dataset into (forget-class samples, retained-class samples)."""
    mask = class_mask(dataset.labels, forget_classes)
    forget = dataset.subset(torch.nonzero(mask).flatten())
    retain = dataset.subset(torch.nonzero(~mask).flatten())
    return forget, retain


@dataclass
class UnlearningSplits:
    """The four evaluation splits of class unlearning."""

    forget_classes: tuple[int, ...]
    train_forget: ImageTensorDataset
    train_retain: ImageTensorDataset
    test_forget: ImageTensorDataset
    test_retain: ImageTensorDataset


def make_unlearning_splits(
    train: ImageTensorDataset, test: ImageTensorDataset, forget_classes: Sequence[int]
) -> UnlearningSplits:
    """Forget/retain splits of both the train and the test set."""
    train_forget, train_retain = split_by_classes(train, forget_classes)
    test_forget, test_retain = split_by_classes(test, forget_classes)
    return UnlearningSplits(
        tuple(sorted(forget_classes)), train_forget, train_retain, test_forget, test_retain
    )


def stratified_split(labels: Tensor, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded per-class split of sample indices into (train, test).

    Example:
        >>> tr, te = stratified_split(torch.tensor([0] * 10 + [1] * 10), 0.2, seed=0)
        >>> len(tr), len(te)
        (16, 4)
    """
    generator = torch.Generator().manual_seed(seed)
    train_idx: list[Tensor] = []
    test_idx: list[Tensor] = []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    return torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values


def seeded_subset(dataset: Dataset, size: int, seed: int) -> Dataset:
    """A seeded random subset of at most ``size`` items, read without augmentation (the
    pipeline's selection sample; the capped training-split evaluation).

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(10, 1, 2, 2), torch.arange(10))
        >>> len(seeded_subset(ds, 4, seed=0)), len(seeded_subset(ds, 40, seed=0))
        (4, 10)
    """
    if isinstance(dataset, ImageTensorDataset):
        dataset = dataset.with_transform(None)  # plain images: nothing here augments
    n = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(size, n)]
    return Subset(dataset, order.tolist())
