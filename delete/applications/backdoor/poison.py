"""BadNets-style data poisoning: stamp a trigger patch on some training images, relabel them.

Gu et al., BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain,
2017. A model trained on the poisoned set behaves normally on clean images and predicts the
attacker's *target* label whenever the trigger is present.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from delete.data import ImageTensorDataset

__all__ = [
    "BadNetsTrigger",
    "BlendedTrigger",
    "PoisonedDataset",
    "Trigger",
    "poison_dataset",
    "triggered_copy",
]


@dataclass(frozen=True)
class BadNetsTrigger:
    """A square patch of constant value near the bottom-right corner.

    Attributes:
        size: Side of the square, in pixels.
        value: Pixel value of the patch (1.0 = white for images in ``[0, 1]``).
        margin: Pixels between the patch and the bottom/right image border.

    Example:
        >>> out = BadNetsTrigger(size=2, margin=1).apply(torch.zeros(1, 1, 5, 5))
        >>> out[0, 0].tolist()[2:]
        [[0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0]]
    """

    size: int = 3
    value: float = 1.0
    margin: int = 1

    def __post_init__(self) -> None:
        if self.size < 1 or self.margin < 0:
            raise ValueError(f"trigger size must be >= 1 and margin >= 0, got {self}")

    def apply(self, images: Tensor) -> Tensor:
        """A copy of ``images`` ``(N, C, H, W)`` (or ``(C, H, W)``) with the patch stamped on."""
        height, width = images.shape[-2:]
        if self.size + self.margin > min(height, width):
            raise ValueError(
                f"a {self.size}px trigger with margin {self.margin} does not fit {height}x{width}"
            )
        out = images.clone()
        bottom, right = height - self.margin, width - self.margin
        out[..., bottom - self.size : bottom, right - self.size : right] = self.value
        return out


@dataclass(frozen=True)
class BlendedTrigger:
    """A fixed random pattern blended over the whole image (Chen et al. 2017, "Targeted
    Backdoor Attacks on Deep Learning Systems Using Data Poisoning").

    ``x' = (1 - alpha) * x + alpha * pattern``, with ``pattern`` uniform noise in ``[0, 1]``
    drawn once from ``seed`` for the image size: unlike a patch, it touches every pixel, so a
    defence that only learned "ignore the corner" does not remove it.

    Attributes:
        alpha: Blend weight of the pattern.
        seed: Seed of the pattern.

    Example:
        >>> out = BlendedTrigger(alpha=0.5).apply(torch.zeros(2, 1, 3, 3))
        >>> bool(torch.equal(out[0], out[1])), float(out.max()) <= 0.5
        (True, True)
    """

    alpha: float = 0.2
    seed: int = 1234

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"blend alpha must be in (0, 1), got {self.alpha}")

    def pattern(self, shape: tuple[int, ...]) -> Tensor:
        """The noise pattern ``(C, H, W)`` for images of that shape (always the same)."""
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(shape, generator=generator)

    def apply(self, images: Tensor) -> Tensor:
        """A copy of ``images`` ``(N, C, H, W)`` (or ``(C, H, W)``) with the pattern blended in."""
        pattern = self.pattern(tuple(images.shape[-3:])).to(images.dtype)
        return (1.0 - self.alpha) * images + self.alpha * pattern


#: What a poisoning attack stamps on an image.
Trigger = BadNetsTrigger | BlendedTrigger


@dataclass
class PoisonedDataset:
    """A poisoned training set and which of its samples carry the trigger.

    Attributes:
        dataset: All samples; the poisoned ones are triggered and labelled ``target``.
        poisoned: Indices (into ``dataset``) of the poisoned samples, sorted.
        original_labels: The true labels of every sample (before relabelling).
        target: The attacker's target label.
    """

    dataset: ImageTensorDataset
    poisoned: Tensor
    original_labels: Tensor
    target: int


def poison_dataset(
    dataset: ImageTensorDataset,
    target: int,
    rate: float,
    trigger: Trigger = BadNetsTrigger(),
    seed: int = 0,
) -> PoisonedDataset:
    """Trigger and relabel ``rate`` of the samples, drawn at random among non-target samples.

    Args:
        dataset: Clean training data (its transform and sample ids are kept).
        target: Label the backdoor should produce.
        rate: Fraction of the *whole* dataset to poison, in ``(0, 1)``.
        trigger: The patch to stamp.
        seed: Seed of the choice of samples.

    Raises:
        ValueError: ``rate`` out of range, or fewer non-target samples than requested.

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(10, 1, 6, 6), torch.tensor([0, 1] * 5))
        >>> p = poison_dataset(ds, target=0, rate=0.2, seed=0)
        >>> len(p.poisoned), p.dataset.labels[p.poisoned].tolist(), float(p.dataset.images.sum())
        (2, [0, 0], 18.0)
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"poison rate must be in (0, 1), got {rate}")
    count = max(1, round(rate * len(dataset)))
    candidates = torch.nonzero(dataset.labels != target).flatten()
    if count > len(candidates):
        raise ValueError(f"cannot poison {count} samples: only {len(candidates)} are non-target")
    generator = torch.Generator().manual_seed(seed)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]].sort().values
    images = dataset.images.clone()
    labels = dataset.labels.clone()
    images[chosen] = trigger.apply(images[chosen])
    labels[chosen] = target
    poisoned = ImageTensorDataset(images, labels, dataset.transform, dataset.sample_ids)
    return PoisonedDataset(poisoned, chosen, dataset.labels.clone(), target)


def triggered_copy(
    dataset: ImageTensorDataset, trigger: Trigger, *, exclude_label: int | None = None
) -> ImageTensorDataset:
    """Every sample (optionally except those labelled ``exclude_label``) with the trigger on.

    Labels stay the *true* labels, so attack success is "prediction == target".

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(4, 1, 6, 6), torch.tensor([0, 1, 2, 0]))
        >>> triggered_copy(ds, BadNetsTrigger(), exclude_label=0).labels.tolist()
        [1, 2]
    """
    keep = (
        torch.arange(len(dataset))
        if exclude_label is None
        else torch.nonzero(dataset.labels != exclude_label).flatten()
    )
    subset = dataset.subset(keep)
    return ImageTensorDataset(
        trigger.apply(subset.images),
        subset.labels,
        None,
        [f"{s}+trigger" for s in subset.sample_ids],
    )
