"""Plain image classification as a task, so ``task: classification`` dispatches like the others.

Its evaluation is the pipeline's full audit of a classifier (accuracies on the four splits,
H-Mean, both membership-inference attacks, per-class test accuracy), named in the same
vocabulary as the other tasks: ``acc_forget``/``acc_retain`` are test accuracies, as for faces.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.applications.task_spec import TaskSpec, small_cnn_spec
from delete.data import (
    DatasetBundle,
    UnlearningSplits,
    load_dataset,
    make_unlearning_splits,
    split_by_classes,
)
from delete.metrics import (
    accuracy,
    cross_entropy_loss,
    evaluate_unlearning,
    per_class_accuracy,
    predict,
)
from delete.metrics.shared import shared

__all__ = [
    "CLASSIFICATION_TASK",
    "TRAIN_RETAIN_EVAL_CAP",
    "evaluate_classification",
    "load_classification_data",
]

#: Retained training images the evaluation scores at most (a seeded subset): scoring all
#: 45,000 of a 50,000-image dataset took 50 s before and again after unlearning. The test
#: split, which the gates read, is always scored whole.
TRAIN_RETAIN_EVAL_CAP = 5000

#: ``UnlearningReport`` key -> the task vocabulary (test accuracies carry no ``test`` infix,
#: as for every other task).
_RENAMED = {"acc_test_forget": "acc_forget", "acc_test_retain": "acc_retain"}


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


def _splits(data: DatasetBundle, forget_classes: Sequence[int]) -> UnlearningSplits:
    """The four splits; inside :func:`delete.metrics.shared_predictions` the same split
    objects for the evaluation, the membership scores and the retained behaviour, so each
    split is predicted once per model."""
    classes = tuple(sorted(int(c) for c in forget_classes))
    return shared(
        ("splits", id(data.train), id(data.test), classes),
        (data.train, data.test),
        lambda: make_unlearning_splits(data.train, data.test, classes),
    )


def evaluate_classification(
    model: nn.Module,
    data: DatasetBundle,
    forget_classes: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    mia: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracies, H-Mean, membership inference and per-class test accuracy (%, AUC in [0, 1]).

    Returns:
        ``acc_forget`` / ``acc_retain`` (test accuracy on the forgotten / retained classes),
        ``acc_train_forget`` / ``acc_train_retain``, ``h_mean``; with ``mia``:
        ``mia_auc`` (forget-class members vs unseen test images), ``mia_auc_std``,
        ``mia_gap`` (``|mia_auc - 0.5|``: 0 when an attacker cannot tell them apart) and
        ``mia_svc_member_rate``; and ``class_acc/<class name>`` for every class. With no
        forget class (an original model): ``acc_retain`` (all classes) and ``class_acc/*``.

    Example:
        >>> from delete.data import ImageTensorDataset
        >>> ds = ImageTensorDataset(torch.zeros(4, 1, 2, 2), torch.tensor([0, 1, 0, 1]))
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> sorted(evaluate_classification(model, DatasetBundle("t", ds, ds, ["a", "b"]), [1],
        ...                                mia=False))  # doctest: +NORMALIZE_WHITESPACE
        ['acc_forget', 'acc_retain', 'acc_train_forget', 'acc_train_retain', 'class_acc/a',
         'class_acc/b', 'h_mean']
    """
    if not list(forget_classes):
        # An original model: every class is retained, so there is nothing to attack.
        logits, labels = predict(model, data.test, device)
        per_class = per_class_accuracy(logits, labels, data.num_classes).tolist()
        return {
            "acc_retain": accuracy(logits, labels),
            **{
                f"class_acc/{n}": float(v) for n, v in zip(data.class_names, per_class, strict=True)
            },
        }
    splits = _splits(data, forget_classes)
    report = evaluate_unlearning(
        model, splits, device, mia=mia, seed=seed, max_train_retain=TRAIN_RETAIN_EVAL_CAP
    )
    metrics = {_RENAMED.get(k, k): v for k, v in report.to_dict().items()}
    if report.mia_auc is not None:
        metrics["mia_gap"] = abs(float(report.mia_auc) - 0.5)
    metrics.update(
        {
            f"class_acc/{name}": float(acc)
            for name, acc in zip(data.class_names, report.per_class_test_accuracy, strict=True)
        }
    )
    return metrics


def forget_loss_scores(
    model: nn.Module,
    data: DatasetBundle,
    forget_classes: Sequence[int],
    device: torch.device | str = "cpu",
) -> dict[str, Tensor]:
    """``log(1 + loss)`` of the forgotten classes' training members and unseen test images.

    After a good unlearning an attacker cannot tell the two apart: their histograms overlap.
    """
    splits = _splits(data, forget_classes)
    out: dict[str, Tensor] = {}
    for name in ("train_forget", "test_forget"):
        logits, labels = predict(model, getattr(splits, name), device)
        out[name] = torch.log1p(cross_entropy_loss(logits, labels))
    return out


def retained_test_logits(
    model: nn.Module,
    data: DatasetBundle,
    forget_classes: Sequence[int],
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor]:
    """Logits and labels of the retained classes' test images (what the Evidently report
    compares), in test-split order: the evaluation's ``test_retain`` split."""
    return predict(model, _splits(data, forget_classes).test_retain, device)


CLASSIFICATION_TASK: TaskSpec[DatasetBundle] = TaskSpec(
    name="classification",
    summary="Forget whole classes of an image classifier (the library's main job).",
    load_data=load_classification_data,
    model_spec=small_cnn_spec,
    forget_set=_forget_set,
    retain_set=_retain_set,
    retrain_set=_retain_set,
    evaluate=evaluate_classification,
    # No fixed recipe: DELETE selects its lr, BatchNorm policy and stopping epoch per model
    # (delete.selection); a request may still pin lr/epochs.
    delete_hparams={},
    headline=("acc_forget", "acc_retain", "mia_auc"),
    metrics=(
        "acc_forget",
        "acc_retain",
        "acc_train_forget",
        "acc_train_retain",
        "h_mean",
        "mia_auc",
        "mia_auc_std",
        "mia_gap",
        "mia_svc_member_rate",
    ),
    behaviour=retained_test_logits,
    membership=forget_loss_scores,
    default_gates={
        "max_acc_forget": 5.0,
        "max_drop_acc_retain": 3.0,
        "max_drop_class_acc": 5.0,
        "max_mia_gap": 0.1,
    },
)
