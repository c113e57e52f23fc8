"""DELETE beyond image classification: face identities, backdoor removal, segmentation.

Every task runs on the same registry, engine and :func:`delete.unlearn` API; a task only
brings its data, its default model, its training loss and its own metrics, collected in a
:class:`TaskSpec`. The pipeline picks one by name from :data:`TASKS`.

Example:
    >>> sorted(TASKS)
    ['backdoor', 'classification', 'face', 'segmentation']
    >>> get_task("face").headline
    ('acc_forget', 'acc_retain', 'tar_forget', 'tar_retain')
"""

from __future__ import annotations

from typing import Any

# Importing the model modules registers "face_cosine", "tiny_fcn" and "tiny_unet" with
# build_model, so checkpoints of these architectures load once delete.applications is imported.
from delete.applications import face_model as _face_model  # noqa: F401
from delete.applications import fcn as _fcn  # noqa: F401
from delete.applications import unet as _unet  # noqa: F401
from delete.applications.backdoor import BACKDOOR_TASK
from delete.applications.classification import CLASSIFICATION_TASK
from delete.applications.face import FACE_TASK
from delete.applications.segmentation import SEGMENTATION_TASK
from delete.applications.task_spec import LossFn, TaskData, TaskSpec
from delete.errors import UnlearningError

__all__ = ["TASKS", "LossFn", "TaskData", "TaskSpec", "UnknownTaskError", "get_task", "list_tasks"]


class UnknownTaskError(UnlearningError, KeyError):
    """No task is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


#: Every task by its ``task:`` name.
TASKS: dict[str, TaskSpec[Any]] = {
    spec.name: spec for spec in (CLASSIFICATION_TASK, FACE_TASK, BACKDOOR_TASK, SEGMENTATION_TASK)
}


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec[Any]:
    """The task registered as ``name``.

    Raises:
        UnknownTaskError: No such task.

    Example:
        >>> get_task("ocr")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.applications.UnknownTaskError: unknown task 'ocr'; known: backdoor, ...
    """
    try:
        return TASKS[name]
    except KeyError:
        raise UnknownTaskError(f"unknown task {name!r}; known: {', '.join(list_tasks())}") from None
