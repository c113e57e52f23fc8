"""Gradient ascent (GA): maximise the cross-entropy of the forget set.

The loss is ``-CE(student(x_f), y_f)``; nothing anchors the retained classes, so GA forgets
fast but damages the rest of the model if run too long or with too high a learning rate.
Thudi et al. (EuroS&P 2022) and Graves et al. (AAAI 2021, "NegGrad"); the "GA" row of the
SalUn and ``l1``-sparse papers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["GradientAscentConfig", "GradientAscentMethod"]


@dataclass(frozen=True)
class GradientAscentConfig(MethodConfig):
    """Gradient-ascent hyper-parameters.

    GA sits on a knife edge: the loss creeps for a few epochs, then diverges and takes the
    retained classes with it. On MNIST-5k (SmallCNN, forget class 3) lr 5e-5 for 4 epochs leaves
    12-16% test-forget and 92-93% test-retain accuracy; a 5th epoch gives 0% and 28%.

    Attributes:
        epochs: Passes over the forget set. Few: the objective is unbounded below.
        lr: SGD learning rate (the SalUn code's GA runs use 1e-6..1e-4 for ResNet-18 on
            CIFAR-10).
        freeze_bn: On by default: a batch of forget images alone, normalised by its own
            statistics in train mode, is not what the model sees at test time, and ascending
            on it barely moves the test-time prediction (and overwrites the running statistics).
    """

    epochs: int = 4
    lr: float = 5e-5
    freeze_bn: bool = True


@register_method("gradient_ascent")
class GradientAscentMethod(UnlearningMethod):
    """Minimise ``-CE`` on the forget set (the default ``batches`` walks the forget loader).

    Example:
        >>> from delete.methods import method_info
        >>> method_info("gradient_ascent")["needs_retain"]
        False
    """

    config_cls = GradientAscentConfig
    needs_retain = False
    summary = "Gradient ascent on the forget set's cross-entropy (no retained data)."
    reference = (
        "Thudi et al., Unrolling SGD: Understanding Factors Influencing Machine Unlearning, "
        "EuroS&P 2022; Graves et al., Amnesiac Machine Learning, AAAI 2021"
    )
    config: GradientAscentConfig

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        return -F.cross_entropy(ctx.student(batch.inputs), batch.targets)
