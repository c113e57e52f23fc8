"""Segmentation datasets by name: ``mnist_scenes`` (offline), ``voc`` and ``cityscapes``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from delete.applications.segmentation.cityscapes import load_cityscapes
from delete.applications.segmentation.data import SegmentationBundle
from delete.applications.segmentation.scenes import load_mnist_scenes
from delete.applications.segmentation.voc import load_voc_segmentation
from delete.errors import DatasetError
from delete.registry import Registry

__all__ = ["SEGMENTATION_DATASETS", "load_segmentation_data"]

#: Segmentation dataset loaders by name (the same registry rules as every other).
SEGMENTATION_DATASETS: Registry[Callable[..., SegmentationBundle]] = Registry(
    "segmentation dataset", DatasetError
)
SEGMENTATION_DATASETS.add("mnist_scenes", load_mnist_scenes)
SEGMENTATION_DATASETS.add("voc", load_voc_segmentation)
SEGMENTATION_DATASETS.add("cityscapes", load_cityscapes)


def load_segmentation_data(*, dataset: str = "mnist_scenes", **options: Any) -> SegmentationBundle:
    """Load a segmentation dataset by name (see :data:`SEGMENTATION_DATASETS`).

    Raises:
        DatasetError: Unknown dataset name (and whatever the loader raises).

    Example:
        >>> load_segmentation_data(dataset="ade20k")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: unknown segmentation dataset 'ade20k'; known: cityscapes, ...
    """
    return SEGMENTATION_DATASETS.get(dataset)(**options)
