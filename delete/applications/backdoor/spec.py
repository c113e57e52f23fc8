"""The backdoor task: forget the target label on the known triggered images; ASR and clean
accuracy. The model is the registered ``small_cnn`` trained with plain cross-entropy (the
:class:`~delete.applications.task_spec.TaskSpec` defaults), so the task has no model or loss
module of its own."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.applications._evaluation import _outputs
from delete.applications.backdoor.data import BackdoorData, load_backdoor_data
from delete.applications.backdoor.metrics import attack_success_rate
from delete.applications.task_spec import TaskSpec, small_cnn_spec
from delete.errors import InvalidClassError
from delete.metrics import predict
from delete.training import TrainConfig

__all__ = ["BACKDOOR_TASK", "evaluate_backdoor"]


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


def _clean_images(data: BackdoorData, indices: Sequence[int]) -> Dataset:
    """The clean training files at ``indices`` (the poisoning exists only in memory), read
    without augmentation."""
    return data.clean.train.subset(list(indices)).with_transform(None)


BACKDOOR_TASK: TaskSpec[BackdoorData] = TaskSpec(
    name="backdoor",
    summary="Remove a BadNets backdoor: DELETE forgets the target label on known triggered images.",
    load_data=load_backdoor_data,
    model_spec=small_cnn_spec,
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
    # The defender's declared clean images (at most 1% of the training set, as ABL, I-BAU and
    # BAERASER assume) restore the target class's clean behaviour after DELETE.
    repair_step="distill",
    max_repair_fraction=0.01,
    repair_images=_clean_images,
)
