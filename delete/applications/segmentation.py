"""Semantic-segmentation unlearning: forget a class at every pixel.

``delete.unlearn(model, forget_loader, [k])`` works unchanged: DELETE's loss already treats
``(N, C, H, W)`` logits pixel by pixel. The forget set is the training images that contain
class ``k``; on them the frozen teacher's logit of ``k`` is masked at every pixel, so the
student learns the teacher's next-best class on the object's pixels and keeps the teacher's
predictions everywhere else. That next-best class is often background; on the digit scenes,
whose model is trained with background down-weighted, it is mostly another digit (the
``forget_as_background`` metric reports the share).

Metrics: per-class IoU, the IoU of the forgotten class(es) (it should collapse towards 0) and
the mean IoU over the retained classes (background included).

Datasets by name: ``mnist_scenes`` (real MNIST-5k digits pasted onto canvases, offline; class
``d + 1`` is digit ``d``), ``voc`` and ``cityscapes`` (folders on disk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.applications._evaluation import _outputs
from delete.applications.cityscapes import load_cityscapes
from delete.applications.scenes import load_mnist_scenes
from delete.applications.segmentation_data import IGNORE_INDEX, SegmentationBundle
from delete.applications.segmentation_metrics import confusion_matrix, iou_per_class, mean_iou
from delete.applications.task_spec import LossFn, TaskSpec
from delete.applications.voc import load_voc_segmentation
from delete.errors import DatasetError, InvalidClassError
from delete.metrics import predict
from delete.models import ModelSpec
from delete.training import TrainConfig

__all__ = [
    "PixelCrossEntropy",
    "SEGMENTATION_DATASETS",
    "SEGMENTATION_TASK",
    "evaluate_segmentation",
    "load_segmentation_data",
    "segmentation_loss",
]

#: Segmentation dataset loaders by name.
SEGMENTATION_DATASETS: dict[str, Callable[..., SegmentationBundle]] = {
    "mnist_scenes": load_mnist_scenes,
    "voc": load_voc_segmentation,
    "cityscapes": load_cityscapes,
}


def load_segmentation_data(*, dataset: str = "mnist_scenes", **options: Any) -> SegmentationBundle:
    """Load a segmentation dataset by name (see :data:`SEGMENTATION_DATASETS`).

    Raises:
        DatasetError: Unknown dataset name (and whatever the loader raises).

    Example:
        >>> load_segmentation_data(dataset="ade20k")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: unknown segmentation dataset 'ade20k'; known: cityscapes, ...
    """
    loader = SEGMENTATION_DATASETS.get(dataset)
    if loader is None:
        raise DatasetError(
            f"unknown segmentation dataset {dataset!r}; "
            f"known: {', '.join(sorted(SEGMENTATION_DATASETS))}"
        )
    return loader(**options)


@dataclass(frozen=True)
class PixelCrossEntropy:
    """Per-pixel cross-entropy that skips :data:`IGNORE_INDEX` and can down-weight background.

    Attributes:
        background_weight: Weight of class 0 (the other classes weigh 1). Background covers
            most pixels of most scenes; down-weighting it makes objects learnt sooner.
        ignore_index: Target value of pixels that do not count.

    Example:
        >>> loss = PixelCrossEntropy(background_weight=1.0)
        >>> round(float(loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[0, 255]]]))), 4)  # log 2
        0.6931
    """

    background_weight: float = 1.0
    ignore_index: int = IGNORE_INDEX

    def __call__(self, logits: Tensor, targets: Tensor) -> Tensor:
        weight = torch.ones(logits.shape[1], device=logits.device)
        weight[0] = self.background_weight
        return F.cross_entropy(
            logits.float(), targets, weight=weight, ignore_index=self.ignore_index
        )


def segmentation_loss(model: nn.Module, background_weight: float = 0.1) -> LossFn:
    """The training loss of segmentation models: :class:`PixelCrossEntropy`, background at 0.1.

    Example:
        >>> segmentation_loss(nn.Identity()).background_weight
        0.1
    """
    return PixelCrossEntropy(background_weight=background_weight)


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


def _model_spec(data: SegmentationBundle) -> ModelSpec:
    c, h, _ = data.image_shape
    return ModelSpec("tiny_fcn", data.num_classes, c, h, {"width": 16})


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
        >>> from delete.applications.segmentation_data import SegmentationTensorDataset
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
    model_spec=_model_spec,
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
