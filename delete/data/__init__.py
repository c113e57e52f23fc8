"""Datasets, class-centric splits and loaders."""

from __future__ import annotations

from delete.data.augment import RandomCropFlip
from delete.data.image_folder import ImageFileDataset, load_image_folder
from delete.data.lazy_dataset import ByteImageDataset, LazyImageDataset
from delete.data.offline import load_digits, load_mnist5k
from delete.data.pairs import PairLoader, as_pair
from delete.data.registry import list_datasets, load_dataset, register_dataset
from delete.data.splits import (
    UnlearningSplits,
    class_mask,
    make_unlearning_splits,
    seeded_subset,
    split_by_classes,
    stratified_split,
)
from delete.data.tensor_dataset import DatasetBundle, ImageTensorDataset, RandomShift
from delete.data.torchvision_sets import load_cifar10, load_cifar100

__all__ = [
    "ByteImageDataset",
    "DatasetBundle",
    "ImageFileDataset",
    "ImageTensorDataset",
    "LazyImageDataset",
    "PairLoader",
    "RandomCropFlip",
    "RandomShift",
    "UnlearningSplits",
    "as_pair",
    "class_mask",
    "list_datasets",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist5k",
    "make_unlearning_splits",
    "register_dataset",
    "seeded_subset",
    "split_by_classes",
    "stratified_split",
]
