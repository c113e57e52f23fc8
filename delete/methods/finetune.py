"""Fine-tuning (FT): keep training the original model on the retained data only.

Forgetting comes only from catastrophic forgetting: the forget classes never appear as
targets, so their logits are pushed down on every retained sample. The baseline of Golatkar
et al. (CVPR 2020) and Warnecke et al. (NDSS 2023), and the "FT" row of SalUn's tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["FinetuneConfig", "FinetuneMethod"]


@dataclass(frozen=True)
class FinetuneConfig(MethodConfig):
    """Fine-tuning hyper-parameters (SalUn's code: 10 epochs, lr 0.01, wd 5e-4).

    Attributes:
        epochs: Passes over the retain set.
        lr: SGD learning rate. At 0.01 the SmallCNN on MNIST-5k keeps its retain accuracy.
        weight_decay: SGD weight decay.
    """

    epochs: int = 10
    lr: float = 0.01
    weight_decay: float = 5e-4


@register_method("finetune")
class FinetuneMethod(UnlearningMethod):
    """Cross-entropy on the retain set, starting from the original weights.

    Example:
        >>> from delete.methods import method_info
        >>> method_info("finetune")["needs_retain"]
        True
    """

    config_cls = FinetuneConfig
    needs_retain = True
    summary = "Fine-tune the original model with cross-entropy on the retained data only."
    reference = (
        "Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; "
        "Warnecke et al., Machine Unlearning of Features and Labels, NDSS 2023"
    )
    config: FinetuneConfig

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None  # guaranteed by needs_retain
        for inputs, targets in ctx.retain_loader:
            yield Batch("retain", inputs, targets)

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        return F.cross_entropy(ctx.student(batch.inputs), batch.targets)
