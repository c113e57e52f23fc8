"""Helpers shared by several baseline methods: re-initialisation, batch mixing, random labels.

These are private building blocks; methods stay one-per-file and the engine stays the only loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence, Sized

import torch
from torch import Tensor, nn

from delete.methods.base import Batch, DataLoaderLike

__all__: list[str] = []


def _num_batches(loader: DataLoaderLike) -> int:
    """Batches in one pass of ``loader``: ``len`` when it has one, else counted by iterating.

    Example:
        >>> _num_batches([(torch.zeros(2), torch.zeros(2))] * 3)
        3
    """
    if isinstance(loader, Sized):
        return len(loader)
    return sum(1 for _ in loader)


def _seed_from(generator: torch.Generator) -> int:
    """A fresh 62-bit seed drawn from ``generator`` (so one generator seeds everything)."""
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _reinitialize(module: nn.Module, seed: int) -> int:
    """Re-draw the weights of every submodule that has ``reset_parameters``, reproducibly.

    BatchNorm layers also reset their running statistics. Parameters of modules without
    ``reset_parameters`` (custom layers) keep their values.

    Returns:
        How many submodules were reset.

    Example:
        >>> a, b = nn.Linear(3, 2), nn.Linear(3, 2)
        >>> _reinitialize(a, seed=1), _reinitialize(b, seed=1)
        (1, 1)
        >>> bool(torch.equal(a.weight, b.weight))
        True
    """
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    count = 0
    # fork_rng: re-initialising must not consume the caller's global random stream.
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for sub in module.modules():
            reset = getattr(sub, "reset_parameters", None)
            if callable(reset):
                reset()
                count += 1
    return count


def _num_samples(loader: DataLoaderLike) -> int:
    """Samples in one pass of ``loader``: from a ``DataLoader``'s sampler, else counted.

    Example:
        >>> _num_samples([(torch.zeros(2), torch.zeros(2))] * 3)
        6
    """
    sampler = getattr(loader, "sampler", None)
    batch_size = getattr(loader, "batch_size", None)
    if isinstance(sampler, Sized) and getattr(loader, "batch_sampler", None) is not None:
        count = len(sampler)
        if getattr(loader, "drop_last", False) and isinstance(batch_size, int) and batch_size > 0:
            count -= count % batch_size
        return count
    return sum(len(targets) for _, targets in loader)


def _batch_size(loader: DataLoaderLike) -> int:
    """A ``DataLoader``'s batch size, else the size of the loader's first batch.

    Example:
        >>> _batch_size([(torch.zeros(5, 2), torch.zeros(5))])
        5
    """
    size = getattr(loader, "batch_size", None)
    if isinstance(size, int) and size > 0:
        return size
    for _, targets in loader:
        return max(len(targets), 1)
    return 1


class _SampleQueue:
    """Hands out samples of a batch stream in order, pulling batches as needed."""

    def __init__(self, batches: Iterable[tuple[Tensor, Tensor]]) -> None:
        self._batches = iter(batches)
        self._inputs: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._available = 0

    def take(self, count: int) -> tuple[Tensor, Tensor] | None:
        """Up to ``count`` samples (fewer when the stream ends), or ``None`` if none are left."""
        while self._available < count:
            item = next(self._batches, None)
            if item is None:
                break
            self._inputs.append(item[0])
            self._targets.append(item[1])
            self._available += len(item[1])
        if self._available == 0 or count <= 0:
            return None
        inputs, targets = torch.cat(self._inputs), torch.cat(self._targets)
        count = min(count, self._available)
        self._inputs, self._targets = [inputs[count:]], [targets[count:]]
        self._available -= count
        return inputs[:count], targets[:count]


def _mix_samples(
    forget: Iterable[tuple[Tensor, Tensor]],
    retain: Iterable[tuple[Tensor, Tensor]],
    counts: tuple[int, int],
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    """Mixed forget/retain batches, as if the two datasets were concatenated and shuffled.

    A random arrangement of ``counts[0]`` forget and ``counts[1]`` retain slots is cut into
    batches of ``batch_size``; each batch takes its forget and retain samples, in order, from
    the two (already shuffled) streams. Mixed batches matter with BatchNorm: a batch of forget
    images alone is normalised by statistics the model never sees at test time. Wrong counts
    are tolerated: a stream that ends early leaves its slots empty, leftovers are appended.

    Yields:
        ``Batch("mixed", inputs, targets, {"forget": bool mask of the forget samples})``.

    Example:
        >>> f = [(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))] * 2
        >>> r = [(torch.ones(3, 1), torch.ones(3, dtype=torch.long))] * 2
        >>> out = list(_mix_samples(f, r, (4, 6), 5, torch.Generator().manual_seed(0)))
        >>> [len(b.targets) for b in out], sum(int(b.extra["forget"].sum()) for b in out)
        ([5, 5], 4)
    """
    queues = (_SampleQueue(forget), _SampleQueue(retain))
    slots = torch.cat(
        [torch.zeros(counts[0], dtype=torch.long), torch.ones(counts[1], dtype=torch.long)]
    )
    slots = slots[torch.randperm(len(slots), generator=generator)]
    needs = [slots[i : i + batch_size] for i in range(0, len(slots), batch_size)]
    wanted = [(int((chunk == 0).sum()), int((chunk == 1).sum())) for chunk in needs]
    # Leftovers of a stream longer than announced are drained in extra batches.
    drain = [(batch_size, 0), (0, batch_size)]
    for n_forget, n_retain in wanted:
        batch = _make_mixed(queues[0].take(n_forget), queues[1].take(n_retain))
        if batch is not None:
            yield batch
    for n_forget, n_retain in drain:
        while (
            batch := _make_mixed(queues[0].take(n_forget), queues[1].take(n_retain))
        ) is not None:
            yield batch


def _make_mixed(
    forget: tuple[Tensor, Tensor] | None, retain: tuple[Tensor, Tensor] | None
) -> Batch | None:
    parts = [(p, flag) for p, flag in ((forget, True), (retain, False)) if p is not None]
    if not parts:
        return None
    inputs = torch.cat([p[0] for p, _ in parts])
    targets = torch.cat([p[1] for p, _ in parts])
    mask = torch.cat([torch.full((len(p[1]),), flag, dtype=torch.bool) for p, flag in parts])
    return Batch("mixed", inputs, targets, {"forget": mask})


def _random_other_labels(
    targets: Tensor, allowed: Sequence[int], generator: torch.Generator
) -> Tensor:
    """Uniform random labels from ``allowed``, never equal to the sample's own label.

    Example:
        >>> y = torch.tensor([0, 0, 1, 2])
        >>> new = _random_other_labels(y, [1, 2], torch.Generator().manual_seed(0))
        >>> bool((new != y).all()) and set(new.tolist()) <= {1, 2}
        True
    """
    pool = torch.as_tensor(list(allowed), dtype=torch.long)
    if len(pool) == 0:
        raise ValueError("no class is left to draw random labels from")
    cpu_targets = targets.detach().cpu().long()
    # Per sample, the candidates are ``pool`` minus its own label: draw a rank among them.
    own_in_pool = (cpu_targets[:, None] == pool[None, :]).any(1)
    choices = len(pool) - own_in_pool.long()
    if bool((choices == 0).any()):
        raise ValueError("a sample's own label is the only class left to draw from")
    rank = (torch.rand(len(cpu_targets), generator=generator) * choices).long()
    rank = torch.minimum(rank, choices - 1)
    # Skip over the own label: ranks at or above its position shift up by one.
    own_pos = (cpu_targets[:, None] == pool[None, :]).long().argmax(1)
    rank = rank + (own_in_pool & (rank >= own_pos)).long()
    return pool[rank].to(targets.device)


def _cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine annealing from ``base_lr`` to 0 over ``total_steps`` steps.

    Example:
        >>> _cosine_lr(1.0, 0, 10), _cosine_lr(1.0, 5, 10), _cosine_lr(1.0, 10, 10)
        (1.0, 0.5, 0.0)
    """
    progress = min(max(step, 0), total_steps) / max(total_steps, 1)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
