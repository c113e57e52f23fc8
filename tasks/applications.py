"""The pipeline side of ``task:``: one path for classification, faces, backdoors, segmentation.

Every task starts from the model's DVC-pinned dataset (a registered ImageFolder or the demo
digits): classification uses it as is, face treats the classes as identities, backdoor poisons
the training split BadNets-style with the options recorded on the model at bootstrap,
segmentation composes scenes from the digits. The task's own
:class:`~delete.applications.TaskSpec` then supplies the forget set, the files it is made of,
the metrics, the behaviour the Evidently report compares and the default gates; nothing here
or in the flows branches on which task it is.

A registered model carries its task in the ``task`` tag and the task's data options in
``task.options`` (JSON), so an unlearning run rebuilds exactly the data the model was trained
on. Models without the tag are classification models.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn
from torch.utils.data import Dataset

from delete import resolve_device
from delete.applications import get_task
from delete.applications.task_spec import TaskSpec
from delete.data import DatasetBundle
from delete.errors import InvalidForgetSetError
from tasks._common import PipelineError
from tasks.dataset import resolve_forget_classes
from tasks.plots import mia_histogram_plot, per_class_accuracy_plot
from tasks.report import EvidentlyReport, build_evidently_report_from_logits

__all__ = [
    "CLASSIFICATION",
    "TAG_TASK",
    "TAG_TASK_OPTIONS",
    "DEFAULT_TASK_OPTIONS",
    "TaskMismatchError",
    "TaskRun",
    "default_model_name",
    "model_task",
    "task_tags",
    "prepare_task_run",
    "evaluate_original",
    "evaluate_task_model_task",
    "task_evidently_report_task",
    "task_plots_task",
]

CLASSIFICATION = "classification"
TAG_TASK = "task"
TAG_TASK_OPTIONS = "task.options"

#: Data options a task's model is bootstrapped with (recorded on the version, reused on unlearn).
DEFAULT_TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "classification": {},
    "face": {},
    "backdoor": {"target": 0, "poison_rate": 0.05, "known_fraction": 0.01, "trigger_size": 3},
    "segmentation": {"num_train": 2000, "num_test": 300},
}


class TaskMismatchError(PipelineError):
    """The request's ``task`` is not the task the model was trained for."""


