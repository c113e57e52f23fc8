"""Hold a loader's images in memory when every pass over it yields the same ones.

DELETE's teacher is frozen, so on a forget set without random augmentation its logits are
the same every epoch and need computing once (``DeleteConfig.cache_teacher``). Whether a
loader augments cannot be read from the loader itself (the transform may live anywhere in
a user's dataset), so :func:`replay_in_memory` compares two passes: the same images with the
same labels, in any order, means nothing random touches them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["MAX_REPLAY_BYTES", "Replay", "hold_in_memory", "replay_in_memory"]

log = logging.getLogger(__name__)

#: Largest forget set (its inputs' bytes) held in memory without being asked to: 1 GiB, the
#: 1,300 images of an ImageNet class at 224x224 in float32 take 0.8 GiB.
MAX_REPLAY_BYTES = 1 << 30


@dataclass(frozen=True)
class Replay:
    """One pass of a loader, held in memory (on the CPU).

    Attributes:
        inputs: Every batch's inputs, concatenated.
        labels: Every batch's labels, concatenated.
        batch_size: The largest batch the loader yielded.
    """

    inputs: Tensor
    labels: Tensor
    batch_size: int


def _rows(tensor: Tensor) -> Tensor:
    """``tensor`` as one row of raw bytes per sample (any dtype, any device)."""
    flat = tensor.detach().cpu().contiguous().reshape(len(tensor), -1)
    return flat.view(torch.uint8) if flat.numel() else flat.to(torch.uint8)


def _fingerprints(inputs: Tensor, labels: Tensor) -> Iterator[bytes]:
    """One digest per sample of its exact bytes and its label's."""
    images, marks = _rows(inputs), _rows(torch.as_tensor(labels).reshape(len(inputs), -1))
    for image, mark in zip(images, marks, strict=True):
        digest = hashlib.blake2b(image.numpy().tobytes(), digest_size=16)
        digest.update(mark.numpy().tobytes())
        yield digest.digest()


def _one_pass(
    loader: Iterable[tuple[Tensor, Tensor]], max_bytes: int | None, *, digests: bool = True
) -> tuple[Replay | None, Counter[bytes]]:
    """One pass held in memory (``None`` when empty or over ``max_bytes``), and a digest of
    every image when ``digests``."""
    inputs: list[Tensor] = []
    labels: list[Tensor] = []
    seen: Counter[bytes] = Counter()
    held, batch_size = 0, 0
    for x, y in loader:
        held += x.element_size() * x.numel()
        if max_bytes is not None and held > max_bytes:
            log.info("forget set not held in memory: over %d bytes", max_bytes)
            return None, seen
        y = torch.as_tensor(y)
        batch_size = max(batch_size, len(x))
        inputs.append(x.detach().cpu())
        labels.append(y.detach().cpu())
        if digests:
            seen.update(_fingerprints(x, y))
    if not inputs:
        return None, seen
    if len({x.shape[1:] for x in inputs}) > 1:  # images of several sizes: read as they come
        log.info("forget set not held in memory: its images differ in size")
        return None, seen
    return Replay(torch.cat(inputs), torch.cat(labels), batch_size), seen


def hold_in_memory(loader: Iterable[tuple[Tensor, Tensor]]) -> Replay | None:
    """One pass of ``loader`` held in memory, unchecked (the caller knows it does not
    augment); ``None`` when it is empty.

    Example:
        >>> batches = [(torch.ones(2, 3), torch.tensor([0, 1]))]
        >>> batches.append((torch.zeros(1, 3), torch.tensor([2])))
        >>> held = hold_in_memory(batches)
        >>> held.inputs.shape, held.labels.tolist(), held.batch_size
        (torch.Size([3, 3]), [0, 1, 2], 2)
    """
    return _one_pass(loader, None, digests=False)[0]


def replay_in_memory(
    loader: Iterable[tuple[Tensor, Tensor]], *, max_bytes: int | None = MAX_REPLAY_BYTES
) -> Replay | None:
    """One pass of ``loader`` held in memory when a second pass yields exactly the same
    images with the same labels (in any order), else ``None``: random augmentation, sampling
    with replacement or a shuffled ``drop_last`` make the passes differ. Inputs larger than
    ``max_bytes`` are not held (``None``); the second pass keeps only a digest per image.

    Example:
        >>> data = torch.arange(12.0).reshape(4, 3)
        >>> labels = torch.tensor([0, 1, 2, 3])
        >>> fixed = [(data[:2], labels[:2]), (data[2:], labels[2:])]
        >>> replay_in_memory(fixed).inputs.shape
        torch.Size([4, 3])
        >>> class Noisy:  # a random view of the same images every pass
        ...     def __iter__(self):
        ...         yield data + torch.rand_like(data), labels
        >>> replay_in_memory(Noisy()) is None
        True
        >>> replay_in_memory(fixed, max_bytes=16) is None  # 48 bytes of inputs
        True
    """
    held, first = _one_pass(loader, max_bytes)
    if held is None:
        return None
    for x, y in loader:
        for mark in _fingerprints(x, torch.as_tensor(y)):
            if first[mark] == 0:
                log.info("forget set not held in memory: two passes yielded different images")
                return None
            first[mark] -= 1
    if any(first.values()):
        log.info("forget set not held in memory: two passes yielded different images")
        return None
    return held
