"""The registry of repair steps (the behaviour of every registry: `delete.registry.Registry`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from delete.errors import UnknownMethodError
from delete.methods._registry import build_config
from delete.methods.base import UnlearningMethod
from delete.registry import Registry

__all__ = ["create_repair", "list_repairs", "register_repair"]

R = TypeVar("R", bound=type[UnlearningMethod])

_REPAIRS: Registry[type[UnlearningMethod]] = Registry("repair step", UnknownMethodError)


def register_repair(name: str) -> Callable[[R], R]:
    """Class decorator: make a repair step available as ``repair(..., step=name)``.

    A repair step is an :class:`~delete.methods.base.UnlearningMethod` run by the same engine:
    its context's ``original`` is the model before unlearning, ``student`` the unlearned model,
    ``forget_loader`` the forget set and ``retain_loader`` the declared repair set.
    """

    def decorator(cls: R) -> R:
        _REPAIRS.add(name, cls)
        return cls

    return decorator


def create_repair(name: str, **hparams: Any) -> UnlearningMethod:
    """The repair step ``name`` with validated hyper-parameters (one-line errors)."""
    cls = _REPAIRS.get(name)
    return cls(build_config(cls, hparams))


def list_repairs() -> list[str]:
    """Registered repair steps, sorted."""
    return _REPAIRS.names()
