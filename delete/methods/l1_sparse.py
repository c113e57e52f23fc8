"""l1-sparse unlearning (Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023).

Fine-tuning on the retained data with an ``l1`` penalty on all weights,
``CE(student(x_r), y_r) + gamma_t * ||theta||_1``. Sparsity-aware unlearning: the penalty pulls
the model towards a sparse solution, which the paper shows closes much of the gap to retraining.
``gamma_t`` decays linearly over the epochs, ``gamma * (1 - t / epochs)`` at epoch ``t``, the
schedule the paper found best and its code uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.errors import InvalidHparamError
from delete.methods._registry import register_method
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = ["L1SparseConfig", "L1SparseMethod", "l1_alpha", "l1_norm"]


@dataclass(frozen=True)
class L1SparseConfig(MethodConfig):
    """l1-sparse hyper-parameters.

    Attributes:
        alpha: Initial ``l1`` coefficient ``gamma``, decayed linearly to ``alpha / epochs`` in
            the last epoch. The paper tunes it per dataset. On MNIST-5k (SmallCNN, forget
            class 3): 5e-4 leaves 39% test-forget accuracy, 1e-3 30%, 2e-3 0% (test-retain
            97%, 97%, 92%).
        epochs: Passes over the retain set (the paper: 10).
        lr: SGD learning rate (the paper: 0.01).
        weight_decay: SGD weight decay.
    """

    epochs: int = 10
    lr: float = 0.01
    weight_decay: float = 5e-4
    alpha: float = 2e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.alpha >= 0:
            raise InvalidHparamError(f"alpha must be non-negative, got {self.alpha!r}")


def l1_alpha(alpha: float, epoch: int, epochs: int) -> float:
    """The linearly decaying ``l1`` coefficient of (0-based) ``epoch``.

    Example:
        >>> [l1_alpha(1.0, t, 4) for t in range(4)]
        [1.0, 0.75, 0.5, 0.25]
    """
    return alpha * (1.0 - epoch / epochs)


def l1_norm(module: nn.Module) -> Tensor:
    """Sum of absolute values of every trainable parameter.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = net.weight.fill_(-1.0), net.bias.fill_(0.5)
        >>> float(l1_norm(net).detach())
        2.5
    """
    terms = [p.abs().sum() for p in module.parameters() if p.requires_grad]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


@register_method("l1_sparse")
class L1SparseMethod(UnlearningMethod):
    """Retain-set cross-entropy plus a linearly decaying ``l1`` penalty.

    Example:
        >>> from delete.methods import create_method
        >>> create_method("l1_sparse").config.alpha
        0.002
    """

    config_cls = L1SparseConfig
    needs_retain = True
    summary = "Fine-tune on retained data with a linearly decaying l1 penalty on the weights."
    reference = "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023"
    config: L1SparseConfig

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        assert ctx.retain_loader is not None  # guaranteed by needs_retain
        ctx.state["l1_alpha"] = l1_alpha(self.config.alpha, epoch, self.config.epochs)
        for inputs, targets in ctx.retain_loader:
            yield Batch("retain", inputs, targets)

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        loss = F.cross_entropy(ctx.student(batch.inputs), batch.targets)
        alpha = ctx.state["l1_alpha"]
        if alpha:
            loss = loss + alpha * l1_norm(ctx.student)
        return loss
