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

from delete.models import ModelSpec
from delete.training import TrainConfig

__all__ = ["TaskData", "TaskSpec", "LossFn"]

LossFn = Callable[[Tensor, Tensor], Tensor]


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
        evaluate: ``evaluate(model, data, forget_classes, device) -> {metric: value}``.
        default_forget_classes: The forget classes when a request names none (``()``: it must).
        train_loss: ``train_loss(model) -> loss(outputs, targets)`` that trains the original.
        train_config: Default supervised-training recipe of the original / retrained model.
        delete_hparams: Recommended DELETE hyper-parameters for the task.
        unlearn_batch_size: Batch size of the forget (and retain) loader the recommendation
            was tuned with; DELETE's updates per epoch depend on it (face identities keep
            their retained accuracy at 16, lose ~9 points at 64).
        headline: Metrics the benchmark table shows, in order.
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
