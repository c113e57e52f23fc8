"""Cityscapes-style semantic segmentation folders (never downloaded).

``root/leftImg8bit/<split>/<city>/<name>_leftImg8bit.png`` pairs with
``root/gtFine/<split>/<city>/<name>_gtFine_labelIds.png``. Label ids are mapped to the 19
standard train ids; every other id becomes 255 (ignored).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from delete.applications.segmentation.data import (
    IGNORE_INDEX,
    SegmentationBundle,
    SegmentationFileDataset,
)
from delete.errors import DatasetError

__all__ = ["CITYSCAPES_CLASSES", "LABEL_ID_TO_TRAIN_ID", "cityscapes_label_map", "load_cityscapes"]

#: The 19 evaluated classes, index = train id.
CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip

#: Cityscapes label id -> train id (ids not listed are ignored).
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip

_IMAGE_SUFFIX = "_leftImg8bit.png"
_MASK_SUFFIX = "_gtFine_labelIds.png"


def cityscapes_label_map() -> torch.Tensor:
    """A 256-entry lookup table from label ids to train ids (255 elsewhere).

    Example:
        >>> lut = cityscapes_label_map()
        >>> int(lut[7]), int(lut[26]), int(lut[0])
        (0, 13, 255)
    """
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    for label_id, train_id in LABEL_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


def _split(root: Path, split: str, size: tuple[int, int]) -> SegmentationFileDataset:
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DatasetError(
            f"Cityscapes split folder {image_dir} is missing: expected "
            f"leftImg8bit/{split}/<city>/*{_IMAGE_SUFFIX}"
        )
    images = sorted(image_dir.glob(f"*/*{_IMAGE_SUFFIX}"))
    if not images:
        raise DatasetError(f"no *{_IMAGE_SUFFIX} image under {image_dir}/<city>/")
    masks, ids = [], []
    for image in images:
        stem = image.name[: -len(_IMAGE_SUFFIX)]
        mask = root / "gtFine" / split / image.parent.name / f"{stem}{_MASK_SUFFIX}"
        if not mask.is_file():
            raise DatasetError(f"Cityscapes label file {mask} is missing for {image.name}")
        masks.append(mask)
        ids.append(f"{image.parent.name}/{stem}")
    return SegmentationFileDataset(
        images, masks, size, label_map=cityscapes_label_map(), sample_ids=ids
    )


def load_cityscapes(
    root: str | os.PathLike[str],
    image_size: tuple[int, int] = (128, 256),
    *,
    train_split: str = "train",
    test_split: str = "val",
) -> SegmentationBundle:
    """Cityscapes fine annotations as a :class:`SegmentationBundle` with 19 train-id classes.

    Args:
        root: Folder holding ``leftImg8bit/`` and ``gtFine/``.
        image_size: ``(H, W)`` every image and mask is resized to.
        train_split: Training split folder name.
        test_split: Test split folder name.

    Raises:
        DatasetError: Missing split folders, images or label files.

    Example:
        >>> load_cityscapes("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: Cityscapes split folder /nonexistent/leftImg8bit/train ...
    """
    base = Path(root).expanduser()
    size = (int(image_size[0]), int(image_size[1]))
    return SegmentationBundle(
        "cityscapes",
        _split(base, train_split, size),
        _split(base, test_split, size),
        list(CITYSCAPES_CLASSES),
    )
