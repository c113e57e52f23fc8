"""Model builders by name, and the JSON-able architecture spec stored next to the weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from delete.errors import UnknownModelError

__all__ = ["ModelSpec", "register_model", "build_model", "list_models"]

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture without unpickling code.

    Attributes:
        arch: A registered builder name (``small_cnn``, ``resnet18_cifar``) or
            ``torchvision:<name>`` for any torchvision classifier.
        num_classes: Output width.
        in_channels: Input channels.
        image_size: Input height/width, for export examples and validation.
        kwargs: Extra builder keyword arguments.
    """

    arch: str
    num_classes: int
    in_channels: int = 1
    image_size: int = 28
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {"arch", "num_classes", "in_channels", "image_size", "kwargs"}
        unknown = set(data) - known
        if unknown or "arch" not in data or "num_classes" not in data:
            raise ValueError(
                f"invalid model spec {data!r}: needs arch and num_classes,"
                f" got extra {sorted(unknown)}"
            )
        return cls(**data)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(num_classes, in_channels, **kwargs) -> nn.Module``."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Registered builder names (``torchvision:<name>`` is accepted in addition)."""
    return sorted(_BUILDERS)


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the architecture described by ``spec`` with fresh weights.

    Example:
        >>> net = build_model(ModelSpec("small_cnn", num_classes=3, in_channels=1))
        >>> net.classifier.out_features
        3
    """
    if spec.arch.startswith("torchvision:"):
        from delete.models.torchvision_models import build_torchvision_classifier

        return build_torchvision_classifier(
            spec.arch.split(":", 1)[1], spec.num_classes, spec.in_channels, **spec.kwargs
        )
    try:
        builder = _BUILDERS[spec.arch]
    except KeyError:
        # UnknownModelError is a ValueError, as this used to raise.
        raise UnknownModelError(
            f"unknown architecture {spec.arch!r}; known: {', '.join(list_models())}"
            " or torchvision:<name>"
        ) from None
    return builder(num_classes=spec.num_classes, in_channels=spec.in_channels, **spec.kwargs)
