"""The pipeline side of ``task:``: face identities, backdoor removal and segmentation requests.

Every task starts from the same DVC-pinned digits (``data/``): face treats the classes as
identities, backdoor poisons the training split BadNets-style with the options recorded on the
model at bootstrap, segmentation composes scenes from the digits. The task's own
:class:`~delete.applications.TaskSpec` then supplies the forget set, the metrics and the model
architecture; unlearning is the same :func:`delete.run_unlearning` as for classification.

A registered model carries its task in the ``task`` tag and the task's data options in
``task.options`` (JSON), so an unlearning run rebuilds exactly the data the model was trained
on. Models without the tag are classification models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete import resolve_device
from delete.applications import get_task
from delete.applications.backdoor import BackdoorData
from delete.applications.segmentation_data import SegmentationBundle
from delete.applications.task_spec import TaskSpec
from delete.data import DatasetBundle
from delete.errors import InvalidClassError
from delete.metrics import predict
from tasks._common import PipelineError
from tasks.dataset import resolve_forget_classes
from tasks.plots import per_class_accuracy_plot
from tasks.report import EvidentlyReport, build_evidently_report_from_logits

__all__ = [
    "CLASSIFICATION",
    "TAG_TASK",
    "TAG_TASK_OPTIONS",
    "DEFAULT_TASK_OPTIONS",
    "TaskMismatchError",
    "TaskRun",
    "model_task",
    "task_tags",
    "prepare_task_run",
    "evaluate_task_model_task",
    "task_evidently_report_task",
    "task_plots_task",
]

CLASSIFICATION = "classification"
TAG_TASK = "task"
TAG_TASK_OPTIONS = "task.options"

#: Data options a task's model is bootstrapped with (recorded on the version, reused on unlearn).
DEFAULT_TASK_OPTIONS: dict[str, dict[str, Any]] = {
    "face": {},
    "backdoor": {"target": 0, "poison_rate": 0.05, "known_fraction": 0.01, "trigger_size": 3},
    "segmentation": {"num_train": 2000, "num_test": 300},
}

#: Pixels sampled for the segmentation Evidently report (all pixels would be ~300k rows).
_EVIDENTLY_PIXELS = 20_000


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


def task_tags(task: str, options: Mapping[str, Any]) -> dict[str, str]:
    """The registry tags :func:`model_task` reads back.

    Example:
        >>> model_task(task_tags("backdoor", {"target": 3}))
        ('backdoor', {'target': 3})
    """
    return {TAG_TASK: task, TAG_TASK_OPTIONS: json.dumps(dict(options), sort_keys=True)}


@dataclass
class TaskRun:
    """One request's task: its data, forget classes and the training subsets DELETE sees.

    Attributes:
        name: The task (``face``, ``backdoor``, ``segmentation``).
        spec: Its :class:`~delete.applications.TaskSpec`.
        data: The task's data, built from the DVC-pinned bundle.
        options: The data options recorded on the model.
        forget_classes: Resolved, sorted class indices.
        forget_set: Training samples of the forget loader.
        retain_set: Training samples a retain-based method may use.
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
    def headline(self) -> tuple[str, ...]:
        return self.spec.headline


def _manifest_indices(data: Any, bundle: DatasetBundle, classes: tuple[int, ...]) -> list[int]:
    if isinstance(data, BackdoorData):
        # the defender's known poisoned samples; poisoning keeps the bundle's sample order
        return [int(i) for i in data.known.tolist()]
    if isinstance(data, SegmentationBundle):
        # scene class c is digit class c - 1 (class 0 is the background)
        digits = torch.tensor([c - 1 for c in classes])
        return torch.nonzero(torch.isin(bundle.train.labels, digits)).flatten().tolist()
    labels = bundle.train.labels
    return torch.nonzero(torch.isin(labels, torch.tensor(classes))).flatten().tolist()


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
    """
    spec = get_task(name)
    data = spec.load_data(bundle=bundle, **dict(options))
    classes = resolve_forget_classes(data, requested)
    if isinstance(data, SegmentationBundle) and 0 in classes:
        raise InvalidClassError(
            f"class 0 ({data.class_names[0]!r}) is the background of every scene and cannot be "
            'forgotten; name digit classes, e.g. "3"'
        )
    forget_set = spec.forget_set(data, classes)
    retain_set = spec.retain_set(data, classes)
    return TaskRun(
        name=name,
        spec=spec,
        data=data,
        options=dict(options),
        forget_classes=classes,
        forget_set=forget_set,
        retain_set=retain_set,
        manifest_indices=_manifest_indices(data, bundle, classes),
    )


def evaluate_task_model(
    model: nn.Module, run: TaskRun, device: str | torch.device = "cpu"
) -> dict[str, float]:
    """The task's own metrics (identity accuracy and TAR, ASR and clean accuracy, IoU)."""
    dev = resolve_device(device)
    home = next(model.parameters()).device
    metrics = run.spec.evaluate(model, run.data, run.forget_classes, dev)
    model.to(home)
    return {k: float(v) for k, v in metrics.items()}


