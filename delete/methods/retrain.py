"""Retrain from scratch on the retained data: the gold standard every method is judged against.

The student's weights are re-drawn (every submodule with ``reset_parameters``, BatchNorm
statistics included) and trained with cross-entropy on the retain set only, with SGD and a
per-step cosine learning-rate schedule, the same recipe :func:`delete.training.train_classifier`
uses for the original model. The forgotten data has then provably never been seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.errors import InvalidHparamError, UnlearningError
from delete.methods._common import _cosine_lr, _num_batches, _reinitialize, _seed_from
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["RetrainConfig", "RetrainMethod"]


@dataclass(frozen=True)
class RetrainConfig(MethodConfig):
    """Retrain-from-scratch hyper-parameters (defaults match ``TrainConfig``: SGD, cosine).

    Attributes:
        epochs: Passes over the retain set (15 trains the SmallCNN on MNIST-5k to ~97%).
        lr: Peak learning rate of the cosine schedule (annealed to 0 per step).
        weight_decay: SGD weight decay.
        cosine: Anneal the learning rate with a per-step cosine schedule; else keep it constant.
    """

    epochs: int = 15
    lr: float = 0.05
    weight_decay: float = 5e-4
    cosine: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainable is not None:
            # every layer is re-initialised, so a frozen one would stay random
            raise InvalidHparamError("retrain re-initialises every layer; trainable cannot be set")


@register_method("retrain")
class RetrainMethod(UnlearningMethod):
    """Re-initialise, then cross-entropy on the retain set.

    Example:
        >>> from delete.methods import create_method
        >>> create_method("retrain", epochs=2).config.lr
        0.05
    """

    config_cls = RetrainConfig
    needs_retain = True
    reinitialises = True
    summary = "Gold standard: re-initialise the weights and train on the retained data only."
    reference = (
        "Retraining from scratch on D \\ D_f, the exact-unlearning reference used throughout "
        "the literature (e.g. Bourtoule et al., Machine Unlearning, IEEE S&P 2021)"
    )
    config: RetrainConfig

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self._optimizer: torch.optim.Optimizer | None = None

    def prepare(self, ctx: UnlearnContext) -> None:
        assert ctx.retain_loader is not None  # guaranteed by needs_retain
        if _reinitialize(ctx.student, _seed_from(ctx.generator)) == 0:
            raise UnlearningError(
                "retrain: the model has no submodule with reset_parameters(); "
                "cannot re-initialise it"
            )
        ctx.state["retrain_steps_per_epoch"] = _num_batches(ctx.retain_loader)

    def configure_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        self._optimizer = super().configure_optimizer(params)
        return self._optimizer

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None
        per_epoch = ctx.state["retrain_steps_per_epoch"]
        total = per_epoch * self.config.epochs
        for index, (inputs, targets) in enumerate(ctx.retain_loader):
            # The lr is a function of (epoch, index) rather than a scheduler object, so a run
            # resumed from an engine checkpoint continues on the same schedule.
            if self.config.cosine and self._optimizer is not None:
                lr = _cosine_lr(self.config.lr, epoch * per_epoch + index, total)
                for group in self._optimizer.param_groups:
                    group["lr"] = lr
            yield Batch("retain", inputs, targets)

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        return F.cross_entropy(ctx.student(batch.inputs), batch.targets)
