"""What the pipeline needs to know about a task, so it can dispatch on ``task:`` by name.

A :class:`TaskSpec` bundles the task's dataset builder, its default architecture, the loss that
trains the original model, how a forget request selects training data, and the task's own
evaluation. Unlearning itself is the same for every task: :func:`delete.unlearn` with the
forget loader built from :attr:`TaskSpec.forget_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.metrics import predict
from delete.models import ModelSpec
from delete.training import TrainConfig

__all__ = [
    "TaskData",
    "TaskSpec",
    "LossFn",
    "BehaviourFn",
    "retained_test_logits",
    "small_cnn_spec",
    "sources_by_label",
]

LossFn = Callable[[Tensor, Tensor], Tensor]
#: ``behaviour(model, data, forget_classes, device) -> (logits (N, C), labels (N,))``.
BehaviourFn = Callable[[nn.Module, Any, Sequence[int], torch.device], tuple[Tensor, Tensor]]


class TaskData(Protocol):
    """What every task's dataset builder returns (a :class:`~delete.data.DatasetBundle` fits)."""

    @property
    def name(self) -> str: ...

    @property
    def train(self) -> Any: ...

    @property
    def test(self) -> Any: ...

    @property
    def class_names(self) -> list[str]: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...


D = TypeVar("D", bound=TaskData)


def _cross_entropy(model: nn.Module) -> LossFn:
    """Plain cross-entropy, whatever the model."""
    return F.cross_entropy


def _no_default_classes(data: Any) -> tuple[int, ...]:
    """Most tasks have no implicit forget class: the request must name them."""
    return ()


def sources_by_label(data: Any, source_labels: Tensor, forget_classes: Sequence[int]) -> list[int]:
    """Training files labelled with a forgotten class (the forget set *is* those files).

    Example:
        >>> sources_by_label(None, torch.tensor([0, 3, 1, 3]), [3])
        [1, 3]
    """
    wanted = torch.as_tensor(list(forget_classes), dtype=torch.long)
    return torch.nonzero(torch.isin(source_labels, wanted)).flatten().tolist()


def small_cnn_spec(data: TaskData) -> ModelSpec:
    """The project's SmallCNN sized for ``data`` (classification's and the backdoor's model).

    Example:
        >>> from types import SimpleNamespace
        >>> small_cnn_spec(SimpleNamespace(image_shape=(1, 28, 28), num_classes=10))
        ModelSpec(arch='small_cnn', num_classes=10, in_channels=1, image_size=28, kwargs={})
    """
    c, h, _ = data.image_shape
    return ModelSpec("small_cnn", data.num_classes, c, h)


