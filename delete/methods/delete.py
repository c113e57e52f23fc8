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

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from delete.data.replay import hold_in_memory, replay_in_memory
from delete.losses import delete_loss
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["DeleteConfig", "DeleteMethod", "RECOMMENDED_HPARAMS"]

log = logging.getLogger(__name__)

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
        cache_teacher: Compute the teacher logits once and reuse them every epoch; the forget
            set is then held in memory and reshuffled each epoch. ``None`` (the default)
            does so when two passes over the forget loader yield the same images (no random
            augmentation, :func:`~delete.data.replay.replay_in_memory`) and they fit in
            1 GiB; ``True`` does so unchecked (the caller knows the loader does not augment),
            ``False`` never. The teacher's forward was a quarter to a half of each training
            step, and every figure of the README's zoo was measured with the cache on.
    """

    temperature: float = 1.0
    cache_teacher: bool | None = None


def _teacher_cache(
    ctx: UnlearnContext, *, checked: bool
) -> tuple[tuple[Tensor, Tensor, Tensor], int] | None:
    """The forget set in memory with the teacher's logits, and its batch size; ``None`` when
    ``checked`` and the loader augments or is too large (:func:`replay_in_memory`)."""
    held = replay_in_memory(ctx.forget_loader) if checked else hold_in_memory(ctx.forget_loader)
    if held is None:
        return None
    logits = []
    with torch.no_grad():
        for start in range(0, len(held.inputs), held.batch_size):
            x = held.inputs[start : start + held.batch_size]
            logits.append(ctx.original(x.to(ctx.device)).float().cpu())
    log.debug("teacher logits of %d forget images computed once", len(held.inputs))
    return (held.inputs, held.labels, torch.cat(logits)), held.batch_size


@register_method("delete")
class DeleteMethod(UnlearningMethod):
    config_cls = DeleteConfig
    needs_retain = False
    auto_select = True
    summary = "Masked-teacher distillation on forget images only (no retained data)."
    reference = "Zhou et al., Decoupled Distillation to Erase, CVPR 2025"
    config: DeleteConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        if self.config.cache_teacher is False:
            ctx.note("teacher_logits", "every step")
            return
        # The teacher's logits are the same for every candidate of a selection: the first
        # run computes them (or finds the loader augments), the others (other learning rates,
        # the other BatchNorm policy) reuse them and the order they were drawn in.
        key = f"delete_cache_{self.config.cache_teacher}"
        if key not in ctx.shared:
            ctx.shared[key] = _teacher_cache(ctx, checked=self.config.cache_teacher is None)
        if ctx.shared[key] is not None:
            ctx.state["delete_cache"], ctx.state["delete_batch_size"] = ctx.shared[key]
        ctx.note("teacher_logits", "every step" if ctx.shared[key] is None else "computed once")

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        if "delete_cache" not in ctx.state:
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
