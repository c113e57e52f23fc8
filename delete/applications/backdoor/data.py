"""The backdoor task's data: a clean dataset, its BadNets-poisoned training set, and the
defender's knowledge (which poisoned samples are known)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from delete.applications._mnist import _mnist5k
from delete.applications.backdoor.poison import (
    BadNetsTrigger,
    BlendedTrigger,
    PoisonedDataset,
    Trigger,
    poison_dataset,
    triggered_copy,
)
from delete.data import DatasetBundle, ImageTensorDataset, load_dataset

__all__ = ["BackdoorData", "load_backdoor_data"]


@dataclass
class BackdoorData:
    """A clean dataset, its poisoned training set, and the defender's knowledge.

    Attributes:
        clean: The clean dataset (train and test splits).
        poisoned: The poisoned training set and the indices of its poisoned samples.
        known: Indices (into the poisoned training set) of the poisoned samples the defender
            has identified: the forget set.
        trigger: The trigger patch.
    """

    clean: DatasetBundle
    poisoned: PoisonedDataset
    known: torch.Tensor
    trigger: Trigger

    @property
    def name(self) -> str:
        return f"{self.clean.name}-badnets"

    @property
    def target(self) -> int:
        return self.poisoned.target

    @property
    def train(self) -> ImageTensorDataset:
        """The poisoned training set the original model is trained on."""
        return self.poisoned.dataset

    @property
    def test(self) -> ImageTensorDataset:
        """Clean test images."""
        return self.clean.test

    @property
    def triggered_test(self) -> ImageTensorDataset:
        """Test images of every non-target class with the trigger, labelled with the true class."""
        return triggered_copy(self.clean.test, self.trigger, exclude_label=self.target)

    @property
    def class_names(self) -> list[str]:
        return self.clean.class_names

    @property
    def num_classes(self) -> int:
        return self.clean.num_classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.clean.image_shape


def load_backdoor_data(
    *,
    dataset: str = "mnist5k",
    root: str | os.PathLike[str] | None = None,
    target: int = 0,
    poison_rate: float = 0.05,
    known_fraction: float = 0.01,
    trigger_size: int = 3,
    attack: str = "badnets",
    blend_alpha: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    bundle: DatasetBundle | None = None,
) -> BackdoorData:
    """Poison a dataset BadNets-style and pick the defender's known poisoned samples.

    Args:
        dataset: A name from :func:`delete.data.list_datasets` (default: real MNIST-5k).
        root: Folder of an on-disk dataset.
        target: The attacker's target label (the class DELETE forgets on triggered inputs).
        poison_rate: Fraction of the training set the attacker poisons.
        known_fraction: Fraction of the *training set* the defender knows to be poisoned
            (drawn from the poisoned samples); at most ``poison_rate``.
        trigger_size: Side of the white square trigger (``attack="badnets"``).
        attack: ``badnets`` (a white patch) or ``blended`` (a fixed noise pattern blended
            over the whole image with weight ``blend_alpha``, Chen et al. 2017).
        blend_alpha: The blended trigger's weight.
        seed: Seed of the split, the poisoning and the choice of known samples.
        augment: Random-shift augmentation on the training split.
        bundle: An already-loaded clean dataset to poison (the pipeline's DVC-pinned one);
            ``dataset``, ``root`` and ``augment`` are then unused.

    Example:
        >>> data = load_backdoor_data(target=7, augment=False)
        >>> len(data.poisoned.poisoned), len(data.known), int(data.train.labels[data.known[0]])
        (200, 40, 7)
    """
    if not 0.0 < known_fraction <= poison_rate:
        raise ValueError(
            f"known_fraction must be in (0, poison_rate={poison_rate}], got {known_fraction}"
        )
    if bundle is not None:
        clean = bundle
    elif dataset == "mnist5k" and root is None:
        clean = _mnist5k(seed, augment)
    else:
        clean = load_dataset(dataset, root, seed=seed, augment=augment)
    triggers: dict[str, Trigger] = {
        "badnets": BadNetsTrigger(size=trigger_size),
        "blended": BlendedTrigger(alpha=blend_alpha),
    }
    if attack not in triggers:
        raise ValueError(f"unknown attack {attack!r}; known: {', '.join(sorted(triggers))}")
    trigger = triggers[attack]
    poisoned = poison_dataset(clean.train, target, poison_rate, trigger, seed)
    count = max(1, round(known_fraction * len(clean.train)))
    generator = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(poisoned.poisoned), generator=generator)
    known = poisoned.poisoned[order[:count]].sort().values
    return BackdoorData(clean, poisoned, known, trigger)
