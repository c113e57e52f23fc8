"""An in-memory image dataset: float images in [0, 1] shaped (N, C, H, W) plus integer labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["ImageTensorDataset", "RandomShift", "DatasetBundle"]


class RandomShift:
    """Training augmentation for small images: pad by ``pad`` pixels, then crop back at random.

    Example:
        >>> out = RandomShift(2)(torch.ones(1, 8, 8), torch.Generator().manual_seed(0))
        >>> tuple(out.shape)
        (1, 8, 8)
    """

    def __init__(self, pad: int = 2) -> None:
        self.pad = pad

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.pad <= 0:
            return image
        _, height, width = image.shape
        padded = torch.nn.functional.pad(image, (self.pad,) * 4)
        dy, dx = torch.randint(0, 2 * self.pad + 1, (2,), generator=generator).tolist()
        return padded[:, dy : dy + height, dx : dx + width]


class ImageTensorDataset(Dataset[tuple[Tensor, Tensor]]):
    """Images and labels held as tensors, with an optional per-sample transform.

    Args:
        images: Float tensor ``(N, C, H, W)`` with values in ``[0, 1]``.
        labels: Integer tensor ``(N,)``.
        transform: Applied to each image when it is read (augmentation).
        sample_ids: Stable identifiers of the samples (e.g. file names), for manifests.

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 1]))
        >>> len(ds), int(ds[2][1])
        (3, 1)
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        transform: Callable[[Tensor], Tensor] | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images.float()
        self.labels = labels.long()
        self.transform = transform
        self.sample_ids = (
            list(sample_ids) if sample_ids is not None else [str(i) for i in range(len(labels))]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    def subset(
        self, indices: Tensor | Sequence[int], transform: Callable[[Tensor], Tensor] | None = None
    ) -> ImageTensorDataset:
        """A new dataset with the given rows (a view of the same storage where possible)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensorDataset(
            self.images[idx],
            self.labels[idx],
            transform if transform is not None else self.transform,
            [self.sample_ids[i] for i in idx.tolist()],
        )

    def with_transform(self, transform: Callable[[Tensor], Tensor] | None) -> ImageTensorDataset:
        """The same samples with another transform (``None`` disables augmentation)."""
        return ImageTensorDataset(self.images, self.labels, transform, self.sample_ids)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image, read without decoding any sample."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


@dataclass
class DatasetBundle:
    """A labelled dataset with train/test splits and metadata.

    ``train`` and ``test`` may be any :class:`ImageTensorDataset`, including the lazily decoded
    subclasses (:class:`~delete.data.lazy_dataset.ByteImageDataset`,
    :class:`~delete.data.image_folder.ImageFileDataset`) that real datasets on disk use.
    """

    name: str
    train: ImageTensorDataset
    test: ImageTensorDataset
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        # Ask the dataset: lazily decoded datasets know their shape without materialising images.
        return self.train.image_shape