def _test_logits(model: nn.Module, dataset: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    logits, labels = predict(model, dataset, device)
    return logits.float(), labels


def _behaviour_sample(
    model: nn.Module, run: TaskRun, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Logits ``(N, C)`` and labels of what the retained behaviour is judged on.

    Face: test images of the retained identities. Backdoor: the whole clean test split (the
    target class must keep working on clean images). Segmentation: a seeded sample of test
    pixels whose class is retained.
    """
    logits, labels = _test_logits(model, run.data.test, device)
    if isinstance(run.data, BackdoorData):
        return logits, labels
    forget = torch.tensor(run.forget_classes)
    if logits.dim() == 4:  # (N, C, H, W) -> one row per pixel
        logits = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        labels = labels.reshape(-1)
        keep = (labels != run.data.ignore_index) & ~torch.isin(labels, forget)
        index = torch.nonzero(keep).flatten()
        generator = torch.Generator().manual_seed(0)
        chosen = index[torch.randperm(len(index), generator=generator)[:_EVIDENTLY_PIXELS]]
        chosen = chosen.sort().values
        return logits[chosen], labels[chosen]
    keep = ~torch.isin(labels, forget)
    return logits[keep], labels[keep]


def task_evidently_report(
    original: nn.Module,
    unlearned: nn.Module,
    run: TaskRun,
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
) -> EvidentlyReport:
    """Evidently classification + drift report of the retained behaviour, parent vs unlearned."""
    dev = resolve_device(device)
    ref_logits, labels = _behaviour_sample(original, run, dev)
    cur_logits, _ = _behaviour_sample(unlearned, run, dev)
    return build_evidently_report_from_logits(
        ref_logits, cur_logits, labels, run.class_names, out_dir
    )


def _per_class(
    model: nn.Module, run: TaskRun, metrics: Mapping[str, float], device: torch.device
) -> list[float]:
    if isinstance(run.data, SegmentationBundle):
        return [float(metrics.get(f"iou/{name}", 0.0)) for name in run.class_names]
    logits, labels = _test_logits(model, run.data.test, device)
    correct = (logits.argmax(1) == labels).double()
    return [
        100.0 * float(correct[labels == c].mean()) if bool((labels == c).any()) else 0.0
        for c in range(run.num_classes)
    ]


def task_plots(
    original: nn.Module,
    unlearned: nn.Module,
    run: TaskRun,
    before: Mapping[str, float],
    after: Mapping[str, float],
    out_dir: str | os.PathLike[str],
    device: str | torch.device = "cpu",
) -> list[Path]:
    """``per_class.png``: per-class IoU (segmentation) or clean test accuracy, before/after."""
    dev = resolve_device(device)
    what = "IoU" if isinstance(run.data, SegmentationBundle) else "clean test accuracy"
    return [
        per_class_accuracy_plot(
            _per_class(original, run, before, dev),
            _per_class(unlearned, run, after, dev),
            run.class_names,
            run.forget_classes,
            Path(out_dir) / "per_class.png",
            ylabel=f"{what} (%)",
            title=f"{run.name}: per-class {what}; forgotten: {list(run.forget_classes)} (shaded)",
        )
    ]


evaluate_task_model_task = task(
    evaluate_task_model, name="evaluate-task-model", cache_policy=NO_CACHE
)
task_evidently_report_task = task(
    task_evidently_report, name="evidently-report", cache_policy=NO_CACHE
)
task_plots_task = task(task_plots, name="plots", cache_policy=NO_CACHE)
