"""CIFAR-10 and CIFAR-100 read from disk in torchvision's layout; nothing is ever downloaded.

``root`` is what ``torchvision.datasets.CIFAR10(root)`` takes: the folder that holds the
extracted ``cifar-10-batches-py`` (``cifar-100-python``) directory; the batch directory itself
is accepted too. File names and checksums come from torchvision's dataset classes, but the
batches are parsed here, for two reasons:

* torchvision unpickles the batch files with plain ``pickle.load``, which runs any code a
  planted file names; this module resolves numpy's array globals only.
* torchvision refuses any file whose MD5 differs from the official archive's, which also rules
  out test fixtures and trimmed copies; here the check is opt-in (``verify_md5=True``).

Images stay uint8 (150 MB for CIFAR-10) and are converted to float in [0, 1] per read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from delete.data.augment import RandomCropFlip
from delete.data.lazy_dataset import ByteImageDataset
from delete.data.tensor_dataset import DatasetBundle
from delete.errors import DatasetError, one_line

__all__ = ["load_cifar10", "load_cifar100"]

_PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class _CifarLayout:
    """Where a CIFAR variant keeps its files and which keys hold labels and names."""

    name: str
    title: str
    folder: str
    train_files: tuple[tuple[str, str], ...]
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    label_key: str
    names_key: str

    @property
    def file_names(self) -> list[str]:
        return [f for f, _ in self.train_files + self.test_files] + [self.meta_file[0]]


def _layout(variant: str, coarse: bool = False) -> _CifarLayout:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if variant == "cifar10" else CIFAR100
    meta = cls.meta
    label_key = "labels" if variant == "cifar10" else "fine_labels"
    names_key = str(meta["key"])
    if coarse:
        label_key, names_key = "coarse_labels", "coarse_label_names"
    return _CifarLayout(
        name=variant if not coarse else f"{variant}-coarse",
        title="CIFAR-10" if variant == "cifar10" else "CIFAR-100",
        folder=cls.base_folder,
        train_files=tuple((str(f), str(m)) for f, m in cls.train_list),
        test_files=tuple((str(f), str(m)) for f, m in cls.test_list),
        meta_file=(str(meta["filename"]), str(meta["md5"])),
        label_key=label_key,
        names_key=names_key,
    )


def _locate(root: str | os.PathLike[str], layout: _CifarLayout) -> Path:
    base = Path(root).expanduser()
    for candidate in (base / layout.folder, base):
        if (candidate / layout.meta_file[0]).is_file():
            return candidate
    raise DatasetError(
        f"{layout.title} not found at {base}: expected {base / layout.folder}/ holding"
        f" {', '.join(layout.file_names)} (torchvision's extracted archive; nothing is downloaded)"
    )


def _read_pickle(path: Path, md5: str | None, title: str) -> dict[str, Any]:
    from delete.data._safe_pickle import load_array_pickle

    if not path.is_file():
        raise DatasetError(f"{title} file {path} is missing")
    if md5 is not None:
        from torchvision.datasets.utils import check_integrity

        if not check_integrity(str(path), md5):
            raise DatasetError(f"{title} file {path} does not match the official MD5 {md5}")
    try:
        with open(path, "rb") as handle:
            payload = load_array_pickle(handle)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a bad file
        raise DatasetError(f"{title} file {path} cannot be read: {one_line(exc)}") from exc
    if not isinstance(payload, dict):
        raise DatasetError(f"{title} file {path} holds {type(payload).__name__}, not a dict")
    # Python 2 pickles read with encoding="latin1" give str keys; bytes keys are normalised too.
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in payload.items()}


def _read_split(
    base: Path, files: tuple[tuple[str, str], ...], layout: _CifarLayout, verify_md5: bool
) -> tuple[np.ndarray, np.ndarray]:
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for file_name, md5 in files:
        path = base / file_name
        batch = _read_pickle(path, md5 if verify_md5 else None, layout.title)
        if "data" not in batch or layout.label_key not in batch:
            raise DatasetError(
                f"{layout.title} file {path} lacks 'data' or {layout.label_key!r}"
                f" (has {sorted(batch)})"
            )
        data = np.asarray(batch["data"])
        batch_labels = np.asarray(batch[layout.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
            raise DatasetError(
                f"{layout.title} file {path}: 'data' must be uint8 (N, {_PIXELS}),"
                f" got {data.dtype} {data.shape}"
            )
        if batch_labels.shape != (len(data),):
            raise DatasetError(
                f"{layout.title} file {path}: {len(data)} images but {batch_labels.size} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _load_cifar(
    layout: _CifarLayout, root: str | os.PathLike[str], augment: bool, verify_md5: bool
) -> DatasetBundle:
    base = _locate(root, layout)
    meta_name, meta_md5 = layout.meta_file
    meta = _read_pickle(base / meta_name, meta_md5 if verify_md5 else None, layout.title)
    if layout.names_key not in meta:
        raise DatasetError(f"{layout.title} file {base / meta_name} lacks {layout.names_key!r}")
    class_names = [str(n) for n in meta[layout.names_key]]
    splits = []
    for split, files in (("train", layout.train_files), ("test", layout.test_files)):
        images, labels = _read_split(base, files, layout, verify_md5)
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise DatasetError(
                f"{layout.title} {split} labels span {labels.min()}..{labels.max()}"
                f" but {len(class_names)} class names are listed"
            )
        ids = [f"{layout.name}-{split}-{i:05d}" for i in range(len(labels))]
        transform = RandomCropFlip(4) if augment and split == "train" else None
        splits.append(
            ByteImageDataset(torch.from_numpy(images), torch.from_numpy(labels), transform, ids)
        )
    return DatasetBundle(layout.name, splits[0], splits[1], class_names)


def load_cifar10(
    root: str | os.PathLike[str], augment: bool = True, *, verify_md5: bool = False
) -> DatasetBundle:
    """CIFAR-10 (50,000 train / 10,000 test, 3x32x32) from torchvision's on-disk layout.

    Args:
        root: Folder holding ``cifar-10-batches-py`` (or that folder itself).
        augment: Random crop (pad 4) + horizontal flip on the train split.
        verify_md5: Check every file against the official archive's MD5.

    Raises:
        DatasetError: Files missing, unreadable, not array pickles, or inconsistent.

    Example:
        >>> load_cifar10("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: CIFAR-10 not found at /nonexistent: expected ...
    """
    return _load_cifar(_layout("cifar10"), root, augment, verify_md5)


def load_cifar100(
    root: str | os.PathLike[str],
    augment: bool = True,
    *,
    coarse: bool = False,
    verify_md5: bool = False,
) -> DatasetBundle:
    """CIFAR-100 (50,000 train / 10,000 test, 3x32x32) from torchvision's on-disk layout.

    Args:
        root: Folder holding ``cifar-100-python`` (or that folder itself).
        augment: Random crop (pad 4) + horizontal flip on the train split.
        coarse: Use the 20 superclasses ("CIFAR-20") instead of the 100 fine classes.
        verify_md5: Check every file against the official archive's MD5.

    Raises:
        DatasetError: Files missing, unreadable, not array pickles, or inconsistent.

    Example:
        >>> load_cifar100("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: CIFAR-100 not found at /nonexistent: expected ...
    """
    return _load_cifar(_layout("cifar100", coarse), root, augment, verify_md5)
