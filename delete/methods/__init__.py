"""Registered unlearning methods: DELETE and the baselines it is compared with.

Each module registers its class with :func:`register_method`; importing this package
imports them all so that :func:`list_methods` is complete.
"""

from __future__ import annotations

from delete.methods import bad_teacher as _bad_teacher  # noqa: F401  (registers "bad_teacher")
from delete.methods import boundary_shrink as _boundary_shrink  # noqa: F401
from delete.methods import delete as _delete  # noqa: F401  (registers "delete")
from delete.methods import finetune as _finetune  # noqa: F401
from delete.methods import gradient_ascent as _gradient_ascent  # noqa: F401
from delete.methods import l1_sparse as _l1_sparse  # noqa: F401
from delete.methods import random_label as _random_label  # noqa: F401
from delete.methods import retrain as _retrain  # noqa: F401
from delete.methods import salun as _salun  # noqa: F401
from delete.methods import scrub as _scrub  # noqa: F401
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
