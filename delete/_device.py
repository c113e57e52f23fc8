"""Device resolution: the device is always a parameter, ``"auto"`` picks CUDA when present."""

from __future__ import annotations

import torch

from delete.errors import InvalidDeviceError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a ``torch.device`` into a device.

    Args:
        device: ``"auto"`` selects CUDA when available, else MPS, else CPU.

    Returns:
        The resolved ``torch.device``.

    Raises:
        InvalidDeviceError: ``device`` names no torch device, or CUDA is asked for and absent.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device("tpu")
        Traceback (most recent call last):
        ...
        delete.errors.InvalidDeviceError: device 'tpu' is not a torch device; use 'auto', \
'cpu', 'cuda' or 'cuda:N'
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        # torch's own message lists every backend it was built with, over several lines.
        raise InvalidDeviceError(
            f"device {device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidDeviceError(
            f"device {device!r} requested but CUDA is not available; use device='auto'"
        )
    return resolved
