"""Pascal VOC semantic segmentation from its standard folder layout (never downloaded).

``root`` holds ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs whose
indices are the class ids, 255 on object boundaries) and
``ImageSets/Segmentation/{train,val}.txt``. ``root`` may also be the folder above
``VOC2012`` or above ``VOCdevkit``.
"""

from __future__ import annotations

import os
from pathlib import Path

from delete.applications.segmentation.data import SegmentationBundle, SegmentationFileDataset
from delete.errors import DatasetError

__all__ = ["VOC_CLASSES", "load_voc_segmentation"]

#: The 21 VOC classes, index = class id (255 is "ignore").
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
]  # fmt: skip


def _find_voc_root(root: Path) -> Path:
    candidates = [root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"]
    for candidate in candidates:
        if (candidate / "JPEGImages").is_dir() and (candidate / "SegmentationClass").is_dir():
            return candidate
    raise DatasetError(
        f"Pascal VOC not found under {root}: expected JPEGImages/, SegmentationClass/ and "
        "ImageSets/Segmentation/ there (or in VOC2012/ or VOCdevkit/VOC2012/)"
    )


def _split(voc: Path, split: str, size: tuple[int, int]) -> SegmentationFileDataset:
    listing = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not listing.is_file():
        raise DatasetError(f"Pascal VOC split file {listing} is missing")
    ids = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"Pascal VOC split file {listing} lists no image")
    images = [voc / "JPEGImages" / f"{i}.jpg" for i in ids]
    masks = [voc / "SegmentationClass" / f"{i}.png" for i in ids]
    missing = [str(p) for p in images + masks if not p.is_file()]
    if missing:
        raise DatasetError(f"Pascal VOC {split}: {len(missing)} file(s) missing, e.g. {missing[0]}")
    return SegmentationFileDataset(images, masks, size, sample_ids=ids)


def load_voc_segmentation(
    root: str | os.PathLike[str],
    image_size: int | tuple[int, int] = 128,
    *,
    train_split: str = "train",
    test_split: str = "val",
) -> SegmentationBundle:
    """VOC segmentation as a :class:`SegmentationBundle` (files are decoded on read).

    Args:
        root: The ``VOC2012`` folder (or a folder above it).
        image_size: Side (or ``(H, W)``) every image and mask is resized to.
        train_split: Split file of the training images.
        test_split: Split file of the test images.

    Raises:
        DatasetError: Missing folders, split files or listed files.

    Example:
        >>> load_voc_segmentation("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: Pascal VOC not found under /nonexistent: ...
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    voc = _find_voc_root(Path(root).expanduser())
    hw = (int(size[0]), int(size[1]))
    return SegmentationBundle(
        "voc", _split(voc, train_split, hw), _split(voc, test_split, hw), list(VOC_CLASSES)
    )
