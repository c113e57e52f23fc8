"""Datasets, class-centric splits and loaders."""

from __future__ import annotations

from delete.data.offline import load_digits, load_mnist5k
from delete.data.splits import (
    UnlearningSplits,
    class_mask,
    make_unlearning_splits,
    split_by_classes,
    stratified_split,
)
from delete.data.tensor_dataset import DatasetBundle, ImageTensorDataset, RandomShift

__all__ = [
    "DatasetBundle",
    "ImageTensorDataset",
    "RandomShift",
    "UnlearningSplits",
    "class_mask",
    "load_digits",
    "load_mnist5k",
    "make_unlearning_splits",
    "split_by_classes",
    "stratified_split",
]
