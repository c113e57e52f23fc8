"""Segmentation: IoU metrics, the digit-scene composer, VOC and Cityscapes folders, models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import delete
from delete.applications import get_task
from delete.applications.segmentation import (
    PixelCrossEntropy,
    evaluate_segmentation,
    load_segmentation_data,
)
from delete.applications.segmentation.cityscapes import load_cityscapes
from delete.applications.segmentation.data import (
    SegmentationBundle,
    SegmentationTensorDataset,
)
from delete.applications.segmentation.metrics import confusion_matrix, iou_per_class, mean_iou
from delete.applications.segmentation.model import TinyFCN, TinyUNet
from delete.applications.segmentation.scenes import compose_digit_scenes
from delete.applications.segmentation.voc import VOC_CLASSES, load_voc_segmentation
from delete.errors import DatasetError
from delete.losses import delete_loss
from delete.models import ModelSpec, build_model


def test_confusion_iou_and_miou_known_values() -> None:
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    conf = confusion_matrix(pred, target, num_classes=4)
    assert conf.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(conf)
    assert iou[:3].tolist() == pytest.approx([2 / 4, 2 / 3, 1 / 2])
    assert math.isnan(float(iou[3]))  # absent from targets and predictions
    assert mean_iou(iou) == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert mean_iou(iou, [1, 3]) == pytest.approx(2 / 3)
    logits = torch.nn.functional.one_hot(pred, 4).permute(2, 0, 1)[None].float()
    assert torch.equal(confusion_matrix(logits, target[None], 4), conf)
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix(pred, torch.full_like(target, 7), num_classes=4)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    digits = torch.zeros(3, 1, 8, 8)
    digits[:, :, 2:6, 3:5] = 1.0
    digits[:, :, 1, 1] = 0.3  # faint pixel: below the ink threshold
    return digits, torch.tensor([0, 5, 9])


def test_scene_composer_is_a_function_of_the_seed() -> None:
    digits, labels = _digits()
    a = compose_digit_scenes(digits, labels, 6, canvas_size=24, digit_size=8, seed=1)
    b = compose_digit_scenes(digits, labels, 6, canvas_size=24, digit_size=8, seed=1)
    c = compose_digit_scenes(digits, labels, 6, canvas_size=24, digit_size=8, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.masks, c.masks)


def test_scene_labels_are_background_plus_digit_ink() -> None:
    digits, labels = _digits()
    ds = compose_digit_scenes(
        digits, labels, 20, canvas_size=24, digit_size=8, digits_per_scene=(2, 3), seed=0
    )
    assert ds.images.shape == (20, 1, 24, 24) and ds.masks.shape == (20, 24, 24)
    assert set(torch.unique(ds.masks).tolist()) <= {0, 1, 6, 10}  # digit d -> class d + 1
    ink = ds.masks > 0
    assert bool((ds.images[:, 0][ink] > 0.5).all())
    assert bool((ds.masks[ds.images[:, 0] <= 0.5] == 0).all())
    per_scene = ink.flatten(1).sum(1)
    assert bool((per_scene >= 2 * 8).all())  # at least two digits of 8 ink pixels each


def test_scene_composer_rejects_bad_options() -> None:
    digits, labels = _digits()
    with pytest.raises(ValueError, match="digit_size"):
        compose_digit_scenes(digits, labels, 1, canvas_size=8, digit_size=12)
    with pytest.raises(ValueError, match="digits_per_scene"):
        compose_digit_scenes(digits, labels, 1, digits_per_scene=(3, 2))


def _png(path: Path, array: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if palette:
        image = image.convert("P") if image.mode != "P" else image
        image = Image.fromarray(array, mode="P") if array.ndim == 2 else image
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    image.save(path)


def _write_voc(root: Path) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{name}.jpg"
        )
        mask = np.zeros((20, 30), dtype=np.uint8)
        mask[5:15, 5:15] = 15  # person
        mask[5:15, 15] = 255  # boundary
        _png(voc / "SegmentationClass" / f"{name}.png", mask, palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("c\n")


def test_voc_loader_reads_palette_indices_and_keeps_ignore(tmp_path: Path) -> None:
    _write_voc(tmp_path)
    bundle = load_voc_segmentation(tmp_path, image_size=(20, 30))
    assert bundle.class_names == VOC_CLASSES and bundle.num_classes == 21
    assert len(bundle.train) == 2 and len(bundle.test) == 1
    image, mask = bundle.train[0]
    assert image.shape == (3, 20, 30) and 0.0 <= float(image.min()) <= float(image.max()) <= 1.0
    assert set(torch.unique(mask).tolist()) == {0, 15, 255}
    assert int(mask[10, 10]) == 15 and int(mask[10, 15]) == 255
    assert bundle.train.contains([15]).tolist() == [True, True]
    small = load_voc_segmentation(tmp_path / "VOCdevkit" / "VOC2012", image_size=10)
    assert small.train[1][1].shape == (10, 10)
    memory = small.train.to_memory()
    assert memory.images.shape == (2, 3, 10, 10) and memory.sample_ids == ["a", "b"]


def test_voc_loader_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Pascal VOC not found"):
        load_voc_segmentation(tmp_path)
    _write_voc(tmp_path)
    (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text("c\nmissing\n")
    with pytest.raises(DatasetError, match="missing"):
        load_voc_segmentation(tmp_path)


def _write_cityscapes(root: Path) -> None:
    for split, city in (("train", "aachen"), ("val", "lindau")):
        for i in range(2):
            stem = f"{city}_000000_00000{i}"
            _png(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
                np.full((8, 16, 3), 100, dtype=np.uint8),
            )
            ids = np.zeros((8, 16), dtype=np.uint8)  # 0 = unlabeled -> ignored
            ids[:4] = 7  # road -> train id 0
            ids[4:, :8] = 26  # car -> train id 13
            ids[4:, 8:] = 24  # person -> 11
            _png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)


def test_cityscapes_loader_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    bundle = load_cityscapes(tmp_path, image_size=(8, 16))
    assert bundle.num_classes == 19 and len(bundle.train) == 2 and len(bundle.test) == 2
    assert bundle.train.sample_ids[0] == "aachen/aachen_000000_000000"
    _, mask = bundle.test[0]
    assert int(mask[0, 0]) == 0 and int(mask[6, 2]) == 13 and int(mask[6, 12]) == 11
    (tmp_path / "gtFine/val/lindau/lindau_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match="label file"):
        load_cityscapes(tmp_path)


def test_cityscapes_unlisted_ids_are_ignored(tmp_path: Path) -> None:
    _write_cityscapes(tmp_path)
    path = tmp_path / "gtFine/train/aachen/aachen_000000_000000_gtFine_labelIds.png"
    _png(path, np.full((8, 16), 3, dtype=np.uint8))  # "out of roi": not a train id
    assert set(torch.unique(load_cityscapes(tmp_path, (8, 16)).train[0][1]).tolist()) == {255}


def test_segmentation_datasets_by_name() -> None:
    with pytest.raises(DatasetError, match="unknown segmentation dataset"):
        load_segmentation_data(dataset="ade20k")


@pytest.mark.parametrize("arch", ["tiny_fcn", "tiny_unet"])
def test_segmentation_models_return_per_pixel_logits(arch: str) -> None:
    model = build_model(ModelSpec(arch, num_classes=5, in_channels=3, kwargs={"width": 4}))
    assert model(torch.zeros(2, 3, 16, 24)).shape == (2, 5, 16, 24)
    assert isinstance(model, TinyFCN | TinyUNet)


def test_unet_names_the_size_it_needs() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        TinyUNet(3, 1, width=4)(torch.zeros(1, 1, 12, 12))


def test_pixel_cross_entropy_weights_background_and_skips_ignore() -> None:
    logits = torch.zeros(1, 3, 1, 3)
    targets = torch.tensor([[[0, 1, 255]]])
    plain = PixelCrossEntropy(background_weight=1.0)(logits, targets)
    assert float(plain) == pytest.approx(math.log(3))
    weighted = PixelCrossEntropy(background_weight=0.5)(logits, targets)
    assert float(weighted) == pytest.approx(math.log(3))  # weighted mean of equal losses
    logits[0, 1, 0, 1] = 2.0  # the class-1 pixel gets better: it now weighs 2/3 of the mean
    assert float(PixelCrossEntropy(0.5)(logits, targets)) < float(
        PixelCrossEntropy(1.0)(logits, targets)
    )


def _toy_bundle() -> SegmentationBundle:
    masks = torch.zeros(6, 8, 8, dtype=torch.long)
    masks[:3, 2:5, 2:5] = 1
    masks[3:, 4:7, 4:7] = 2
    images = (masks[:, None] > 0).float()
    ds = SegmentationTensorDataset(images, masks)
    return SegmentationBundle("toy", ds, ds, ["background", "a", "b"])


def test_forget_and_retain_sets_split_on_class_presence() -> None:
    data = _toy_bundle()
    spec = get_task("segmentation")
    assert len(spec.forget_set(data, [1])) == 3 and len(spec.retain_set(data, [1])) == 3
    with pytest.raises(DatasetError, match="no training image"):
        spec.forget_set(_toy_bundle(), [0, 1, 2][3:] or [5])


def test_delete_on_spatial_logits_masks_the_class_at_every_pixel() -> None:
    teacher = torch.tensor([[5.0, 1.0, 0.0]]).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    student = teacher.clone()
    masked_target = torch.softmax(torch.tensor([float("-inf"), 1.0, 0.0]), 0)
    log_student = torch.log_softmax(torch.tensor([5.0, 1.0, 0.0]), 0)
    kl = float((masked_target[1:] * (masked_target[1:].log() - log_student[1:])).sum())
    assert float(delete_loss(student, teacher, [0])) == pytest.approx(kl, rel=1e-5)


def test_unlearn_a_class_of_a_segmentation_model_through_the_api() -> None:
    torch.manual_seed(0)
    data = _toy_bundle()
    model = TinyFCN(num_classes=3, in_channels=1, width=4)
    forget_loader = torch.utils.data.DataLoader(get_task("segmentation").forget_set(data, [1]), 2)
    unlearned = delete.unlearn(model, forget_loader, [1], device="cpu", epochs=1, progress=False)
    metrics = evaluate_segmentation(unlearned, data, [1])
    assert {"iou_forget", "miou_retain", "forget_as_background", "pixel_acc"} <= set(metrics)
    assert metrics["class_iou/a"] == metrics["iou_forget"]


# --- pinned IoU values: every expected number below is computed here with numpy ----------------


def _numpy_confusion(pred: np.ndarray, target: np.ndarray, k: int, ignore: int) -> np.ndarray:
    conf = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(target.ravel(), pred.ravel(), strict=True):
        if t != ignore:
            conf[t, p] += 1
    return conf


def _numpy_iou(conf: np.ndarray) -> np.ndarray:
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


class _PredictionInChannel(torch.nn.Module):
    """Logits that put the whole mass on the class stored in the image's one channel."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one_hot = torch.nn.functional.one_hot(x[:, 0].long(), self.num_classes)
        return one_hot.permute(0, 3, 1, 2).float()


