"""SCRUB (Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023).

Student-teacher: the teacher is the frozen original model, the student starts as its copy.
Each epoch first runs, during the first ``msteps`` epochs only, a *max-step* pass over the
forget set that maximises ``KL(teacher || student)`` (the student moves away from the teacher
on forget data), then a *min-step* pass over the retain set that minimises
``alpha * KL(teacher || student) + gamma * CE(student, y)`` (it stays close to the teacher and
accurate on retained data). Both KL terms use temperature ``kd_temperature`` and are scaled by
``T**2``, as in the authors' ``DistillKL``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from delete.errors import InvalidHparamError
from delete.losses import distillation_kl
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["ScrubConfig", "ScrubMethod"]

FORGET_MAX = "forget_max"
RETAIN_MIN = "retain_min"


@dataclass(frozen=True)
class ScrubConfig(MethodConfig):
    """SCRUB hyper-parameters (the authors' large-scale defaults unless noted).

    Attributes:
        epochs: Total epochs; each has a min-step pass over the retain set (authors: 3).
        msteps: Number of leading epochs that also have a max-step pass over the forget set
            (authors: 2).
        alpha: Weight of the KL term in the min-step (authors: 0.001).
        gamma: Weight of the cross-entropy term in the min-step (authors: 0.99).
        kd_temperature: Distillation temperature ``T`` (authors: 4).
        lr: SGD learning rate (authors: 5e-4; the SmallCNN on MNIST-5k needs 5e-3 to forget
            a class in 5 epochs).
        weight_decay: SGD weight decay (authors: 5e-4).
    """

    epochs: int = 5
    lr: float = 5e-3
    weight_decay: float = 5e-4
    msteps: int = 3
    alpha: float = 0.001
    gamma: float = 0.99
    kd_temperature: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.msteps, bool) or not isinstance(self.msteps, int) or self.msteps < 0:
            raise InvalidHparamError(f"msteps must be a non-negative integer, got {self.msteps!r}")
        if self.kd_temperature <= 0:
            raise InvalidHparamError(
                f"kd_temperature must be positive, got {self.kd_temperature!r}"
            )
        for name in ("alpha", "gamma"):
            if getattr(self, name) < 0:
                raise InvalidHparamError(
                    f"{name} must be non-negative, got {getattr(self, name)!r}"
                )


@register_method("scrub")
class ScrubMethod(UnlearningMethod):
    """Alternate max-steps on the forget set and min-steps on the retain set.

    Example:
        >>> from delete.methods import create_method
        >>> create_method("scrub", msteps=1).config.kd_temperature
        4.0
    """

    config_cls = ScrubConfig
    needs_retain = True
    summary = "Student-teacher: push away from the teacher on forget data, stay close on retain."
    reference = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023"
    config: ScrubConfig

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None  # guaranteed by needs_retain
        if epoch < self.config.msteps:
            for inputs, targets in ctx.forget_loader:
                yield Batch(FORGET_MAX, inputs, targets)
        for inputs, targets in ctx.retain_loader:
            yield Batch(RETAIN_MIN, inputs, targets)

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        cfg = self.config
        student_logits = ctx.student(batch.inputs)
        with torch.no_grad():
            teacher_probs = F.softmax(ctx.original(batch.inputs).float() / cfg.kd_temperature, 1)
        kl = distillation_kl(student_logits, teacher_probs, cfg.kd_temperature)
        if batch.kind == FORGET_MAX:
            return -kl
        if batch.kind == RETAIN_MIN:
            return cfg.gamma * F.cross_entropy(student_logits, batch.targets) + cfg.alpha * kl
        raise ValueError(f"scrub: unexpected batch kind {batch.kind!r}")
