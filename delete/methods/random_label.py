"""Random labelling (RL): train on the forget set with random wrong labels, and on the retain set.

Each forget sample gets a fresh random label every epoch, drawn uniformly from the retained
classes other than its own; retained samples keep their true labels. Both are trained with
cross-entropy in mixed batches, as if the two sets were concatenated and shuffled (as SalUn's
code does for CIFAR-100). Mixing matters with BatchNorm: batches of forget images alone are
normalised by statistics the model never uses at test time, and on MNIST-5k the forget class
then survives (41% test-forget accuracy after 10 epochs, against 0% mixed). This is the "RL"
baseline of Golatkar et al. (CVPR 2020) as implemented in the SalUn code, and the training
loop that SalUn (:mod:`delete.methods.salun`) restricts to salient weights.

Deviation from the SalUn code, on purpose: it draws labels from *all* classes
(``randint(0, num_classes)``), so a forget sample is sometimes "relabelled" with its own
class; here a label is never the sample's own class nor another forget class.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from delete.methods._common import (
    _batch_size,
    _mix_samples,
    _num_samples,
    _random_other_labels,
)
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["RandomLabelConfig", "RandomLabelMethod"]


@dataclass(frozen=True)
class RandomLabelConfig(MethodConfig):
    """Random-label hyper-parameters.

    Attributes:
        epochs: Passes over forget + retain data (SalUn's code: 10).
        lr: SGD learning rate (SalUn's code: 0.013 for ResNet-18 on CIFAR-10; 0.01 suits the
            SmallCNN on MNIST-5k).
        weight_decay: SGD weight decay.
    """

    epochs: int = 10
    lr: float = 0.01
    weight_decay: float = 5e-4


@register_method("random_label")
class RandomLabelMethod(UnlearningMethod):
    """Cross-entropy on forget data with random retained-class labels plus retain data.

    Example:
        >>> from delete.methods import create_method
        >>> create_method("random_label").config.epochs
        10
    """

    config_cls = RandomLabelConfig
    needs_retain = True
    summary = "Fine-tune on forget data relabelled with random other classes, plus retain data."
    reference = (
        "Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020 (random labels); "
        "as implemented by Fan et al., SalUn, ICLR 2024"
    )
    config: RandomLabelConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        assert ctx.retain_loader is not None  # guaranteed by needs_retain
        ctx.state["rl_counts"] = (_num_samples(ctx.forget_loader), _num_samples(ctx.retain_loader))
        ctx.state["rl_batch_size"] = _batch_size(ctx.retain_loader)

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None
        mixed = _mix_samples(
            ctx.forget_loader,
            ctx.retain_loader,
            ctx.state["rl_counts"],
            ctx.state["rl_batch_size"],
            ctx.generator,
        )
        for batch in mixed:
            forget = batch.extra["forget"]
            if bool(forget.any()):
                targets = batch.targets.clone()
                targets[forget] = _random_other_labels(
                    targets[forget], ctx.retain_classes, ctx.generator
                )
                batch.targets = targets
            yield batch

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        return F.cross_entropy(ctx.student(batch.inputs), batch.targets)
