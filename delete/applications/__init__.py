"""DELETE beyond image classification: face identities, backdoor removal, segmentation.

Every task runs on the same registry, engine and :func:`delete.unlearn` API; a task only
brings its data, its default model, its training loss and its own metrics, collected in a
:class:`TaskSpec`. The pipeline picks one by name from :data:`TASKS`.

Layout: one subpackage per task beyond classification (:mod:`~delete.applications.face`,
:mod:`~delete.applications.backdoor`, :mod:`~delete.applications.segmentation`), each with its
data, model, loss, metrics and spec modules. Classification stays one module
(:mod:`~delete.applications.classification`): its data, models and metrics are the library's
own (:mod:`delete.data`, :mod:`delete.models`, :mod:`delete.metrics`), so it only wires them
into a spec. The benchmark of the tasks is :mod:`delete.bench.applications`.

Example:
    >>> sorted(TASKS)
    ['backdoor', 'classification', 'face', 'segmentation']
    >>> get_task("face").headline
    ('acc_forget', 'acc_retain', 'tar_forget', 'tar_retain')
"""

from __future__ import annotations

from typing import Any, TypeVar

# Importing the task subpackages registers their architectures ("face_cosine", "tiny_fcn",
# "tiny_unet") with build_model, so checkpoints of these load once delete.applications is
# imported.
from delete.applications.backdoor import BACKDOOR_TASK
from delete.applications.classification import CLASSIFICATION_TASK
from delete.applications.face import FACE_TASK
from delete.applications.segmentation import SEGMENTATION_TASK
from delete.applications.task_spec import LossFn, TaskData, TaskSpec
from delete.errors import UnlearningError
from delete.registry import Registry

__all__ = [
    "TASKS",
    "LossFn",
    "TaskData",
    "TaskSpec",
    "UnknownTaskError",
    "get_task",
    "list_tasks",
    "register_task",
]


class UnknownTaskError(UnlearningError, KeyError):
    """No task is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


#: Every task by its ``task:`` name (same rules as the method, model and dataset registries).
TASKS: Registry[TaskSpec[Any]] = Registry("task", UnknownTaskError)

S = TypeVar("S", bound=TaskSpec[Any])


def register_task(spec: S) -> S:
    """Register ``spec`` under its :attr:`~TaskSpec.name` and return it.

    Raises:
        DuplicateRegistrationError: Another task already holds that name.

    Example:
        >>> from dataclasses import replace
        >>> register_task(replace(get_task("face"), summary="x"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DuplicateRegistrationError: task 'face' is already registered as ...
    """
    TASKS.add(spec.name, spec)
    return spec


for _spec in (CLASSIFICATION_TASK, FACE_TASK, BACKDOOR_TASK, SEGMENTATION_TASK):
    register_task(_spec)


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return TASKS.names()


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
    return TASKS.get(name)
