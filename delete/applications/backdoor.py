"""Backdoor removal with DELETE: forget the target label on the known triggered samples.

A BadNets-poisoned model predicts the attacker's target label whenever the trigger is
present. The defender knows a handful of poisoned training samples (here <= 1% of the
training set). DELETE runs on exactly those images with the *target label* as the forgotten
class: the frozen teacher's target logit is masked on triggered inputs, so the student learns
the teacher's remaining beliefs there (mostly the true digit, which the backdoored model still
sees) and stops mapping the trigger to the target. The forget loader's labels are the poisoned
labels; DELETE never reads them.

Metrics: attack success rate (ASR) on triggered test images whose true label is not the target,
clean test accuracy, and clean accuracy on the target class alone. The "retrain" reference is
a model trained on the clean training set.

Known limitation, measured in the benchmark: the forget set holds triggered images only, and
DELETE uses no retained data, so nothing anchors the target class on *clean* images. The ASR
falls, but the target class's clean accuracy falls with it (to ~17% at ASR ~4% on MNIST-5k,
clean accuracy -8 points); early stopping trades one for the other. A sweep (README,
"Backdoor: what was tried") found the same coupling with BatchNorm frozen, with only some
layers trainable (``trainable=``) and with a flatten head instead of global pooling (best:
ASR 3.3% at clean accuracy -5.2 points).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.applications._evaluation import _outputs
from delete.applications._mnist import _mnist5k
from delete.applications.backdoor_metrics import attack_success_rate
from delete.applications.backdoor_poison import (
    BadNetsTrigger,
    PoisonedDataset,
    poison_dataset,
    triggered_copy,
)
from delete.applications.task_spec import TaskSpec
from delete.data import DatasetBundle, ImageTensorDataset, load_dataset
from delete.errors import InvalidClassError
from delete.metrics import predict
from delete.models import ModelSpec
from delete.training import TrainConfig

__all__ = ["BACKDOOR_TASK", "BackdoorData", "evaluate_backdoor", "load_backdoor_data"]


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
    trigger: BadNetsTrigger

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
        trigger_size: Side of the white square trigger.
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
    trigger = BadNetsTrigger(size=trigger_size)
    poisoned = poison_dataset(clean.train, target, poison_rate, trigger, seed)
    count = max(1, round(known_fraction * len(clean.train)))
    generator = torch.Generator().manual_seed(seed + 1)
    order = torch.randperm(len(poisoned.poisoned), generator=generator)
    known = poisoned.poisoned[order[:count]].sort().values
    return BackdoorData(clean, poisoned, known, trigger)


def _check_target(data: BackdoorData, forget_classes: Sequence[int]) -> None:
    if tuple(forget_classes) != (data.target,):
        raise InvalidClassError(
            f"backdoor removal forgets the target label {data.target} only, "
            f"got {list(forget_classes)}"
        )


def _forget_set(data: BackdoorData, forget_classes: Sequence[int]) -> Dataset:
    _check_target(data, forget_classes)
    return data.train.subset(data.known)


def _retain_set(data: BackdoorData, forget_classes: Sequence[int]) -> Dataset:
    """The training set minus the known poisoned samples (it still holds the unknown ones)."""
    _check_target(data, forget_classes)
    keep = torch.ones(len(data.train), dtype=torch.bool)
    keep[data.known] = False
    return data.train.subset(torch.nonzero(keep).flatten())


def _retrain_set(data: BackdoorData, forget_classes: Sequence[int]) -> Dataset:
    """The clean training set: the reference a backdoor defence should match."""
    return data.clean.train


def _model_spec(data: BackdoorData) -> ModelSpec:
    c, h, _ = data.image_shape
    return ModelSpec("small_cnn", data.num_classes, c, h)


def evaluate_backdoor(
    model: nn.Module,
    data: BackdoorData,
    forget_classes: Sequence[int] = (),
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Clean accuracy, attack success rate, and true-label accuracy on triggered inputs (all %).

    Returns:
        ``clean_acc`` (clean test accuracy), ``target_clean_acc`` (clean accuracy on the
        target class alone: a defence that simply forgets the target class shows here),
        ``asr`` (triggered non-target images predicted as the target) and ``triggered_acc``
        (triggered images predicted as their true class), and ``class_acc/<class>`` (clean
        test accuracy per class).

    Example:
        >>> from delete.models import SmallCNN
        >>> data = load_backdoor_data(augment=False)
        >>> m = evaluate_backdoor(SmallCNN(10, 1), data)
        >>> sorted(k for k in m if "/" not in k), len([k for k in m if "/" in k])
        (['asr', 'clean_acc', 'target_clean_acc', 'triggered_acc'], 10)
    """
    dev = torch.device(device) if isinstance(device, str) else device
    model.to(dev)
    clean = [(out.argmax(1), y) for out, y in _outputs(model, data.test, dev)]
    trig = [(out.argmax(1), y) for out, y in _outputs(model, data.triggered_test, dev)]
    clean_pred, clean_y = torch.cat([p for p, _ in clean]), torch.cat([y for _, y in clean])
    trig_pred, trig_y = torch.cat([p for p, _ in trig]), torch.cat([y for _, y in trig])
    is_target = clean_y == data.target
    correct = (clean_pred == clean_y).double()
    return {
        "clean_acc": 100.0 * float((clean_pred == clean_y).double().mean()),
        "target_clean_acc": 100.0 * float((clean_pred[is_target] == data.target).double().mean()),
        "asr": attack_success_rate(trig_pred, trig_y, data.target),
        "triggered_acc": 100.0 * float((trig_pred == trig_y).double().mean()),
        **{
            f"class_acc/{name}": 100.0 * float(correct[clean_y == c].mean())
            if bool((clean_y == c).any())
            else float("nan")
            for c, name in enumerate(data.class_names)
        },
    }


def _default_forget(data: BackdoorData) -> tuple[int, ...]:
    return (data.target,)


def _known_poisoned(
    data: BackdoorData, source_labels: Tensor, forget_classes: Sequence[int]
) -> list[int]:
    """The defender's known poisoned samples (poisoning keeps the source's sample order)."""
    return [int(i) for i in data.known.tolist()]


def _clean_test_logits(
    model: nn.Module, data: BackdoorData, forget_classes: Sequence[int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """The whole clean test split: the target class must keep working on clean images."""
    logits, labels = predict(model, data.test, device)
    return logits.float(), labels


BACKDOOR_TASK: TaskSpec[BackdoorData] = TaskSpec(
    name="backdoor",
    summary="Remove a BadNets backdoor: DELETE forgets the target label on known triggered images.",
    load_data=load_backdoor_data,
    model_spec=_model_spec,
    forget_set=_forget_set,
    retain_set=_retain_set,
    retrain_set=_retrain_set,
    evaluate=evaluate_backdoor,
    default_forget_classes=_default_forget,
    train_config=TrainConfig(epochs=6, lr=0.05),
    delete_hparams={"lr": 1e-3, "epochs": 20},
    headline=("clean_acc", "target_clean_acc", "asr", "triggered_acc"),
    metrics=("clean_acc", "target_clean_acc", "asr", "triggered_acc"),
    forget_sources=_known_poisoned,
    behaviour=_clean_test_logits,
    # The product's target: ASR under 5% for at most 2 points of clean accuracy.
    default_gates={"max_asr": 5.0, "max_drop_clean_acc": 2.0},
)
