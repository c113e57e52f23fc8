"""Image datasets that decode one sample per read instead of holding float tensors.

CIFAR-10 as float32 is 600 MB; as uint8 it is 150 MB. :class:`ByteImageDataset` keeps the bytes
and converts a sample to float in [0, 1] when it is read. Both classes here subclass
:class:`~delete.data.tensor_dataset.ImageTensorDataset`, so every consumer of that class keeps
working; reading ``.images`` materialises (and caches) the float tensor for code that needs all
images at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from delete.data.tensor_dataset import ImageTensorDataset

__all__ = ["LazyImageDataset", "ByteImageDataset"]

Transform = Callable[[Tensor], Tensor]


class LazyImageDataset(ImageTensorDataset, ABC):
    """Base of datasets that produce each float image on read.

    Subclasses implement :meth:`_read` (one image, float ``(C, H, W)`` in ``[0, 1]``, before the
    transform), :attr:`image_shape`, :meth:`subset` and :meth:`with_transform`.
    """

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        transform: Transform | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        # ImageTensorDataset.__init__ would need the dense float tensor this class exists to avoid.
        Dataset.__init__(self)
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if self.labels.dim() != 1:
            raise ValueError(f"labels must be (N,), got {tuple(self.labels.shape)}")
        self.transform = transform
        n = len(self.labels)
        self.sample_ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(n)]
        if len(self.sample_ids) != n:
            raise ValueError(f"{n} labels but {len(self.sample_ids)} sample ids")
        self._dense: Tensor | None = None

    @abstractmethod
    def _read(self, index: int) -> Tensor:
        """Image ``index`` as float ``(C, H, W)`` in ``[0, 1]``, without the transform."""

    @property
    @abstractmethod
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self._read(int(index))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]

    @property
    def images(self) -> Tensor:  # type: ignore[override]
        """Every image as one float ``(N, C, H, W)`` tensor, built on first access and cached.

        This costs the memory the lazy storage saves; iterate the dataset instead where possible.
        """
        if self._dense is None:
            if len(self) == 0:
                self._dense = torch.empty((0, *self.image_shape))
            else:
                self._dense = torch.stack([self._read(i) for i in range(len(self))])
        return self._dense

    @images.setter
    def images(self, value: Tensor) -> None:
        raise AttributeError(f"{type(self).__name__}.images is derived from its storage; read-only")


class ByteImageDataset(LazyImageDataset):
    """uint8 images ``(N, C, H, W)`` in 0..255, read as float in ``[0, 1]`` one at a time.

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: Integer labels ``(N,)``.
        transform: Applied to each float image when it is read (augmentation).
        sample_ids: Stable identifiers of the samples, for manifests.

    Example:
        >>> ds = ByteImageDataset(torch.full((2, 1, 2, 2), 255, dtype=torch.uint8), [0, 1])
        >>> image, label = ds[1]
        >>> image.dtype, float(image.max()), int(label), ds.image_shape
        (torch.float32, 1.0, 1, (1, 2, 2))
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int],
        transform: Transform | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        super().__init__(labels, transform, sample_ids)
        if len(images) != len(self.labels):
            raise ValueError(f"{len(images)} images but {len(self.labels)} labels")
        self.byte_images = images

    def _read(self, index: int) -> Tensor:
        return self.byte_images[index].float().div_(255.0)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.byte_images.shape[1:]
        return int(c), int(h), int(w)

    def subset(
        self, indices: Tensor | Sequence[int], transform: Transform | None = None
    ) -> ByteImageDataset:
        """A new dataset with the given rows (the transform is kept unless one is given)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ByteImageDataset(
            self.byte_images[idx],
            self.labels[idx],
            transform if transform is not None else self.transform,
            [self.sample_ids[i] for i in idx.tolist()],
        )

    def with_transform(self, transform: Transform | None) -> ByteImageDataset:
        """The same samples, sharing storage, with another transform (``None`` disables it)."""
        return ByteImageDataset(self.byte_images, self.labels, transform, self.sample_ids)
