"""The segmentation task: forget a class at every pixel; IoU per class, forgotten vs retained.

The forget set is the training images that contain a forgotten class; the retain set the
others. The evaluation accumulates one confusion matrix over the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.applications._evaluation import _outputs
from delete.applications.segmentation.data import SegmentationBundle
from delete.applications.segmentation.datasets import load_segmentation_data
from delete.applications.segmentation.loss import segmentation_loss
from delete.applications.segmentation.metrics import confusion_matrix, iou_per_class, mean_iou
from delete.applications.segmentation.model import segmentation_model_spec
from delete.applications.task_spec import TaskSpec
from delete.errors import DatasetError, InvalidClassError
from delete.metrics import predict
from delete.training import TrainConfig

__all__ = ["SEGMENTATION_TASK", "evaluate_segmentation"]

#: Pixels sampled for the Evidently report (all pixels would be ~300k rows).
_BEHAVIOUR_PIXELS = 20_000


def _split(data: SegmentationBundle, forget_classes: Sequence[int]) -> tuple[Dataset, Dataset]:
    if 0 in forget_classes:
        raise InvalidClassError(
            f"class 0 ({data.class_names[0]!r}) is the background of every scene and cannot be "
            'forgotten; name digit classes, e.g. "3"'
        )
    has = data.train.contains(forget_classes)
    if not bool(has.any()):
        raise DatasetError(f"no training image contains the class(es) {list(forget_classes)}")
    forget = data.train.subset(torch.nonzero(has).flatten())
    retain = data.train.subset(torch.nonzero(~has).flatten())
    return forget, retain


def _forget_set(data: SegmentationBundle, forget_classes: Sequence[int]) -> Dataset:
    """Training images with at least one pixel of a forgotten class."""
    return _split(data, forget_classes)[0]


def _retain_set(data: SegmentationBundle, forget_classes: Sequence[int]) -> Dataset:
    """Training images without any pixel of a forgotten class."""
    return _split(data, forget_classes)[1]


def _source_digits(
    data: SegmentationBundle, source_labels: Tensor, forget_classes: Sequence[int]
) -> list[int]:
    """The digit images a forgotten scene class is drawn from (scene class c is digit c - 1)."""
    digits = torch.tensor([c - 1 for c in forget_classes])
    return torch.nonzero(torch.isin(source_labels, digits)).flatten().tolist()


def _retained_pixels(
    model: nn.Module, data: SegmentationBundle, forget_classes: Sequence[int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """A seeded sample of test pixels whose class is retained, one logit row per pixel."""
    logits, labels = predict(model, data.test, device)
    logits = logits.float().permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    labels = labels.reshape(-1)
    forget = torch.as_tensor(list(forget_classes), dtype=torch.long)
    keep = (labels != data.ignore_index) & ~torch.isin(labels, forget)
    index = torch.nonzero(keep).flatten()
    generator = torch.Generator().manual_seed(0)
    chosen = (
        index[torch.randperm(len(index), generator=generator)[:_BEHAVIOUR_PIXELS]].sort().values
    )
    return logits[chosen], labels[chosen]


def evaluate_segmentation(
    model: nn.Module,
    data: SegmentationBundle,
    forget_classes: Sequence[int],
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Per-class IoU on the test split, the forgotten classes' IoU and the retained mIoU (all %).

    Returns:
        ``iou_forget`` (mean IoU of the forgotten classes), ``miou_retain`` (mean IoU of the
        other classes, background included), ``forget_as_background`` (share of the forgotten
        classes' pixels predicted as background, class 0), ``pixel_acc``, and
        ``class_iou/<class name>`` for every class.

    Example:
        >>> from delete.applications.segmentation.data import SegmentationTensorDataset
        >>> ds = SegmentationTensorDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4))
        >>> data = SegmentationBundle("toy", ds, ds, ["background", "thing"])
        >>> m = evaluate_segmentation(nn.Conv2d(1, 2, 1), data, [1])
        >>> sorted(m)[:3]
        ['class_iou/background', 'class_iou/thing', 'forget_as_background']
        >>> sorted(m)[3:]
        ['iou_forget', 'miou_retain', 'pixel_acc']
    """
    dev = torch.device(device) if isinstance(device, str) else device
    model.to(dev)
    k = data.num_classes
    conf = torch.zeros(k, k, dtype=torch.long)
    for logits, masks in _outputs(model, data.test, dev, batch_size=64):
        conf += confusion_matrix(logits.argmax(1), masks, k, data.ignore_index)
    iou = iou_per_class(conf)
    retained = [c for c in range(k) if c not in set(forget_classes)]
    forget_rows = conf[torch.as_tensor(list(forget_classes), dtype=torch.long)]
    forget_pixels = int(forget_rows.sum())
    metrics = {
        "iou_forget": 100.0 * mean_iou(iou, forget_classes),
        "forget_as_background": (
            100.0 * int(forget_rows[:, 0].sum()) / forget_pixels if forget_pixels else float("nan")
        ),
        "miou_retain": 100.0 * mean_iou(iou, retained),
        "pixel_acc": 100.0 * float(conf.diag().sum()) / max(int(conf.sum()), 1),
    }
    metrics.update(
        {
            f"class_iou/{name}": 100.0 * float(v)
            for name, v in zip(data.class_names, iou, strict=True)
        }
    )
    return metrics


SEGMENTATION_TASK: TaskSpec[SegmentationBundle] = TaskSpec(
    name="segmentation",
    summary="Forget a class at every pixel of a segmentation network; IoU per class.",
    load_data=load_segmentation_data,
    model_spec=segmentation_model_spec,
    forget_set=_forget_set,
    retain_set=_retain_set,
    retrain_set=_retain_set,
    evaluate=evaluate_segmentation,
    train_loss=segmentation_loss,
    train_config=TrainConfig(epochs=8, lr=0.05),
    delete_hparams={"lr": 0.01, "epochs": 3},
    unlearn_batch_size=32,
    headline=("iou_forget", "miou_retain", "forget_as_background", "pixel_acc"),
    metrics=("iou_forget", "miou_retain", "forget_as_background", "pixel_acc"),
    per_class_metric="class_iou",
    per_class_label="IoU",
    forget_sources=_source_digits,
    behaviour=_retained_pixels,
    default_gates={"max_iou_forget": 5.0, "max_drop_miou_retain": 5.0},
)
