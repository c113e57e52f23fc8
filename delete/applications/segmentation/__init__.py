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

Modules: :mod:`~delete.applications.segmentation.data` (datasets of image/mask pairs),
:mod:`~delete.applications.segmentation.scenes`, :mod:`~delete.applications.segmentation.voc`
and :mod:`~delete.applications.segmentation.cityscapes` (the datasets),
:mod:`~delete.applications.segmentation.datasets` (them by name),
:mod:`~delete.applications.segmentation.model` (TinyFCN, TinyUNet),
:mod:`~delete.applications.segmentation.loss`, :mod:`~delete.applications.segmentation.metrics`
(confusion matrix, IoU) and :mod:`~delete.applications.segmentation.spec` (the evaluation and
:data:`SEGMENTATION_TASK`).
"""

from __future__ import annotations

from delete.applications.segmentation.cityscapes import CITYSCAPES_CLASSES, load_cityscapes
from delete.applications.segmentation.data import (
    IGNORE_INDEX,
    SegmentationBundle,
    SegmentationDataset,
    SegmentationFileDataset,
    SegmentationTensorDataset,
)
from delete.applications.segmentation.datasets import SEGMENTATION_DATASETS, load_segmentation_data
from delete.applications.segmentation.loss import PixelCrossEntropy, segmentation_loss
from delete.applications.segmentation.metrics import confusion_matrix, iou_per_class, mean_iou
from delete.applications.segmentation.model import TinyFCN, TinyUNet, segmentation_model_spec
from delete.applications.segmentation.scenes import (
    SCENE_CLASS_NAMES,
    compose_digit_scenes,
    load_mnist_scenes,
)
from delete.applications.segmentation.spec import SEGMENTATION_TASK, evaluate_segmentation
from delete.applications.segmentation.voc import VOC_CLASSES, load_voc_segmentation

__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "SCENE_CLASS_NAMES",
    "SEGMENTATION_DATASETS",
    "SEGMENTATION_TASK",
    "VOC_CLASSES",
    "PixelCrossEntropy",
    "SegmentationBundle",
    "SegmentationDataset",
    "SegmentationFileDataset",
    "SegmentationTensorDataset",
    "TinyFCN",
    "TinyUNet",
    "compose_digit_scenes",
    "confusion_matrix",
    "evaluate_segmentation",
    "iou_per_class",
    "load_cityscapes",
    "load_mnist_scenes",
    "load_segmentation_data",
    "load_voc_segmentation",
    "mean_iou",
    "segmentation_loss",
    "segmentation_model_spec",
]
