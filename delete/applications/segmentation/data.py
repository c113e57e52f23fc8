"""Segmentation datasets: ``(image, mask)`` pairs held in memory or decoded from files on read.

Images are float ``(C, H, W)`` in ``[0, 1]``; masks are int64 ``(H, W)`` class indices with
:data:`IGNORE_INDEX` (255) for pixels that count for neither training nor evaluation.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from delete.errors import DatasetError

__all__ = [
    "IGNORE_INDEX",
    "SegmentationDataset",
    "SegmentationTensorDataset",
    "SegmentationFileDataset",
    "SegmentationBundle",
]

#: Mask value of pixels that are ignored (VOC object boundaries, unlabelled Cityscapes pixels).
IGNORE_INDEX = 255


class SegmentationDataset(Dataset[tuple[Tensor, Tensor]], ABC):
    """Base class: ``dataset[i] -> (image (C, H, W) float, mask (H, W) int64)``."""

    sample_ids: list[str]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def image(self, index: int) -> Tensor:
        """Image ``index`` as float ``(C, H, W)`` in ``[0, 1]``."""

    @abstractmethod
    def mask(self, index: int) -> Tensor:
        """Mask ``index`` as int64 ``(H, W)``."""

    @abstractmethod
    def subset(self, indices: Tensor | Sequence[int]) -> SegmentationDataset:
        """A dataset of the given rows."""

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.image(int(index)), self.mask(int(index))

    def contains(self, classes: Sequence[int]) -> Tensor:
        """``(N,)`` boolean: which samples have at least one pixel of any of ``classes``.

        Example:
            >>> masks = torch.tensor([[[0, 1]], [[0, 0]], [[2, 255]]])
            >>> ds = SegmentationTensorDataset(torch.zeros(3, 1, 1, 2), masks)
            >>> ds.contains([1, 2]).tolist()
            [True, False, True]
        """
        wanted = torch.as_tensor(list(classes), dtype=torch.long)
        return torch.tensor(
            [bool(torch.isin(self.mask(i), wanted).any()) for i in range(len(self))],
            dtype=torch.bool,
        )


class SegmentationTensorDataset(SegmentationDataset):
    """Images and masks held as tensors.

    Args:
        images: Float ``(N, C, H, W)`` in ``[0, 1]``.
        masks: Integer ``(N, H, W)`` class indices.
        sample_ids: Stable identifiers of the samples.

    Example:
        >>> ds = SegmentationTensorDataset(torch.zeros(2, 1, 4, 4), torch.ones(2, 4, 4))
        >>> image, mask = ds[1]
        >>> tuple(image.shape), mask.dtype, len(ds.subset([0]))
        ((1, 4, 4), torch.int64, 1)
    """

    def __init__(
        self, images: Tensor, masks: Tensor, sample_ids: Sequence[str] | None = None
    ) -> None:
        if images.dim() != 4 or masks.dim() != 3:
            raise ValueError(
                f"images must be (N, C, H, W) and masks (N, H, W), got "
                f"{tuple(images.shape)} and {tuple(masks.shape)}"
            )
        if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[1:]:
            raise ValueError(
                f"images {tuple(images.shape)} and masks {tuple(masks.shape)} do not pair up"
            )
        self.images = images.float()
        self.masks = masks.long()
        n = len(self.masks)
        self.sample_ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.masks)

    def image(self, index: int) -> Tensor:
        return self.images[index]

    def mask(self, index: int) -> Tensor:
        return self.masks[index]

    def contains(self, classes: Sequence[int]) -> Tensor:
        wanted = torch.as_tensor(list(classes), dtype=torch.long)
        return torch.isin(self.masks, wanted).flatten(1).any(1)

    def subset(self, indices: Tensor | Sequence[int]) -> SegmentationTensorDataset:
        idx = torch.as_tensor(indices, dtype=torch.long)
        ids = [self.sample_ids[i] for i in idx.tolist()]
        return SegmentationTensorDataset(self.images[idx], self.masks[idx], ids)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


class SegmentationFileDataset(SegmentationDataset):
    """Image and mask files decoded on read and resized to ``size`` ``(H, W)``.

    Images are resized bilinearly, masks with nearest neighbour. A palette PNG mask is read as
    its palette indices (Pascal VOC); other masks as 8-bit values. ``label_map`` (a 256-entry
    lookup table) then maps stored values to training classes (Cityscapes label ids to train ids).

    Args:
        image_paths: One image file per sample.
        mask_paths: The matching mask files.
        size: Output ``(height, width)``.
        label_map: Optional int64 ``(256,)`` lookup table applied to the mask values.
        sample_ids: Stable identifiers (default: the image file stems).
    """

    def __init__(
        self,
        image_paths: Sequence[str | os.PathLike[str]],
        mask_paths: Sequence[str | os.PathLike[str]],
        size: tuple[int, int],
        *,
        label_map: Tensor | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        if len(image_paths) != len(mask_paths):
            raise ValueError(f"{len(image_paths)} images but {len(mask_paths)} masks")
        if label_map is not None and tuple(label_map.shape) != (256,):
            raise ValueError(f"label_map must have 256 entries, got {tuple(label_map.shape)}")
        self.image_paths = [Path(p) for p in image_paths]
        self.mask_paths = [Path(p) for p in mask_paths]
        self.size = (int(size[0]), int(size[1]))
        self.label_map = label_map.long() if label_map is not None else None
        self.sample_ids = (
            list(sample_ids) if sample_ids is not None else [p.stem for p in self.image_paths]
        )

    def __len__(self) -> int:
        return len(self.image_paths)

    def image(self, index: int) -> Tensor:
        from PIL import Image

        path = self.image_paths[index]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize(
                    (self.size[1], self.size[0]), Image.Resampling.BILINEAR
                )
                array = np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"image file {path} cannot be decoded: {exc}") from exc
        return torch.from_numpy(array.transpose(2, 0, 1).copy()).float().div_(255.0)

    def mask(self, index: int) -> Tensor:
        from PIL import Image

        path = self.mask_paths[index]
        try:
            with Image.open(path) as img:
                # "P" keeps palette indices (VOC class ids); anything else becomes 8-bit values.
                raw = img if img.mode in ("P", "L") else img.convert("L")
                raw = raw.resize((self.size[1], self.size[0]), Image.Resampling.NEAREST)
                array = np.asarray(raw, dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"mask file {path} cannot be decoded: {exc}") from exc
        values = torch.from_numpy(array.copy()).long()
        return self.label_map[values] if self.label_map is not None else values

    def subset(self, indices: Tensor | Sequence[int]) -> SegmentationFileDataset:
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return SegmentationFileDataset(
            [self.image_paths[i] for i in idx],
            [self.mask_paths[i] for i in idx],
            self.size,
            label_map=self.label_map,
            sample_ids=[self.sample_ids[i] for i in idx],
        )

    def to_memory(self) -> SegmentationTensorDataset:
        """Decode every pair once into a :class:`SegmentationTensorDataset` (same order and ids)."""
        if len(self) == 0:
            raise DatasetError("cannot load an empty segmentation dataset into memory")
        images = torch.stack([self.image(i) for i in range(len(self))])
        masks = torch.stack([self.mask(i) for i in range(len(self))])
        return SegmentationTensorDataset(images, masks, self.sample_ids)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return 3, self.size[0], self.size[1]


@dataclass
class SegmentationBundle:
    """A segmentation dataset with train/test splits and class names (index = class id).

    Example:
        >>> ds = SegmentationTensorDataset(torch.zeros(1, 3, 4, 6), torch.zeros(1, 4, 6))
        >>> b = SegmentationBundle("toy", ds, ds, ["background", "thing"])
        >>> b.num_classes, b.image_shape
        (2, (3, 4, 6))
    """

    name: str
    train: SegmentationDataset
    test: SegmentationDataset
    class_names: list[str]
    ignore_index: int = IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape
