"""One call that evaluates an unlearned model on the four class-unlearning splits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from delete.data.splits import UnlearningSplits, seeded_subset
from delete.metrics._validation import MetricInputError
from delete.metrics.accuracy import accuracy
from delete.metrics.forget_vs_unseen_auc import forget_vs_unseen_auc
from delete.metrics.h_mean import h_mean
from delete.metrics.js_divergence import js_divergence
from delete.metrics.per_class_accuracy import per_class_accuracy
from delete.metrics.predict import predict
from delete.metrics.svc_mia import svc_mia

__all__ = ["UnlearningReport", "evaluate_unlearning", "REPORT_METRICS"]

#: Keys of :meth:`UnlearningReport.to_dict`, in order (``mia_*`` and ``js_*`` only when computed).
REPORT_METRICS: tuple[str, ...] = (
    "acc_train_forget",
    "acc_train_retain",
    "acc_test_forget",
    "acc_test_retain",
    "h_mean",
    "mia_svc_member_rate",
    "mia_auc",
    "mia_auc_std",
    "js_to_reference",
)


@dataclass
class UnlearningReport:
    """Evaluation of one unlearned model. Accuracies and rates in percent, AUC in [0, 1].

    Attributes:
        forget_classes: The forgotten classes.
        acc_train_forget: Accuracy on the forget classes' training samples (lower is better).
        acc_train_retain: Accuracy on the retained classes' training samples.
        acc_test_forget: Accuracy on the forget classes' test samples (lower is better).
        acc_test_retain: Accuracy on the retained classes' test samples (higher is better).
        h_mean: :func:`~delete.metrics.h_mean` of the two test accuracies.
        per_class_test_accuracy: Test accuracy of each class (``nan`` for a class without
            test samples).
        mia_svc_member_rate: :func:`~delete.metrics.svc_mia` headline (confidence attack).
        mia_auc: :func:`~delete.metrics.forget_vs_unseen_auc` mean AUC (0.5 is ideal).
        mia_auc_std: Its standard deviation over the folds.
        js_to_reference: Mean JS divergence to the reference (retrained) model on the
            forget-class training samples.
        mia_details: Every number the two attacks returned, prefixed ``svc_`` / ``auc_``.
    """

    forget_classes: tuple[int, ...]
    acc_train_forget: float
    acc_train_retain: float
    acc_test_forget: float
    acc_test_retain: float
    h_mean: float
    per_class_test_accuracy: list[float]
    mia_svc_member_rate: float | None = None
    mia_auc: float | None = None
    mia_auc_std: float | None = None
    js_to_reference: float | None = None
    mia_details: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        """Flat ``{metric: float}`` of the scalar metrics that were computed.

        Example:
            >>> report = UnlearningReport((3,), 0.0, 99.0, 0.0, 98.0, 98.99, [98.0, 0.0])
            >>> sorted(report.to_dict())[:3]
            ['acc_test_forget', 'acc_test_retain', 'acc_train_forget']
            >>> "mia_auc" in report.to_dict()
            False
        """
        out: dict[str, float] = {}
        for key in REPORT_METRICS:
            value = getattr(self, key)
            if value is not None:
                out[key] = float(value)
        return out


def _predict_split(
    model: nn.Module, splits: UnlearningSplits, name: str, device: str | torch.device
) -> tuple[Tensor, Tensor]:
    dataset = getattr(splits, name)
    if len(dataset) == 0:
        raise MetricInputError(
            f"split {name} is empty (forget classes {list(splits.forget_classes)}); "
            "every class needs train and test samples"
        )
    return predict(model, dataset, device)


def evaluate_unlearning(
    model: nn.Module,
    splits: UnlearningSplits,
    device: str | torch.device = "auto",
    *,
    reference: nn.Module | None = None,
    mia: bool = True,
    seed: int = 0,
    max_shadow: int | None = 1000,
    max_train_retain: int | None = None,
) -> UnlearningReport:
    """Accuracies on the four splits, H-Mean, per-class accuracy, both MIAs and JS to a reference.

    Every split is read without augmentation. The SVC attack uses retained train samples as
    members and retained test samples as non-members, subsampled to the same size (at most
    ``max_shadow`` each, seeded by ``seed``) and targets the forget-class training samples;
    the AUC attack compares forget-class training samples with forget-class test samples.
    On MNIST-5k the whole evaluation takes a few seconds on a CPU.

    Args:
        model: The unlearned classifier (never modified; its mode is restored).
        splits: The four splits from :func:`delete.data.make_unlearning_splits`.
        device: Where to run inference.
        reference: The model retrained without the forget classes; enables ``js_to_reference``.
        mia: Compute the two membership-inference attacks (the slowest part).
        seed: Seed of the attacks' subsampling and cross-validation folds.
        max_shadow: Cap on SVC shadow samples per side (``None``: use all).
        max_train_retain: Score at most this many retained *training* samples (a seeded
            subset; ``None``: all). The largest split by far on real datasets (45,000 of 50,000
            images), and only ``acc_train_retain`` and the SVC attack's members read it.

    Returns:
        An :class:`UnlearningReport`.

    Raises:
        MetricInputError: A split is empty.

    Example:
        >>> from delete.data import ImageTensorDataset, make_unlearning_splits
        >>> gen = torch.Generator().manual_seed(0)
        >>> data = ImageTensorDataset(torch.rand(40, 1, 2, 2, generator=gen), torch.arange(40) % 2)
        >>> splits = make_unlearning_splits(data, data, [1])
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> report = evaluate_unlearning(model, splits, "cpu", mia=False)
        >>> sorted(report.to_dict())
        ['acc_test_forget', 'acc_test_retain', 'acc_train_forget', 'acc_train_retain', 'h_mean']
    """
    train_forget = _predict_split(model, splits, "train_forget", device)
    if max_train_retain is not None and len(splits.train_retain) > max_train_retain:
        # A seeded subset of the split: the same images before and after unlearning.
        subset = seeded_subset(splits.train_retain, max_train_retain, seed)
        train_retain = predict(model, subset, device)
    else:
        train_retain = _predict_split(model, splits, "train_retain", device)
    test_forget = _predict_split(model, splits, "test_forget", device)
    test_retain = _predict_split(model, splits, "test_retain", device)

    acc_test_forget = accuracy(*test_forget)
    acc_test_retain = accuracy(*test_retain)
    test_logits = torch.cat([test_forget[0], test_retain[0]])
    test_labels = torch.cat([test_forget[1], test_retain[1]])
    per_class = per_class_accuracy(test_logits, test_labels, test_logits.shape[1])

    report = UnlearningReport(
        forget_classes=tuple(splits.forget_classes),
        acc_train_forget=accuracy(*train_forget),
        acc_train_retain=accuracy(*train_retain),
        acc_test_forget=acc_test_forget,
        acc_test_retain=acc_test_retain,
        h_mean=h_mean(acc_test_forget, acc_test_retain),
        per_class_test_accuracy=[float(v) for v in per_class.tolist()],
    )
    if mia:
        svc = svc_mia(*train_retain, *test_retain, *train_forget, seed=seed, max_shadow=max_shadow)
        auc = forget_vs_unseen_auc(*train_forget, *test_forget, seed=seed)
        report.mia_svc_member_rate = svc["member_rate"]
        report.mia_auc = auc["auc"]
        report.mia_auc_std = auc["auc_std"]
        report.mia_details = {f"svc_{k}": v for k, v in svc.items()}
        report.mia_details.update({f"auc_{k}": v for k, v in auc.items()})
    if reference is not None:
        ref_logits, _ = predict(reference, splits.train_forget, device)
        report.js_to_reference = js_divergence(train_forget[0], ref_logits)
    if any(math.isnan(v) for v in report.to_dict().values()):
        raise MetricInputError("a metric came out NaN; the model produced non-finite logits")
    return report
