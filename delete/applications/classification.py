"""Plain image classification as a task, so ``task: classification`` dispatches like the others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from delete.applications._evaluation import _outputs
from delete.applications.task_spec import TaskSpec
from delete.data import DatasetBundle, load_dataset, split_by_classes
from delete.models import ModelSpec

__all__ = ["CLASSIFICATION_TASK", "evaluate_classification", "load_classification_data"]


def load_classification_data(
    *, dataset: str = "mnist5k", bundle: DatasetBundle | None = None, **options: Any
) -> DatasetBundle:
    """Any dataset of :func:`delete.data.load_dataset` (``root=`` for on-disk ones).

    ``bundle``: an already-loaded dataset (e.g. the pipeline's DVC-pinned one), used as is.
    """
    if bundle is not None:
        return bundle
    return load_dataset(dataset, **options)


def _forget_set(data: DatasetBundle, forget_classes: Sequence[int]) -> Dataset:
    return split_by_classes(data.train, forget_classes)[0]


def _retain_set(data: DatasetBundle, forget_classes: Sequence[int]) -> Dataset:
    return split_by_classes(data.train, forget_classes)[1]


def _model_spec(data: DatasetBundle) -> ModelSpec:
    c, h, _ = data.image_shape
    return ModelSpec("small_cnn", data.num_classes, c, h)


def evaluate_classification(
    model: nn.Module,
    data: DatasetBundle,
    forget_classes: Sequence[int],
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Test accuracy (%) on the forgotten classes and on the retained ones.

    Example:
        >>> from delete.data import ImageTensorDataset
        >>> ds = ImageTensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> sorted(evaluate_classification(model, DatasetBundle("t", ds, ds, ["a", "b"]), [1]))
        ['acc_forget', 'acc_retain']
    """
    dev = torch.device(device) if isinstance(device, str) else device
    model.to(dev)
    pairs = [(out.argmax(1), y) for out, y in _outputs(model, data.test, dev)]
    preds, labels = torch.cat([p for p, _ in pairs]), torch.cat([y for _, y in pairs])
    is_forget = torch.isin(labels, torch.as_tensor(list(forget_classes), dtype=torch.long))
    correct = (preds == labels).double()
    return {
        "acc_forget": 100.0 * float(correct[is_forget].mean()),
        "acc_retain": 100.0 * float(correct[~is_forget].mean()),
    }


CLASSIFICATION_TASK: TaskSpec[DatasetBundle] = TaskSpec(
    name="classification",
    summary="Forget whole classes of an image classifier (the library's main job).",
    load_data=load_classification_data,
    model_spec=_model_spec,
    forget_set=_forget_set,
    retain_set=_retain_set,
    retrain_set=_retain_set,
    evaluate=evaluate_classification,
    delete_hparams={"lr": 0.01, "epochs": 20},
    headline=("acc_forget", "acc_retain"),
)
