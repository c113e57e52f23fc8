"""Class-per-folder image datasets (``torchvision.datasets.ImageFolder`` layout), decoded lazily.

``root/<class_name>/<image>``; classes are the sorted folder names and files are found with
torchvision's own scanner (same extensions, same order). Images are decoded, converted to RGB
(or grayscale) and resized to a fixed square (or ``(H, W)``) size when they are read, then
optionally normalised per channel (``(x - mean) / std``, as a team's model was trained on).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from delete.data.augment import RandomCropFlip
from delete.data.lazy_dataset import ByteImageDataset, LazyImageDataset, Transform
from delete.data.splits import stratified_split
from delete.data.tensor_dataset import DatasetBundle
from delete.errors import DatasetError

__all__ = ["ImageFileDataset", "load_image_folder"]


class ImageFileDataset(LazyImageDataset):
    """Image files decoded on read, resized to ``size`` ``(H, W)`` and scaled to ``[0, 1]``.

    Args:
        paths: One image file per sample.
        labels: Integer labels ``(N,)``.
        size: Output ``(height, width)``.
        grayscale: Decode to one channel instead of RGB.
        transform: Applied to each float image when it is read (augmentation).
        sample_ids: Stable identifiers (default: the paths).
        mean: Per-channel mean subtracted after scaling to ``[0, 1]`` (``None``: none).
        std: Per-channel standard deviation divided by after the mean (``None``: none).
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        labels: Tensor | Sequence[int],
        size: tuple[int, int],
        *,
        grayscale: bool = False,
        transform: Transform | None = None,
        sample_ids: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        super().__init__(labels, transform, sample_ids or [str(p) for p in self.paths])
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.size = (int(size[0]), int(size[1]))
        self.grayscale = grayscale
        self.mean, self.std = _check_normalisation(mean, std, 1 if grayscale else 3)
        # Built once: _read runs for every image of every epoch.
        self._norm = (
            None
            if self.mean is None or self.std is None
            else (torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None])
        )

    def _decode(self, index: int) -> np.ndarray:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as raw:
                img = raw.convert("L" if self.grayscale else "RGB")
                img = img.resize((self.size[1], self.size[0]), Image.Resampling.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"image file {path} cannot be decoded: {exc}") from exc
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    def _read(self, index: int) -> Tensor:
        image = torch.from_numpy(self._decode(index).copy()).float().div_(255.0)
        if self._norm is not None:
            image = (image - self._norm[0]) / self._norm[1]
        return image

    def _options(self) -> dict[str, Any]:
        return {"grayscale": self.grayscale, "mean": self.mean, "std": self.std}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.grayscale else 3), self.size[0], self.size[1]

    def subset(
        self, indices: Tensor | Sequence[int], transform: Transform | None = None
    ) -> ImageFileDataset:
        """A new dataset with the given rows (the transform is kept unless one is given)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return ImageFileDataset(
            [self.paths[i] for i in idx],
            self.labels[idx],
            self.size,
            transform=transform if transform is not None else self.transform,
            sample_ids=[self.sample_ids[i] for i in idx],
            **self._options(),
        )

    def with_transform(self, transform: Transform | None) -> ImageFileDataset:
        """The same files with another transform (``None`` disables augmentation)."""
        return ImageFileDataset(
            self.paths,
            self.labels,
            self.size,
            transform=transform,
            sample_ids=self.sample_ids,
            **self._options(),
        )

    def to_memory(self) -> ByteImageDataset:
        """Decode every file once into a uint8 :class:`ByteImageDataset` (same order and ids).

        Raises:
            DatasetError: The dataset normalises (uint8 bytes cannot hold normalised values).
        """
        if self.mean is not None:
            raise DatasetError("a normalised image folder cannot be held in memory as bytes")
        images = np.stack([self._decode(i) for i in range(len(self))]) if len(self) else None
        data = (
            torch.from_numpy(images)
            if images is not None
            else torch.empty((0, *self.image_shape), dtype=torch.uint8)
        )
        return ByteImageDataset(data, self.labels, self.transform, self.sample_ids)


def _check_normalisation(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """Validated ``(mean, std)``: both or neither, one value per channel, ``std > 0``."""
    if mean is None and std is None:
        return None, None
    if mean is None or std is None:
        raise DatasetError("normalisation needs both mean and std (or neither)")
    mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean_t) != channels or len(std_t) != channels:
        raise DatasetError(
            f"mean and std need {channels} value(s) each (one per channel), "
            f"got {len(mean_t)} and {len(std_t)}"
        )
    if min(std_t) <= 0:
        raise DatasetError(f"std values must be positive, got {list(std_t)}")
    return mean_t, std_t


def _scan(
    root: Path, class_to_idx: dict[str, int] | None
) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, [(path, label)]) with torchvision's ImageFolder rules."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist: expected {root}/<class_name>/<image>"
            f" with extensions {', '.join(IMG_EXTENSIONS)}"
        )
    try:
        classes, found = find_classes(str(root))
        if class_to_idx is not None:
            unknown = sorted(set(classes) - set(class_to_idx))
            if unknown:
                raise DatasetError(
                    f"image folder {root} has classes absent from the train folder: {unknown}"
                )
            found = {c: class_to_idx[c] for c in classes}
        samples = make_dataset(str(root), found, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"image folder {root}: {exc} (expected {root}/<class_name>/<image>)"
        ) from exc
    return classes, samples


def _as_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) < 1:
        raise DatasetError(f"image_size must be a positive int or (H, W), got {image_size!r}")
    return int(size[0]), int(size[1])


def load_image_folder(
    root: str | os.PathLike[str],
    image_size: int | tuple[int, int] = 32,
    *,
    test_root: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    grayscale: bool = False,
    in_memory: bool = False,
    name: str = "imagefolder",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DatasetBundle:
    """Images in class folders, as a :class:`DatasetBundle`.

    The test split comes from, in order: ``test_root``; ``root/train`` + ``root/test`` when both
    exist (then ``root/train`` holds the training classes); else a seeded stratified
    ``test_fraction`` of ``root``.

    Args:
        root: ``root/<class_name>/<image>`` (or ``root/train/...`` and ``root/test/...``).
        image_size: Output side (or ``(H, W)``); every image is resized to it.
        test_root: A separate folder of test images with the same class folder names
            (a subset of the training classes is allowed).
        test_fraction: Per-class held-out fraction when there is no separate test folder.
        seed: Seed of that split.
        augment: Random crop (pad ``side // 8``) + horizontal flip on the train split.
        grayscale: One channel instead of RGB.
        in_memory: Decode every image once into uint8 memory instead of on every read.
        name: The bundle's name.
        mean: Per-channel mean of the normalisation after scaling to ``[0, 1]``.
        std: Per-channel standard deviation of that normalisation.

    Raises:
        DatasetError: Missing folder, no class folders, no images, mismatched test classes.

    Example:
        >>> load_image_folder("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: image folder /nonexistent does not exist: expected ...
    """
    size = _as_size(image_size)
    train_dir = Path(root).expanduser()
    test_dir = Path(test_root).expanduser() if test_root is not None else None
    if test_dir is None and (train_dir / "train").is_dir() and (train_dir / "test").is_dir():
        train_dir, test_dir = train_dir / "train", train_dir / "test"
    if test_dir is None and not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be in (0, 1), got {test_fraction}")

    classes, samples = _scan(train_dir, None)
    class_to_idx = {c: i for i, c in enumerate(classes)}

    def _dataset(items: list[tuple[str, int]], base: Path) -> ImageFileDataset:
        paths = [p for p, _ in items]
        ids = [Path(p).relative_to(base).as_posix() for p in paths]
        labels = torch.tensor([label for _, label in items], dtype=torch.long)
        return ImageFileDataset(
            paths, labels, size, grayscale=grayscale, sample_ids=ids, mean=mean, std=std
        )

    full = _dataset(samples, train_dir)
    if test_dir is not None:
        train, test = full, _dataset(_scan(test_dir, class_to_idx)[1], test_dir)
    else:
        train_idx, test_idx = stratified_split(full.labels, test_fraction, seed)
        train, test = full.subset(train_idx), full.subset(test_idx)
    if augment:
        train = train.with_transform(RandomCropFlip(max(size) // 8))
    if in_memory:
        return DatasetBundle(name, train.to_memory(), test.to_memory(), classes)
    return DatasetBundle(name, train, test, classes)
