"""DELETE: class unlearning by decoupled distillation, with baselines and honest evaluation.

Example:
    >>> import delete
    >>> "delete" in delete.list_methods()
    True
"""

from __future__ import annotations

from delete._device import resolve_device
from delete.api import UnlearnResult, run_unlearning, unlearn
from delete.errors import (
    CheckpointError,
    IncompatibleInputError,
    InvalidClassError,
    InvalidDeviceError,
    InvalidForgetSetError,
    InvalidHparamError,
    MissingRetainDataError,
    NonFiniteLossError,
    UnknownMethodError,
    UnlearningError,
    UnsupportedOutputError,
)
from delete.losses import delete_loss
from delete.methods import create_method, list_methods, method_info, register_method
from delete.metrics import evaluate_unlearning

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "IncompatibleInputError",
    "InvalidClassError",
    "InvalidForgetSetError",
    "InvalidHparamError",
    "MissingRetainDataError",
    "NonFiniteLossError",
    "UnknownMethodError",
    "UnlearnResult",
    "UnlearningError",
    "UnsupportedOutputError",
    "InvalidDeviceError",
    "create_method",
    "delete_loss",
    "evaluate_unlearning",
    "list_methods",
    "method_info",
    "register_method",
    "resolve_device",
    "run_unlearning",
    "unlearn",
]