def retained_test_logits(
    model: nn.Module, data: Any, forget_classes: Sequence[int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Logits ``(N, C)`` and labels of the test images of the retained classes.

    Example:
        >>> from delete.data import ImageTensorDataset
        >>> from types import SimpleNamespace
        >>> ds = ImageTensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
        >>> logits, labels = retained_test_logits(
        ...     nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), SimpleNamespace(test=ds), [1],
        ...     torch.device("cpu"))
        >>> tuple(logits.shape), labels.tolist()
        ((2, 2), [0, 0])
    """
    logits, labels = predict(model, data.test, device)
    keep = ~torch.isin(labels, torch.as_tensor(list(forget_classes), dtype=torch.long))
    return logits.float()[keep], labels[keep]


@dataclass(frozen=True)
class TaskSpec(Generic[D]):
    """A task the library can unlearn and evaluate.

    Attributes:
        name: The ``task:`` value of a request.
        summary: One line for listings.
        load_data: ``load_data(**options) -> data`` (e.g. ``root=``, ``seed=``).
        model_spec: ``model_spec(data) -> ModelSpec``: the default architecture for the data.
        forget_set: ``forget_set(data, forget_classes) -> Dataset`` of training samples that the
            forget loader iterates.
        retain_set: Training samples the retain-based baselines may use.
        retrain_set: Training samples of the "retrain from scratch" reference.
        evaluate: ``evaluate(model, data, forget_classes, device) -> {metric: value}``: the
            task's scalar :attr:`metrics` plus one ``<per_class_metric>/<class name>`` entry
            per class. The pipeline gates, logs, plots and certifies exactly these.
        default_forget_classes: The forget classes when a request names none (``()``: it must).
        train_loss: ``train_loss(model) -> loss(outputs, targets)`` that trains the original.
        train_config: Default supervised-training recipe of the original / retrained model.
        delete_hparams: Recommended DELETE hyper-parameters for the task.
        unlearn_batch_size: Batch size of the forget (and retain) loader the recommendation
            was tuned with; DELETE's updates per epoch depend on it (face identities keep
            their retained accuracy at 16, lose ~9 points at 64).
        headline: Metrics the benchmark table shows, in order.
        metrics: Every scalar metric :attr:`evaluate` returns (what a gate may name).
        per_class_metric: Family of the per-class entries of :attr:`evaluate` (``class_acc``,
            ``class_iou``), read by the per-class gates and the per-class plot.
        per_class_label: What the per-class value is, for plots and reports.
        forget_sources: ``forget_sources(data, source_train_labels, forget_classes)``: indices,
            into the training split of the DVC-pinned dataset the task was built from, of the
            files the forget set is made of (the forget-set manifest lists exactly these).
        behaviour: The logits the Evidently report compares, parent vs unlearned: the
            retained behaviour of the model.
        membership: ``membership(model, data, forget_classes, device) -> {name: scores}``,
            the forget-class loss scores of training members vs unseen test images that the
            membership plot draws; ``None`` where the task has no such pair.
        default_gates: Promotion gates when ``gates.yaml`` has no section for the task.
        repair_step: The :mod:`delete.repair` step a request's declared repair set runs
            after unlearning; ``None``: the task takes no repair set.
        max_repair_fraction: The largest repair set, as a fraction of the training split.
        repair_images: ``repair_images(data, indices)``: the repair set's images, from indices
            into the DVC-pinned training split (for a backdoor: the clean files on disk).
    """

    name: str
    summary: str
    load_data: Callable[..., D]
    model_spec: Callable[[D], ModelSpec]
    forget_set: Callable[[D, Sequence[int]], Dataset]
    retain_set: Callable[[D, Sequence[int]], Dataset]
    retrain_set: Callable[[D, Sequence[int]], Dataset]
    evaluate: Callable[[nn.Module, D, Sequence[int], torch.device], dict[str, float]]
    default_forget_classes: Callable[[D], tuple[int, ...]] = _no_default_classes
    train_loss: Callable[[nn.Module], LossFn] = _cross_entropy
    train_config: TrainConfig = TrainConfig()
    delete_hparams: Mapping[str, Any] = field(default_factory=dict)
    unlearn_batch_size: int = 64
    headline: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    per_class_metric: str = "class_acc"
    per_class_label: str = "test accuracy"
    forget_sources: Callable[[D, Tensor, Sequence[int]], list[int]] = sources_by_label
    behaviour: BehaviourFn = retained_test_logits
    membership: Callable[..., dict[str, Tensor]] | None = None
    default_gates: Mapping[str, float] = field(default_factory=dict)
    repair_step: str | None = None
    max_repair_fraction: float = 0.0
    repair_images: Callable[[D, Sequence[int]], Dataset] | None = None

    def hparam_defaults(self, method: str) -> dict[str, Any]:
        """The task's recipe for ``method``: its batch size, plus DELETE's tuned settings.

        Example:
            >>> from delete.applications import get_task
            >>> get_task("face").hparam_defaults("finetune")
            {'batch_size': 16}
        """
        base = dict(self.delete_hparams) if method == "delete" else {}
        return {**base, "batch_size": self.unlearn_batch_size}

    def per_class(self, metrics: Mapping[str, float], class_names: Sequence[str]) -> list[float]:
        """The per-class values of ``metrics`` in class order (NaN where one is missing).

        Example:
            >>> from delete.applications import get_task
            >>> get_task("classification").per_class({"class_acc/a": 90.0}, ["a", "b"])
            [90.0, nan]
        """
        prefix = f"{self.per_class_metric}/"
        return [float(metrics.get(prefix + name, float("nan"))) for name in class_names]
