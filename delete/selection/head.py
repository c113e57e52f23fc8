"""The model's last layer: what a head-only candidate trains (:class:`~delete.selection.Candidate`).

Distilling the masked teacher through the whole network can move the features so that a kept
class's logit rises on images of other kept classes. A GroupNorm CNN (Nesterov SGD, 94 % on
MNIST-5k; ``docs/bench/outside_more_recipes_cpu.md``) forgetting digit 3 lost 14.4 points
retained that way, at every learning rate from 1e-4 to 1e-3, while training its last layer
alone lost none: lowering the forgotten class's logit through the head leaves the other
classes' logits nearly as they were.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from delete.models.outputs import LogitsOnly

__all__ = ["caller_module", "head_parameters", "last_layer"]


def caller_module(model: nn.Module) -> nn.Module:
    """The caller's own model inside the library's logits wrapper (names as the caller sees
    them), else ``model``.

    Example:
        >>> net = nn.Linear(2, 3)
        >>> caller_module(LogitsOnly(net)) is net, caller_module(net) is net
        (True, True)
    """
    return model.inner if isinstance(model, LogitsOnly) else model


def last_layer(model: nn.Module, sample: Tensor, num_classes: int) -> str | None:
    """The name (as in the caller's ``named_modules()``) of the last module, in the order a
    forward pass runs them, that holds parameters of its own and outputs one score per class
    (``num_classes`` along dimension 1); ``None`` when there is none, or the model is
    TorchScript (whose modules cannot be watched running).

    Registration order is not enough: a module may be defined after the head and used
    before it. The forward pass runs without gradients and changes nothing.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> last_layer(net, torch.zeros(2, 4), 3)
        '2'
        >>> last_layer(nn.Sequential(nn.Linear(4, 8)), torch.zeros(2, 4), 3) is None
        True
    """
    inner = caller_module(model)
    if isinstance(inner, torch.jit.ScriptModule):  # TorchScript modules take no forward hooks
        return None
    ran: list[str] = []

    def hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def record(_: nn.Module, __: object, output: object) -> None:
            if isinstance(output, Tensor) and output.dim() >= 2 and output.shape[1] == num_classes:
                ran.append(name)

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in inner.named_modules()
        if name and any(True for _ in module.parameters(recurse=False))
    ]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return ran[-1] if ran else None


def head_parameters(model: nn.Module, head: str) -> list[nn.Parameter]:
    """The parameters of ``model`` (the library's wrapper or the caller's module) under the
    caller's module name ``head``.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 3))
        >>> [tuple(p.shape) for p in head_parameters(LogitsOnly(net), "1")]
        [(3, 8), (3,)]
    """
    prefix = head + "."
    return [
        param for name, param in caller_module(model).named_parameters() if name.startswith(prefix)
    ]
