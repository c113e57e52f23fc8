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
from delete.applications.cityscapes import load_cityscapes
from delete.applications.fcn import TinyFCN
from delete.applications.scenes import compose_digit_scenes
from delete.applications.segmentation import (
    PixelCrossEntropy,
    evaluate_segmentation,
    load_segmentation_data,
)
from delete.applications.segmentation_data import (
    SegmentationBundle,
    SegmentationTensorDataset,
)
from delete.applications.segmentation_metrics import confusion_matrix, iou_per_class, mean_iou
from delete.applications.unet import TinyUNet
from delete.applications.voc import VOC_CLASSES, load_voc_segmentation
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
