"""A trainable copy of any module, TorchScript included.

``copy.deepcopy`` of a TorchScript module (``torch.jit.script`` or ``torch.jit.load``, as
models are often shipped) gives parameters that are not leaves: their ``requires_grad`` cannot
be set and an optimizer cannot train them. Such modules are copied through ``torch.jit.save``
and ``torch.jit.load`` instead, which keeps their weights, buffers and flags.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import TypeVar

import torch
from torch import nn

__all__ = ["clone_module"]

M = TypeVar("M", bound=nn.Module)


def clone_module(module: M) -> M:
    """``copy.deepcopy(module)``, with every outermost TorchScript submodule (or ``module``
    itself) copied by saving and loading it, on the device its weights are on.

    Example:
        >>> scripted = torch.jit.script(nn.Linear(2, 3))
        >>> copied = clone_module(nn.Sequential(scripted))
        >>> [p.is_leaf for p in copied.parameters()], copied[0] is scripted
        ([True, True], False)
        >>> copied[0].weight.requires_grad_(False).requires_grad
        False
    """
    memo: dict[int, object] = {}
    inside: set[int] = set()
    for sub in module.modules():
        if id(sub) in inside or not isinstance(sub, torch.jit.ScriptModule):
            continue
        inside.update(id(m) for m in sub.modules())
        buffer = io.BytesIO()
        where = next((t.device for t in [*sub.parameters(), *sub.buffers()]), None)
        with warnings.catch_warnings():
            # torch 2.14 deprecates TorchScript; the caller chose it, and a warning per copy
            # (one per selection candidate) would say nothing they can act on here.
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(sub, buffer)
            buffer.seek(0)
            memo[id(sub)] = torch.jit.load(buffer, map_location=where)
    return copy.deepcopy(module, memo)
