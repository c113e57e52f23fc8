"""DELETE: Decoupled Distillation to Erase (Zhou et al., CVPR 2025).

The frozen original model is the teacher. On forget-set images only, its logits for the
forget classes are masked to ``-inf`` before the softmax, and the student is trained with
``KL(teacher_masked || student)``. Minimising it drives the student's probability of the
forget classes to zero (forgetting term) while keeping the teacher's relative probabilities
over the remaining classes (retention term, the "dark knowledge"). No retained data is used.

Learning rate and epochs per dataset (SGD momentum 0.9, no weight decay, batch 64, BatchNorm
not frozen), chosen by a sweep on the benchmark in ``delete/bench`` and listed in
:data:`RECOMMENDED_HPARAMS`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from delete.losses import delete_loss
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["DeleteConfig", "DeleteMethod", "RECOMMENDED_HPARAMS"]

#: Per-dataset defaults. digits and mnist5k were chosen by an lr x epochs sweep with the
#: SmallCNN (README, Benchmark); the CIFAR entries are untuned starting points for ResNet-18.
RECOMMENDED_HPARAMS: dict[str, dict[str, Any]] = {
    "digits": {"lr": 0.001, "epochs": 40},
    "mnist5k": {"lr": 0.002, "epochs": 20},
    "cifar10": {"lr": 0.01, "epochs": 20},
    "cifar100": {"lr": 0.01, "epochs": 20},
}


@dataclass(frozen=True)
class DeleteConfig(MethodConfig):
    """DELETE hyper-parameters.

    Attributes:
        temperature: Softmax temperature of the distillation (the paper uses 1).
        cache_teacher: Compute the teacher logits once and reuse them every epoch. Only valid
            when the forget loader applies no random augmentation; the forget set is then
            held in memory and reshuffled each epoch.
    """

    temperature: float = 1.0
    cache_teacher: bool = False


@register_method("delete")
class DeleteMethod(UnlearningMethod):
    config_cls = DeleteConfig
    needs_retain = False
    auto_select = True
    summary = "Masked-teacher distillation on forget images only (no retained data)."
    reference = "Zhou et al., Decoupled Distillation to Erase, CVPR 2025"
    config: DeleteConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        if not self.config.cache_teacher:
            return
        # The teacher's logits are the same for every candidate of a selection: the first
        # run computes them, the others (other learning rates, the other BatchNorm policy)
        # reuse them and the order they were drawn in.
        if "delete_cache" not in ctx.shared:
            inputs, targets, logits = [], [], []
            batch_size = 0
            with torch.no_grad():
                for x, y in ctx.forget_loader:
                    batch_size = max(batch_size, len(x))
                    inputs.append(x)
                    targets.append(y)
                    logits.append(ctx.original(x.to(ctx.device)).float().cpu())
            ctx.shared["delete_cache"] = (
                (torch.cat(inputs), torch.cat(targets), torch.cat(logits)),
                batch_size,
            )
        ctx.state["delete_cache"], ctx.state["delete_batch_size"] = ctx.shared["delete_cache"]

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        if not self.config.cache_teacher:
            yield from super().batches(ctx, epoch)
            return
        inputs, targets, logits = ctx.state["delete_cache"]
        batch_size = ctx.state["delete_batch_size"]
        order = torch.randperm(len(inputs), generator=ctx.generator)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield Batch("forget", inputs[idx], targets[idx], {"teacher_logits": logits[idx]})

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        teacher_logits = batch.extra.get("teacher_logits")
        if teacher_logits is None:
            with torch.no_grad():
                teacher_logits = ctx.original(batch.inputs)
        student_logits = ctx.student(batch.inputs)
        return delete_loss(
            student_logits, teacher_logits, ctx.forget_classes, self.config.temperature
        )