def _pinned_scene() -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets of 2 images over 5 classes; class 4 is in neither, 255 ignored."""
    rng = np.random.default_rng(7)
    target = rng.integers(0, 4, (2, 6, 6))
    target[0, 0, :3] = 255
    pred = np.where(rng.random((2, 6, 6)) < 0.6, target, rng.integers(0, 4, (2, 6, 6)))
    pred[target == 255] = 3  # predictions on ignored pixels must not count
    return pred, target


def test_iou_and_evaluation_keep_their_pinned_values() -> None:
    pred, target = _pinned_scene()
    conf = _numpy_confusion(pred, target, 5, 255)
    iou = _numpy_iou(conf)
    got = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 5)
    assert got.tolist() == conf.tolist()
    np.testing.assert_array_equal(iou_per_class(got).numpy(), iou)  # exact, NaN for class 4

    images = torch.from_numpy(pred).float()[:, None]
    ds = SegmentationTensorDataset(images, torch.from_numpy(target))
    names = ["background", "a", "b", "c", "d"]
    metrics = evaluate_segmentation(
        _PredictionInChannel(5), SegmentationBundle("p", ds, ds, names), [2]
    )
    retained = iou[[0, 1, 3]]
    assert metrics["iou_forget"] == 100.0 * iou[2]
    assert metrics["miou_retain"] == 100.0 * float(np.mean(retained))  # class 4's NaN skipped
    assert metrics["pixel_acc"] == 100.0 * float(np.trace(conf)) / conf.sum()
    assert metrics["forget_as_background"] == 100.0 * conf[2, 0] / conf[2].sum()
    for c, name in enumerate(names):
        assert metrics[f"class_iou/{name}"] == pytest.approx(100.0 * iou[c], nan_ok=True, rel=0)


def test_torchmetrics_iou_agrees_only_to_float32_precision() -> None:
    """Why ``iou_per_class`` stays hand-written: torchmetrics divides in float32."""
    from torchmetrics.functional.classification import multiclass_jaccard_index

    pred, target = _pinned_scene()
    theirs = multiclass_jaccard_index(
        torch.from_numpy(pred),
        torch.from_numpy(target),
        5,
        average="none",
        ignore_index=255,
        zero_division=float("nan"),
    )
    ours = _numpy_iou(_numpy_confusion(pred, target, 5, 255))
    assert theirs.dtype == torch.float32
    np.testing.assert_allclose(theirs.double().numpy(), ours, rtol=1e-6)  # same up to float32
