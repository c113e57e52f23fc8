"""SalUn: Saliency Unlearning (Fan et al., ICLR 2024).

Before training, the gradient of the forget loss (cross-entropy on the forget set, summed over
its batches, at the original weights) is computed; the ``threshold`` fraction of weights with
the largest absolute gradient, ranked over the whole network, is *salient*. Then random-label
training (:mod:`delete.methods.random_label`) runs with every non-salient gradient zeroed, so
only the salient weights move.

Weight decay is applied to salient weights only (it is added to the gradient before masking),
so non-salient weights stay exactly at their original values, as the authors' code enforces by
restoring them after each step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.errors import InvalidHparamError
from delete.methods._registry import register_method
from delete.methods.base import UnlearnContext
from delete.methods.random_label import RandomLabelConfig, RandomLabelMethod

__all__ = ["SalUnConfig", "SalUnMethod", "saliency_mask"]


@dataclass(frozen=True)
class SalUnConfig(RandomLabelConfig):
    """SalUn hyper-parameters (random-label training plus the saliency threshold).

    Attributes:
        threshold: Fraction of weights kept trainable, by largest absolute forget-loss
            gradient over the whole network (the paper's default mask is 0.5).
        epochs: Passes over forget + retain data (the paper: 10).
        lr: SGD learning rate (the paper: 0.013 for ResNet-18 on CIFAR-10; 0.01 suits the
            SmallCNN on MNIST-5k).
    """

    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.threshold <= 1.0:
            raise InvalidHparamError(f"threshold must be in (0, 1], got {self.threshold!r}")


def saliency_mask(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    threshold: float,
    device: torch.device,
) -> dict[str, Tensor]:
    """Binary masks of the ``threshold`` fraction of weights most salient for forgetting.

    Saliency is ``|sum over batches of d CE(model(x_f), y_f) / d theta|``, ranked globally.
    The model is evaluated in eval mode (BatchNorm statistics are not touched) and its
    gradients are cleared afterwards.

    Returns:
        ``{parameter name: 0/1 tensor}`` for every trainable parameter.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> data = [(torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))]
        >>> mask = saliency_mask(net, data, 0.5, torch.device("cpu"))
        >>> int(sum(m.sum() for m in mask.values()))  # half of the 15 weights
        7
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for inputs, targets in loader:
            logits = model(inputs.to(device))
            F.cross_entropy(logits.float(), targets.to(device)).backward()
    scores = torch.cat(
        [
            (p.grad.detach().abs() if p.grad is not None else torch.zeros_like(p)).flatten().float()
            for _, p in named
        ]
    )
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    keep = int(len(scores) * threshold)
    flat = torch.zeros_like(scores)
    if keep > 0:
        flat[torch.topk(scores, keep, sorted=False).indices] = 1.0
    masks: dict[str, Tensor] = {}
    start = 0
    for name, p in named:
        masks[name] = flat[start : start + p.numel()].view_as(p).to(p.dtype)
        start += p.numel()
    return masks


@register_method("salun")
class SalUnMethod(RandomLabelMethod):
    """Random-label training restricted to the weights salient for the forget set.

    Example:
        >>> from delete.methods import create_method
        >>> create_method("salun", threshold=0.3).config.threshold
        0.3
    """

    config_cls = SalUnConfig
    needs_retain = True
    summary = "Random labels + retain data, updating only weights salient for the forget loss."
    reference = (
        "Fan et al., SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency "
        "in Both Image Classification and Generation, ICLR 2024"
    )
    config: SalUnConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        super().prepare(ctx)
        masks = saliency_mask(ctx.student, ctx.forget_loader, self.config.threshold, ctx.device)
        params = dict(ctx.student.named_parameters())
        ctx.state["salun_mask"] = [(params[name], mask) for name, mask in masks.items()]

    def configure_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        # Weight decay is added (masked) in after_backward, so frozen weights do not decay.
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=0.0)

    def after_backward(self, ctx: UnlearnContext) -> None:
        decay = self.config.weight_decay
        for param, mask in ctx.state["salun_mask"]:
            if param.grad is None:
                continue
            if decay:
                param.grad.add_(param.detach(), alpha=decay)
            param.grad.mul_(mask)
