"""Any loader's batches as ``(inputs, labels)`` pairs, the one shape the engine reads.

Loaders from outside the project yield more than pairs: a dataset that also returns each
sample's index gives ``(images, labels, index)``, and Hugging Face-style datasets give
mappings such as ``{"pixel_values": ..., "labels": ...}``. :func:`as_pair` reads the images and
labels out of each of these; anything else is refused in one line that names the loader and
what it yielded, instead of an unpacking error deep inside training.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from delete.errors import DatasetError

__all__ = ["INPUT_KEYS", "LABEL_KEYS", "PairLoader", "as_pair"]

#: Keys a mapping batch may hold its inputs under, in the order they are looked up.
INPUT_KEYS = ("pixel_values", "image", "images", "img", "input", "inputs", "x")
#: Keys a mapping batch may hold its labels under, in the order they are looked up.
LABEL_KEYS = ("labels", "label", "target", "targets", "y")


def _describe(batch: object) -> str:
    if isinstance(batch, Mapping):
        return f"a mapping with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} item(s)"
    return f"a {type(batch).__name__}"


def _from_mapping(batch: Mapping[str, Any]) -> tuple[Any, Any] | None:
    inputs = next((batch[k] for k in INPUT_KEYS if k in batch), None)
    labels = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    return None if inputs is None or labels is None else (inputs, labels)


def as_pair(batch: object, what: str = "loader") -> tuple[Tensor, Tensor]:
    """``(inputs, labels)`` from one batch: a pair, a longer tuple (extra items such as sample
    indices are dropped) or a mapping with one of :data:`INPUT_KEYS` and of :data:`LABEL_KEYS`.

    Args:
        batch: One batch as a loader yielded it.
        what: The loader's name in the error message (``"forget set"``...).

    Raises:
        DatasetError: The batch holds no inputs tensor and labels, or is a single sample (a
            dataset given where a loader belongs).

    Example:
        >>> x, y = torch.zeros(2, 1, 4, 4), torch.tensor([3, 3])
        >>> as_pair((x, y, torch.tensor([7, 9])))[1].tolist()
        [3, 3]
        >>> as_pair({"pixel_values": x, "labels": [3, 3]})[1].tolist()
        [3, 3]
        >>> as_pair([x], "forget set")
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: the forget set yields batches that are a list of 1 item(s); \
expected (inputs, labels), a longer tuple starting with them, or a mapping with one of \
'pixel_values', 'image', 'images', 'img', 'input', 'inputs', 'x' and one of 'labels', \
'label', 'target', 'targets', 'y'
    """
    found: tuple[Any, Any] | None = None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        found = (batch[0], batch[1])
    elif isinstance(batch, Mapping):
        found = _from_mapping(batch)
    if found is None or not isinstance(found[0], Tensor):
        shown = "a non-tensor input" if found is not None else _describe(batch)
        raise DatasetError(
            f"the {what} yields batches that are {shown}; expected (inputs, labels), a longer "
            f"tuple starting with them, or a mapping with one of "
            f"{', '.join(map(repr, INPUT_KEYS))} and one of {', '.join(map(repr, LABEL_KEYS))}"
        )
    inputs, labels = found
    if not isinstance(labels, Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DatasetError(
                f"the {what} yields labels of type {type(labels).__name__} that are not "
                f"class indices: {exc}"
            ) from None
    if labels.dim() == 0:
        # A Dataset passed where a loader belongs yields one (image, label) at a time; a model
        # then reads the image's channels as a batch and fails far from here, or worse, runs.
        raise DatasetError(
            f"the {what} yields single samples (a label with no batch dimension), not batches;"
            " pass a DataLoader over the dataset, e.g. "
            "delete.training.make_loader(dataset, 64, shuffle=True)"
        )
    return inputs, labels


class PairLoader:
    """``loader`` with every batch read through :func:`as_pair`.

    Its length and the attributes that count samples (``sampler``, ``batch_size``,
    ``drop_last``, ``dataset``) are the wrapped loader's, so a ``DataLoader`` keeps being
    counted without a pass over it.

    Example:
        >>> batches = [(torch.zeros(2, 3), torch.tensor([1, 1]), torch.tensor([0, 1]))]
        >>> [tuple(y.tolist()) for _, y in PairLoader(batches, "forget set")], len(
        ...     PairLoader(batches))
        ([(1, 1)], 1)
    """

    def __init__(self, loader: Iterable[Any], what: str = "loader") -> None:
        self.loader = loader
        self.what = what

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self.loader:
            yield as_pair(batch, self.what)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]  # TypeError where it has none

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes PairLoader lacks: the wrapped loader's own.
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)

    @classmethod
    def wrap(cls, loader: Iterable[Any] | None, what: str) -> PairLoader | None:
        """``loader`` wrapped once (``None`` stays ``None``; a ``PairLoader`` is kept)."""
        if loader is None or isinstance(loader, PairLoader):
            return loader
        return cls(loader, what)
