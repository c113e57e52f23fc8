"""The one place that resolves a method's hyper-parameters, for the library's callers.

The pipeline and the benchmark both come here. Precedence, lowest first:

1. the method's config defaults (applied by :func:`delete.methods.create_method`);
2. the method module's ``RECOMMENDED_HPARAMS[dataset]`` -- except for a method that selects
   its own settings (DELETE, see :mod:`delete.selection`) when ``auto`` is on: a
   recommendation tuned on one dataset would pin ``lr``/``epochs`` and switch the selection
   off on every other;
3. the task's recipe (:meth:`~delete.applications.TaskSpec.hparam_defaults`: its batch size,
   and DELETE's fixed settings for face, backdoor and segmentation);
4. what the request or the caller asked for.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from delete.methods import get_method_class

__all__ = ["resolve_hparams", "SELECTION_SAMPLE_SIZE"]

#: Retained training images the pipeline's selection sample holds.
SELECTION_SAMPLE_SIZE = 500


def resolve_hparams(
    method: str,
    requested: Mapping[str, Any],
    *,
    dataset: str | None = None,
    task_defaults: Mapping[str, Any] | None = None,
    auto: bool = True,
) -> dict[str, Any]:
    """Merged hyper-parameters of ``method`` (not yet validated).

    Example:
        >>> resolve_hparams("delete", {}, dataset="mnist5k")
        {}
        >>> resolve_hparams("delete", {"seed": 1}, dataset="mnist5k", auto=False)
        {'lr': 0.002, 'epochs': 20, 'seed': 1}
        >>> resolve_hparams("delete", {}, task_defaults={"lr": 1e-4, "batch_size": 16})
        {'lr': 0.0001, 'batch_size': 16}
    """
    cls = get_method_class(method)
    base: dict[str, Any] = {}
    if dataset is not None and not (auto and cls.auto_select):
        recommended = getattr(sys.modules[cls.__module__], "RECOMMENDED_HPARAMS", {})
        if isinstance(recommended, dict):
            base = dict(recommended.get(dataset, {}))
    return {**base, **(task_defaults or {}), **requested}
