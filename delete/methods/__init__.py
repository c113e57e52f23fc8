"""Registered unlearning methods: DELETE and the baselines it is compared with.

Each module registers its class with :func:`register_method`; importing this package
imports them all so that :func:`list_methods` is complete.
"""

from __future__ import annotations

from delete.methods import delete as _delete  # noqa: F401  (registers "delete")
from delete.methods._registry import (
    create_method,
    get_method_class,
    list_methods,
    method_info,
    register_method,
)
from delete.methods.base import Batch, MethodConfig, UnlearnContext, UnlearningMethod

__all__ = [
    "Batch",
    "MethodConfig",
    "UnlearnContext",
    "UnlearningMethod",
    "create_method",
    "get_method_class",
    "list_methods",
    "method_info",
    "register_method",
]
