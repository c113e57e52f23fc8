"""The method registry: methods register themselves, callers create them by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from delete.errors import InvalidHparamError, UnknownMethodError
from delete.methods.base import MethodConfig, UnlearningMethod
from delete.registry import Registry

__all__ = ["register_method", "create_method", "list_methods", "get_method_class", "method_info"]

#: Every method class by name (same rules as the model, dataset and task registries).
_REGISTRY: Registry[type[UnlearningMethod]] = Registry("unlearning method", UnknownMethodError)
M = TypeVar("M", bound=type[UnlearningMethod])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator that adds a method to the registry under ``name``.

    Raises:
        DuplicateRegistrationError: Another class already holds ``name``.

    Example:
        >>> from delete.methods import list_methods
        >>> "delete" in list_methods()
        True
    """

    def decorator(cls: M) -> M:
        _REGISTRY.add(name, cls)
        cls.name = name
        return cls

    return decorator


def list_methods(*, needs_retain: bool | None = None) -> list[str]:
    """Registered method names, sorted; optionally filtered on whether they need retained data."""
    return [
        name
        for name, cls in _REGISTRY.items()
        if needs_retain is None or cls.needs_retain == needs_retain
    ]


def get_method_class(name: str) -> type[UnlearningMethod]:
    """The class registered under ``name``; raises :class:`UnknownMethodError` otherwise."""
    return _REGISTRY.get(name)


def build_config(cls: type[UnlearningMethod], hparams: dict[str, Any]) -> MethodConfig:
    """Validate ``hparams`` against the method's frozen config dataclass."""
    known = {f.name: f for f in dataclasses.fields(cls.config_cls)}
    unknown = sorted(set(hparams) - set(known))
    if unknown:
        raise InvalidHparamError(
            f"method {cls.name!r} has no hyper-parameter(s) {', '.join(unknown)}; "
            f"valid: {', '.join(sorted(known))}"
        )
    coerced: dict[str, Any] = {}
    for key, value in hparams.items():
        default = getattr(cls.config_cls, key, None)
        # Ints are accepted where floats are expected (YAML writes 1 for 1.0), never the reverse.
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if default is not None and not isinstance(value, type(default)):
            raise InvalidHparamError(
                f"hyper-parameter {key!r} of method {cls.name!r} must be "
                f"{type(default).__name__}, got {type(value).__name__} {value!r}"
            )
        coerced[key] = value
    try:
        return cls.config_cls(**coerced)
    except TypeError as exc:
        raise InvalidHparamError(f"invalid hyper-parameters for {cls.name!r}: {exc}") from None


def create_method(name: str, **hparams: Any) -> UnlearningMethod:
    """Instantiate the method ``name`` with validated hyper-parameters.

    Example:
        >>> create_method("delete", epochs=2).config.epochs
        2
    """
    cls = get_method_class(name)
    return cls(build_config(cls, hparams))


def method_info(name: str) -> dict[str, Any]:
    """Registry entry as a dict: summary, reference, needs_retain and default hyper-parameters."""
    cls = get_method_class(name)
    return {
        "name": name,
        "summary": cls.summary,
        "reference": cls.reference,
        "needs_retain": cls.needs_retain,
        "defaults": dataclasses.asdict(cls.config_cls()),
    }
