"""Bad Teacher (Chundawat et al., Can Bad Teaching Induce Forgetting?, AAAI 2023).

Two frozen teachers: the *competent* one is the original model, the *incompetent* one a
randomly initialised copy of its architecture (seeded). The student, a copy of the original,
distils from the incompetent teacher on forget samples and from the competent teacher on a
random ``retain_fraction`` of the retained samples, with ``KL(teacher || student)`` at
temperature ``temperature``. Forget and retain samples are mixed within batches, as the authors'
shuffled ``UnLearningData`` does.

As in the authors' code, the optimiser is Adam. Implementation notes: the retain subset is
drawn per epoch as a random ``retain_fraction`` of the retain loader's batches (the authors draw
30% of the samples once); the KL is averaged per sample (``batchmean``), where the authors'
``F.kl_div`` default also divides by the number of classes, a constant factor the learning rate
absorbs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.errors import InvalidHparamError, UnlearningError
from delete.losses import distillation_kl
from delete.methods._common import (
    _batch_size,
    _mix_samples,
    _num_batches,
    _num_samples,
    _reinitialize,
    _seed_from,
)
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod
from delete.models.clone import clone_module

__all__ = ["BadTeacherConfig", "BadTeacherMethod"]

_OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class BadTeacherConfig(MethodConfig):
    """Bad Teacher hyper-parameters.

    Attributes:
        epochs: Passes over forget data + retain subset (the paper: 1 on CIFAR; the SmallCNN
            on MNIST-5k, with ~25 steps an epoch, needs 5).
        lr: Learning rate (the paper: Adam, 1e-4). On MNIST-5k (SmallCNN, forget class 3), 5
            epochs at 3e-3 reach 0% test-forget accuracy; at 1e-3, 12%.
        retain_fraction: Fraction of retain batches used per epoch (the paper: 0.3).
        temperature: Distillation temperature (the paper: 1).
        optimizer: ``"adam"`` (the paper; ``momentum`` is then unused) or ``"sgd"``.
    """

    epochs: int = 5
    lr: float = 3e-3
    retain_fraction: float = 0.3
    temperature: float = 1.0
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.retain_fraction <= 1.0:
            raise InvalidHparamError(
                f"retain_fraction must be in (0, 1], got {self.retain_fraction!r}"
            )
        if self.temperature <= 0:
            raise InvalidHparamError(f"temperature must be positive, got {self.temperature!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise InvalidHparamError(
                f"optimizer must be one of {', '.join(_OPTIMIZERS)}, got {self.optimizer!r}"
            )


@register_method("bad_teacher")
class BadTeacherMethod(UnlearningMethod):
    """Distil the original on retain samples and a random network on forget samples.

    Example:
        >>> from delete.methods import create_method
        >>> create_method("bad_teacher").config.retain_fraction
        0.3
    """

    config_cls = BadTeacherConfig
    needs_retain = True
    summary = "Distil from the original on retain data and from a random network on forget data."
    reference = (
        "Chundawat et al., Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks "
        "Using an Incompetent Teacher, AAAI 2023"
    )
    config: BadTeacherConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        assert ctx.retain_loader is not None  # guaranteed by needs_retain
        bad = clone_module(ctx.original)
        if _reinitialize(bad, _seed_from(ctx.generator)) == 0:
            raise UnlearningError(
                "bad_teacher: the model has no submodule with reset_parameters(); "
                "cannot build a randomly initialised teacher"
            )
        for p in bad.parameters():
            p.requires_grad_(False)
        ctx.state["bad_teacher"] = bad.eval()
        ctx.state["bt_counts"] = (
            _num_samples(ctx.forget_loader),
            _num_samples(ctx.retain_loader),
            _num_batches(ctx.retain_loader),
        )
        ctx.state["bt_batch_size"] = _batch_size(ctx.retain_loader)

    def configure_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return super().configure_optimizer(params)

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None
        n_forget, n_retain, retain_batches = ctx.state["bt_counts"]
        keep_count = max(1, math.ceil(self.config.retain_fraction * retain_batches))
        keep = set(torch.randperm(retain_batches, generator=ctx.generator)[:keep_count].tolist())
        subset = (item for index, item in enumerate(ctx.retain_loader) if index in keep)
        kept_samples = round(n_retain * min(keep_count, retain_batches) / max(retain_batches, 1))
        yield from _mix_samples(
            ctx.forget_loader,
            subset,
            (n_forget, kept_samples),
            ctx.state["bt_batch_size"],
            ctx.generator,
        )

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        temperature = self.config.temperature
        forget = batch.extra["forget"]
        with torch.no_grad():
            good = F.softmax(ctx.original(batch.inputs).float() / temperature, dim=1)
            bad = F.softmax(ctx.state["bad_teacher"](batch.inputs).float() / temperature, dim=1)
            shape = (-1,) + (1,) * (good.dim() - 1)
            target = torch.where(forget.view(shape), bad, good)
        return distillation_kl(ctx.student(batch.inputs), target, temperature)