def model_task(tags: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    """The task and data options recorded on a model version (no tag: classification).

    Example:
        >>> model_task({})
        ('classification', {})
        >>> model_task({"task": "backdoor", "task.options": '{"target": 3}'})
        ('backdoor', {'target': 3})
    """
    name = tags.get(TAG_TASK, CLASSIFICATION)
    raw = tags.get(TAG_TASK_OPTIONS)
    options = json.loads(raw) if raw else {}
    if not isinstance(options, dict):
        raise PipelineError(f"tag {TAG_TASK_OPTIONS} must hold a JSON object, got {raw!r}")
    return name, options


def default_model_name(base: str, task: str) -> str:
    """The demo's registered-model name of ``task``: ``base`` for classification, the main job,
    ``base-<task>`` for the others.

    Example:
        >>> default_model_name("mnist5k-classifier", "face")
        'mnist5k-classifier-face'
    """
    return base if task == CLASSIFICATION else f"{base}-{task}"


def task_tags(task: str, options: Mapping[str, Any]) -> dict[str, str]:
    """The registry tags :func:`model_task` reads back.

    Example:
        >>> model_task(task_tags("backdoor", {"target": 3}))
        ('backdoor', {'target': 3})
    """
    return {TAG_TASK: task, TAG_TASK_OPTIONS: json.dumps(dict(options), sort_keys=True)}


@dataclass(frozen=True)
class TaskRun:
    """One request's task: its data, forget classes and the training subsets DELETE sees.

    Attributes:
        name: The task (``classification``, ``face``, ``backdoor``, ``segmentation``).
        spec: Its :class:`~delete.applications.TaskSpec`.
        data: The task's data, built from the DVC-pinned bundle.
        options: The data options recorded on the model.
        forget_classes: Resolved, sorted class indices.
        forget_set: Training samples of the forget loader.
        retain_set: Training samples a retain-based method may use (and the selection sample
            is drawn from).
        manifest_indices: Indices into the DVC bundle's *training split* of the files the
            forget set is made of (written to the forget-set manifest and versioned by DVC).
    """

    name: str
    spec: TaskSpec[Any]
    data: Any
    options: dict[str, Any]
    forget_classes: tuple[int, ...]
    forget_set: Dataset
    retain_set: Dataset
    manifest_indices: list[int] = field(default_factory=list)

    @property
    def class_names(self) -> list[str]:
        return list(self.data.class_names)

    @property
    def num_classes(self) -> int:
        return int(self.data.num_classes)

    @property
    def forget_class_names(self) -> list[str]:
        return [self.class_names[c] for c in self.forget_classes]

    @property
    def headline(self) -> tuple[str, ...]:
        return self.spec.headline


def prepare_task_run(
    name: str,
    bundle: DatasetBundle,
    options: Mapping[str, Any],
    requested: Sequence[int | str],
) -> TaskRun:
    """Build the task's data from ``bundle`` and resolve the request's forget classes.

    Raises:
        UnknownTaskError: No such task.
        InvalidClassError: Unknown or invalid classes for the task (the background of a
            segmentation, anything but the target label of a backdoor removal).
        InvalidForgetSetError: The classes have no training samples.
    """
    spec = get_task(name)
    data = spec.load_data(bundle=bundle, **dict(options))
    classes = resolve_forget_classes(data, requested)
    forget_set = spec.forget_set(data, classes)
    if len(forget_set) == 0:  # type: ignore[arg-type]
        raise InvalidForgetSetError(
            f"forget classes {list(classes)} have no training samples; nothing to forget"
        )
    return TaskRun(
        name=name,
        spec=spec,
        data=data,
        options=dict(options),
        forget_classes=classes,
        forget_set=forget_set,
        retain_set=spec.retain_set(data, classes),
        manifest_indices=spec.forget_sources(data, bundle.train.labels, classes),
    )


def evaluate_original(task_name: str, model: nn.Module, data: Any) -> dict[str, float]:
    """An original model's metrics, on the CPU: its task's evaluation with the task's default
    forget classes (none for most tasks), the metrics that are defined (finite) only."""
    spec = get_task(task_name)
    measured = spec.evaluate(model, data, spec.default_forget_classes(data), torch.device("cpu"))
    return {k: float(v) for k, v in measured.items() if math.isfinite(float(v))}


def evaluate_task_model(
    model: nn.Module, run: TaskRun, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """The task's own metrics: scalars plus the per-class family (the gates read both)."""
    dev = resolve_device(device)
    home = next(model.parameters()).device
    metrics = run.spec.evaluate(model, run.data, run.forget_classes, dev)
    model.to(home)
    return {k: float(v) for k, v in metrics.items()}


def task_evidently_report(
    original: nn.Module,
    unlearned: nn.Module,
    run: TaskRun,
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    request_id: str | None = None,
    parent_version: int | None = None,
) -> EvidentlyReport:
    """Evidently classification + drift report of the retained behaviour, parent vs unlearned,
    titled with the request; the forgotten classes are left out of the retained metrics."""
    dev = resolve_device(device)
    ref_logits, labels = run.spec.behaviour(original, run.data, run.forget_classes, dev)
    cur_logits, _ = run.spec.behaviour(unlearned, run.data, run.forget_classes, dev)
    parent = "parent model" if parent_version is None else f"parent model (v{parent_version})"
    # Forgotten classes the behaviour sample leaves out are left out of the label set too; a
    # backdoor's target class stays in (its clean images must keep working).
    present = set(labels.unique().tolist())
    excluded = [c for c in run.forget_classes if c not in present]
    return build_evidently_report_from_logits(
        ref_logits,
        cur_logits,
        labels,
        run.class_names,
        out_dir,
        request_id=request_id,
        forget_classes=excluded or None,
        reference_name=parent,
        current_name="unlearned model",
    )


def task_plots(
    original: nn.Module,
    unlearned: nn.Module,
    run: TaskRun,
    before: Mapping[str, float],
    after: Mapping[str, float],
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
) -> list[Path]:
    """``per_class.png`` (the per-class family, before/after) and, where the task has one,
    ``membership.png`` (forget-class loss of training members vs unseen test images)."""
    what = run.spec.per_class_label
    directory = Path(out_dir)
    plots = [
        per_class_accuracy_plot(
            run.spec.per_class(before, run.class_names),
            run.spec.per_class(after, run.class_names),
            run.class_names,
            run.forget_classes,
            directory / "per_class.png",
            ylabel=f"{what} (%)",
            title=f"{run.name}: per-class {what}; forgotten: {run.forget_class_names} (shaded)",
        )
    ]
    if run.spec.membership is not None:
        dev = resolve_device(device)
        plots.append(
            mia_histogram_plot(
                run.spec.membership(original, run.data, run.forget_classes, dev),
                run.spec.membership(unlearned, run.data, run.forget_classes, dev),
                directory / "membership.png",
            )
        )
    return plots


evaluate_task_model_task = task(name="evaluate-task-model", cache_policy=NO_CACHE)(
    evaluate_task_model
)
task_evidently_report_task = task(name="evidently-report", cache_policy=NO_CACHE)(
    task_evidently_report
)
task_plots_task = task(name="plots", cache_policy=NO_CACHE)(task_plots)
