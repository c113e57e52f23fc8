"""Any torchvision classification model by name, with fresh weights (never downloaded)."""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from delete.errors import UnknownModelError

__all__ = ["build_torchvision_classifier", "list_torchvision_classifiers"]

_WEIGHT_ARGS = ("weights", "pretrained", "weights_backbone")


def list_torchvision_classifiers() -> list[str]:
    """Names of torchvision's image classification models (``torchvision.models`` proper).

    Example:
        >>> "resnet18" in list_torchvision_classifiers()
        True
    """
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _adapt_first_conv(model: nn.Module, in_channels: int, name: str) -> None:
    """Swap the first ``Conv2d`` (in registration order, the input layer in torchvision's
    classifiers) for one that takes ``in_channels``; its fresh weights are re-initialised."""
    found = next(((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise UnknownModelError(f"torchvision model {name!r} has no Conv2d input layer to adapt")
    path, module = found
    if module.groups != 1 or module.in_channels != 3:
        raise UnknownModelError(
            f"torchvision model {name!r}: first conv {path!r} (in_channels={module.in_channels},"
            f" groups={module.groups}) cannot be adapted to in_channels={in_channels}"
        )
    replacement = nn.Conv2d(
        in_channels,
        module.out_channels,
        kernel_size=module.kernel_size,  # type: ignore[arg-type]
        stride=module.stride,  # type: ignore[arg-type]
        padding=module.padding,  # type: ignore[arg-type]
        dilation=module.dilation,  # type: ignore[arg-type]
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
    )
    nn.init.kaiming_normal_(replacement.weight, mode="fan_out", nonlinearity="relu")
    if replacement.bias is not None:
        nn.init.zeros_(replacement.bias)
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attr, replacement)


def build_torchvision_classifier(
    name: str, num_classes: int, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """Build ``torchvision.models.<name>`` with ``weights=None`` and ``num_classes`` outputs.

    Args:
        name: A torchvision classifier (see :func:`list_torchvision_classifiers`).
        num_classes: Output width.
        in_channels: Input channels; when not 3 the first conv is replaced (fresh weights).
        **kwargs: Passed to the torchvision builder (e.g. ``image_size=32`` for ViTs).

    Raises:
        UnknownModelError: Unknown name, pretrained weights asked for, arguments the builder
            rejects, or an input layer that cannot take ``in_channels``.

    Example:
        >>> import torch
        >>> net = build_torchvision_classifier("resnet18", num_classes=3, in_channels=1)
        >>> net.eval()(torch.zeros(1, 1, 32, 32)).shape
        torch.Size([1, 3])
    """
    import torchvision

    known = list_torchvision_classifiers()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownModelError(
            f"unknown torchvision classifier {name!r}; {hint}({len(known)} available, see"
            " delete.models.list_torchvision_classifiers())"
        )
    asked = [k for k in _WEIGHT_ARGS if kwargs.get(k) not in (None, False)]
    if asked:
        raise UnknownModelError(
            f"torchvision model {name!r}: pretrained weights ({', '.join(asked)}) are never"
            " downloaded; load a checkpoint with delete.checkpoint.load_model instead"
        )
    options = {k: v for k, v in kwargs.items() if k not in _WEIGHT_ARGS}
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise UnknownModelError(f"torchvision model {name!r} rejected {options}: {reason}") from exc
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, name)
    return model
