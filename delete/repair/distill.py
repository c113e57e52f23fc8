"""The ``distill`` repair: the original's clean behaviour back, the forgetting kept.

After DELETE removed a backdoor from the known triggered images only, nothing anchored the
target class on *clean* images, and its clean accuracy fell with the attack (README, "Backdoor:
what was tried"). This step uses the defender's declared repair set, a handful of clean images:

1. BatchNorm statistics are re-estimated on the repair images (unlearning on all-triggered
   batches moved them);
2. the student is distilled towards the original model's outputs on the repair images (on clean
   inputs the backdoored model behaves well, so its clean behaviour is the thing to restore)
   while DELETE's masked distillation keeps running on the known forget images, so that the
   restored clean behaviour does not bring the trigger back. BatchNorm stays in eval mode with
   the recalibrated statistics (re-estimating them on 64-image batches of a tiny set would move
   them again).

Adam, not SGD: the repair set is small and the steps few; measured on MNIST-5k (BadNets, 40
known samples, 40 repair images) it reached the target in 240 steps where SGD at the same
budget did not.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.losses import delete_loss
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod
from delete.repair._registry import register_repair
from delete.repair.batchnorm import recalibrate_batchnorm

__all__ = ["DistillRepair", "DistillRepairConfig"]


@dataclass(frozen=True)
class DistillRepairConfig(MethodConfig):
    """Repair hyper-parameters.

    Attributes:
        epochs: Rounds of ``steps_per_epoch`` steps (the repair set is too small for "passes
            over it" to be a useful unit).
        steps_per_epoch: Optimisation steps per round.
        lr: Adam learning rate.
        forget_weight: Weight of DELETE's loss on the forget images (0: repair set only).
        recalibrate_bn: Re-estimate BatchNorm statistics on the repair set first.
        temperature: Softmax temperature of both distillations.
    """

    epochs: int = 8
    steps_per_epoch: int = 30
    lr: float = 1e-3
    freeze_bn: bool = True
    forget_weight: float = 0.3
    recalibrate_bn: bool = True
    temperature: float = 1.0


@register_repair("distill")
class DistillRepair(UnlearningMethod):
    """Distil the original's clean behaviour from the repair set; keep DELETE on the forget set."""

    name = "distill"
    config_cls = DistillRepairConfig
    needs_retain = True
    summary = "BatchNorm recalibration, then distillation of the original on the repair set."
    reference = "repair step after backdoor removal (cf. Hsieh et al. 2024)"
    config: DistillRepairConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        assert ctx.retain_loader is not None  # the repair set; repair() refuses to run without
        if self.config.recalibrate_bn:
            ctx.state["bn_images"] = recalibrate_batchnorm(
                ctx.student, ctx.retain_loader, ctx.device
            )

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None
        repair = _cycle(ctx.retain_loader)
        forget = _cycle(ctx.forget_loader)
        for _ in range(self.config.steps_per_epoch):
            inputs, targets = next(repair)
            forget_inputs, _ = next(forget)
            yield Batch("repair", inputs, targets, {"forget_inputs": forget_inputs})

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        t = self.config.temperature
        with torch.no_grad():
            teacher = ctx.original(batch.inputs)
        student = ctx.student(batch.inputs)
        loss = F.kl_div(
            F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean"
        )
        if self.config.forget_weight > 0:
            forget_inputs = batch.extra["forget_inputs"]
            with torch.no_grad():
                forget_teacher = ctx.original(forget_inputs)
            loss = loss + self.config.forget_weight * delete_loss(
                ctx.student(forget_inputs), forget_teacher, ctx.forget_classes, t
            )
        return loss

    def configure_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)


def _cycle(loader: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
    """The loader's batches again and again (a fresh pass, and so a fresh shuffle, each time)."""
    for _ in itertools.count():
        empty = True
        for item in loader:
            empty = False
            yield item
        if empty:
            return
