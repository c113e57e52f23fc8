"""Model builders by name, and the JSON-able architecture spec stored next to the weights.

An architecture is named three ways: a registered builder (``small_cnn``), ``torchvision:<name>``
or an importable ``package.module:callable`` (a team's own model class or factory). The same
resolver serves a model card at registration and every later rebuild from the registry, so a
registered version never needs pickled code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from delete.errors import UnknownModelError
from delete.registry import Registry

__all__ = ["ModelSpec", "register_model", "build_model", "list_models", "import_callable"]

#: Builders by architecture name (same rules as the method, dataset and task registries).
#: ``torchvision:`` and ``package.module:callable`` names are resolved, never registered.
_BUILDERS: Registry[Callable[..., nn.Module]] = Registry(
    "architecture",
    UnknownModelError,
    also_known=("torchvision:<name> or package.module:callable",),
)


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild an architecture without unpickling code.

    Attributes:
        arch: A registered builder name (``small_cnn``, ``resnet18_cifar``) or
            ``torchvision:<name>`` for any torchvision classifier.
        num_classes: Output width.
        in_channels: Input channels.
        image_size: Input side (square) or ``(height, width)``, for export examples and
            validation.
        kwargs: Extra builder keyword arguments (for ``package.module:callable``: all of them,
            since such a callable's signature is its own).
    """

    arch: str
    num_classes: int
    in_channels: int = 1
    image_size: int | tuple[int, int] = 28
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def input_hw(self) -> tuple[int, int]:
        """``(height, width)`` of one input image.

        Example:
            >>> ModelSpec("small_cnn", 3, image_size=28).input_hw
            (28, 28)
            >>> ModelSpec("small_cnn", 3, image_size=(24, 32)).input_hw
            (24, 32)
        """
        if isinstance(self.image_size, int):
            return self.image_size, self.image_size
        height, width = self.image_size
        return int(height), int(width)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not isinstance(self.image_size, int):
            data["image_size"] = list(self.input_hw)  # JSON has no tuples; from_dict undoes it
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = {"arch", "num_classes", "in_channels", "image_size", "kwargs"}
        unknown = set(data) - known
        if unknown or "arch" not in data or "num_classes" not in data:
            raise ValueError(
                f"invalid model spec {data!r}: needs arch and num_classes,"
                f" got extra {sorted(unknown)}"
            )
        size = data.get("image_size")
        if isinstance(size, list | tuple):
            data = {**data, "image_size": (int(size[0]), int(size[1]))}
        return cls(**data)


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder ``fn(num_classes, in_channels, **kwargs) -> nn.Module``.

    Raises:
        DuplicateRegistrationError: Another builder already holds ``name``.
    """
    return _BUILDERS.register(name)


def list_models() -> list[str]:
    """Registered builder names (``torchvision:<name>`` is accepted in addition)."""
    return _BUILDERS.names()


def import_callable(target: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:attr"`` (``attr`` may be dotted).

    Raises:
        UnknownModelError: The module cannot be imported or has no such callable.

    Example:
        >>> import_callable("torch.nn:Linear").__name__
        'Linear'
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UnknownModelError(f"architecture {target!r} is not 'package.module:callable'")
    try:
        found: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure means "cannot be imported"
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UnknownModelError(
            f"architecture {target!r}: module {module_name!r} cannot be imported: {reason}"
        ) from None
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise UnknownModelError(
                f"architecture {target!r}: module {module_name!r} has no attribute {attr!r}"
            )
    if not callable(found):
        raise UnknownModelError(f"architecture {target!r} is not callable")
    return found  # type: ignore[no-any-return]


def _build_imported(spec: ModelSpec) -> nn.Module:
    # A team's own callable gets exactly the card's kwargs: its signature is not ours to guess.
    factory = import_callable(spec.arch)
    try:
        model = factory(**spec.kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UnknownModelError(
            f"architecture {spec.arch!r} failed with kwargs {spec.kwargs}: {reason}"
        ) from None
    if not isinstance(model, nn.Module):
        raise UnknownModelError(
            f"architecture {spec.arch!r} returned {type(model).__name__}, not a torch nn.Module"
        )
    return model


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the architecture described by ``spec`` with fresh weights.

    Example:
        >>> net = build_model(ModelSpec("small_cnn", num_classes=3, in_channels=1))
        >>> net.classifier.out_features
        3
    """
    if ":" in spec.arch and not spec.arch.startswith("torchvision:"):
        return _build_imported(spec)
    if spec.arch.startswith("torchvision:"):
        from delete.models.torchvision_models import build_torchvision_classifier

        return build_torchvision_classifier(
            spec.arch.split(":", 1)[1], spec.num_classes, spec.in_channels, **spec.kwargs
        )
    # UnknownModelError (a ValueError, as this always raised) listing every known form.
    builder = _BUILDERS.get(spec.arch)
    return builder(num_classes=spec.num_classes, in_channels=spec.in_channels, **spec.kwargs)
