"""Datasets by name: ``load_dataset("cifar10", root="~/data")``.

Built-in names: ``digits`` and ``mnist5k`` (bundled with installed packages, no ``root``),
``cifar10``, ``cifar100`` and ``imagefolder`` (files on disk under ``root``; never downloaded).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from delete.data.image_folder import load_image_folder
from delete.data.offline import load_digits, load_mnist5k
from delete.data.tensor_dataset import DatasetBundle
from delete.data.torchvision_sets import load_cifar10, load_cifar100
from delete.errors import DatasetError
from delete.registry import Registry

__all__ = ["register_dataset", "load_dataset", "list_datasets"]


@dataclass(frozen=True)
class _Entry:
    loader: Callable[..., DatasetBundle]
    needs_root: bool

    def __repr__(self) -> str:  # what a refused duplicate names
        return f"{self.loader.__module__}.{self.loader.__qualname__}"


#: Loaders by dataset name (same rules as the method, model and task registries).
_LOADERS: Registry[_Entry] = Registry("dataset", DatasetError)


def register_dataset(
    name: str, *, needs_root: bool
) -> Callable[[Callable[..., DatasetBundle]], Callable[..., DatasetBundle]]:
    """Register a loader; with ``needs_root`` it is called as ``loader(root, **kwargs)``.

    Raises:
        DuplicateRegistrationError: Another loader already holds ``name``.
    """

    def decorator(fn: Callable[..., DatasetBundle]) -> Callable[..., DatasetBundle]:
        _LOADERS.add(name, _Entry(fn, needs_root))
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Registered dataset names.

    Example:
        >>> list_datasets()
        ['cifar10', 'cifar100', 'digits', 'imagefolder', 'mnist5k']
    """
    return _LOADERS.names()


def load_dataset(
    name: str, root: str | os.PathLike[str] | None = None, **kwargs: Any
) -> DatasetBundle:
    """Load the dataset registered as ``name``.

    Args:
        name: One of :func:`list_datasets`.
        root: Where the files are (required for on-disk datasets, refused for bundled ones).
        **kwargs: Passed to the loader (e.g. ``augment``, ``seed``, ``image_size``).

    Raises:
        DatasetError: Unknown name, missing or superfluous ``root``, unknown option, or any
            problem with the files.

    Example:
        >>> load_dataset("cifar10")
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: dataset 'cifar10' is read from disk: pass root=<folder>
    """
    entry = _LOADERS.get(name)
    if entry.needs_root and root is None:
        raise DatasetError(f"dataset {name!r} is read from disk: pass root=<folder>")
    if not entry.needs_root and root is not None:
        raise DatasetError(f"dataset {name!r} ships with an installed package and takes no root")
    args: tuple[Any, ...] = (root,) if entry.needs_root else ()
    try:
        inspect.signature(entry.loader).bind(*args, **kwargs)
    except TypeError as exc:
        raise DatasetError(f"dataset {name!r}: {exc}") from exc
    return entry.loader(*args, **kwargs)


register_dataset("digits", needs_root=False)(load_digits)
register_dataset("mnist5k", needs_root=False)(load_mnist5k)
register_dataset("cifar10", needs_root=True)(load_cifar10)
register_dataset("cifar100", needs_root=True)(load_cifar100)
register_dataset("imagefolder", needs_root=True)(load_image_folder)
