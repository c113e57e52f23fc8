"""DELETE's defaults on models trained with outside recipes, one per normalisation family.

Each model is trained here (AdamW, label smoothing: not the project's SGD recipe) on real
handwritten digits; ``delete.unlearn`` then runs with its defaults, forget images only (and,
in the last tests, with a selection sample, the pipeline's mode).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import delete
from delete.bench.zoo import (
    BNCNN,
    Gray2RGB,
    Normalized,
    PlainCNN,
    Tempered,
    mlp_bn,
    silu_cnn,
)
from delete.data import (
    DatasetBundle,
    UnlearningSplits,
    load_digits,
    load_mnist5k,
    make_unlearning_splits,
)
from delete.selection import SelectionConfig
from delete.training import make_loader

pytestmark = pytest.mark.slow


class _BNNet(nn.Module):
    """Conv-BN-ReLU x2 and a linear head: the shape of most small BatchNorm classifiers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    # 28x28 MNIST in 4x4 patches of 7 pixels: a ViT needs more than 8x8 digits to learn.
    return nn.Sequential(
        Gray2RGB(),
        VisionTransformer(
            image_size=28,
            patch_size=7,
            num_layers=2,
            num_heads=2,
            hidden_dim=48,
            mlp_dim=96,
            num_classes=10,
        ),
    )


FAMILIES = {
    "batchnorm": lambda: Normalized(_BNNet(), mean=0.3, std=0.4),
    "none": lambda: PlainCNN(num_classes=10),
    "layernorm": lambda: Normalized(_vit(), mean=0.5, std=0.5),
}


def _train(
    model: nn.Module, bundle: DatasetBundle, epochs: int, recipe: str = "adamw"
) -> nn.Module:
    """``adamw``: AdamW, one-cycle, label smoothing 0.1. ``sgd``: Nesterov SGD, weight decay
    5e-4, cosine, no smoothing (the zoo's ``bn_cnn_sgd`` takes a one-cycle schedule instead);
    ``sgd_ls``: the same with label smoothing 0.1. ``adam``: Adam 1e-3, cosine, smoothing 0.05
    (the outside BatchNorm MLP's recipe)."""
    torch.manual_seed(0)
    loader = make_loader(bundle.train.with_transform(None), 64, shuffle=True, seed=0)
    steps = epochs * len(loader)
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    if recipe in ("sgd", "sgd_ls"):
        opt = torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    elif recipe == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    smoothing = {"sgd": 0.0, "adam": 0.05}.get(recipe, 0.1)  # adamw and sgd_ls: 0.1
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _acc(model: nn.Module, ds: delete.data.ImageTensorDataset) -> float:
    with torch.no_grad():
        return float((model.eval()(ds.images).argmax(1) == ds.labels).float().mean() * 100)


def _defaults(
    model: nn.Module,
    splits: UnlearningSplits,
    digit: int,
    *,
    with_sample: bool,
    selection: SelectionConfig | None = None,
) -> delete.UnlearnResult:
    """``delete.run_unlearning`` with its defaults (or ``selection``), forgetting ``digit``;
    ``with_sample`` adds the pipeline's selection sample (500 retained training images,
    seeded)."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(splits.train_retain), generator=g)[:500]
    return delete.run_unlearning(
        model,
        make_loader(splits.train_forget, 64, shuffle=True, seed=0),
        [digit],
        device="cpu",
        progress=False,
        selection=selection,
        selection_loader=make_loader(splits.train_retain.subset(idx), 250, shuffle=False)
        if with_sample
        else None,
    )


#: Family -> (dataset, training epochs). The ViT trains on MNIST-5k, the convnets on digits.
SETUPS = {"batchnorm": ("digits", 20), "none": ("digits", 20), "layernorm": ("mnist5k", 12)}


@pytest.fixture(scope="module")
def datasets() -> dict[str, DatasetBundle]:
    return {
        "digits": load_digits(seed=0, augment=False),
        "mnist5k": load_mnist5k(seed=0, augment=False),
    }


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_defaults_forget_without_breaking(family: str, datasets: dict[str, DatasetBundle]) -> None:
    torch.manual_seed(0)
    name, epochs = SETUPS[family]
    bundle = datasets[name]
    model = _train(FAMILIES[family](), bundle, epochs=epochs)
    splits = make_unlearning_splits(bundle.train, bundle.test, [3])
    retain_before = _acc(model, splits.test_retain)
    assert _acc(model, splits.test_forget) > 85, "the model must know the class first"
    assert retain_before > 85

    unlearned = delete.unlearn(
        model,
        make_loader(splits.train_forget, 64, shuffle=True, seed=0),
        [3],
        device="cpu",
        progress=False,
    )
    assert _acc(unlearned, splits.test_forget) < 5.0
    assert retain_before - _acc(unlearned, splits.test_retain) <= 2.0


@pytest.mark.parametrize("with_sample", [True, False], ids=["selection-sample", "forget-only"])
def test_a_batchnorm_model_that_frozen_statistics_hurt_keeps_its_accuracy(
    datasets: dict[str, DatasetBundle], with_sample: bool
) -> None:
    """Measured on this model, digit 5: frozen statistics lost 3.8 points retained with the
    sample, 3.9 forget-only. With the sample, falling back to BatchNorm in train mode (the
    sample read frozen statistics 2.4 points short) loses 1.3; forget-only, train mode read
    0.053 on rotated forget images against frozen's 0.196 and lost 0.2. The family tests'
    bound applies: at most 2."""
    bundle = datasets["mnist5k"]
    torch.manual_seed(0)
    model = _train(BNCNN(), bundle, epochs=8, recipe="sgd")
    splits = make_unlearning_splits(bundle.train, bundle.test, [5])
    retain_before = _acc(model, splits.test_retain)
    assert _acc(model, splits.test_forget) > 85 and retain_before > 90
    result = _defaults(model, splits, 5, with_sample=with_sample)
    assert result.selection is not None and not result.selection.chosen.freeze_bn
    assert _acc(result.model, splits.test_forget) < 5.0
    assert retain_before - _acc(result.model, splits.test_retain) <= 2.0


@pytest.mark.parametrize("family", ["batchnorm", "none"])
def test_with_a_sample_a_short_forget_set_stays_within_one_point(
    family: str, datasets: dict[str, DatasetBundle]
) -> None:
    """The pipeline's mode on a short forget set: 8x8 digits, 3 optimizer steps a pass, a
    500-image sample of retained training images the model reads near 100 %. Measured, digit 3:
    the sample rule alone took lr 0.01 (plain CNN) or 0.003 and lost 2.17 and 1.55 points,
    the sample unable to see it; with the forget-only rule run too (``short_forget_only``)
    0.62 and 0.31. The issue's bound with a sample: within 1 point."""
    torch.manual_seed(0)
    bundle = datasets["digits"]
    model = _train(FAMILIES[family](), bundle, epochs=20)
    splits = make_unlearning_splits(bundle.train, bundle.test, [3])
    retain_before = _acc(model, splits.test_retain)
    forget_loader = make_loader(splits.train_forget, 64, shuffle=True, seed=0)
    assert len(forget_loader) <= SelectionConfig().short_pass_steps  # the setup: a short pass
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(splits.train_retain), generator=g)[:500]
    result = delete.run_unlearning(
        model,
        forget_loader,
        [3],
        device="cpu",
        progress=False,
        selection_loader=make_loader(splits.train_retain.subset(idx), 250, shuffle=False),
    )
    assert _acc(result.model, splits.test_forget) < 5.0
    assert retain_before - _acc(result.model, splits.test_retain) <= 1.0, result.selection


@pytest.mark.parametrize("with_sample", [True, False], ids=["selection-sample", "forget-only"])
def test_a_temperature_scaled_model_keeps_its_accuracy(
    datasets: dict[str, DatasetBundle], with_sample: bool
) -> None:
    """An MLP with BatchNorm (Adam, cosine, smoothing 0.05) served divided by a temperature of
    4. Measured, digit 5: its softmax on the forget images tops at 0.32 on average, and the
    defaults distilling those soft logits lost 2.11 points forget-only and 2.22 with the
    sample (``sharpen_below=None``); sharpened to 0.8 (the default) 0.78 and 0.89. The bound,
    1.5, sits between them, five test images from each (one image is 0.11 points)."""
    bundle = datasets["mnist5k"]
    torch.manual_seed(0)
    model = Tempered(_train(mlp_bn(), bundle, epochs=8, recipe="adam"), 4.0)
    splits = make_unlearning_splits(bundle.train, bundle.test, [5])
    retain_before = _acc(model, splits.test_retain)
    assert _acc(model, splits.test_forget) > 85 and retain_before > 90
    result = _defaults(model, splits, 5, with_sample=with_sample)
    assert _acc(result.model, splits.test_forget) < 5.0
    assert retain_before - _acc(result.model, splits.test_retain) <= 1.5
    assert "logit_scale" in result.runtime


@pytest.fixture(scope="module")
def groupnorm_sgd_smoothed(datasets: dict[str, DatasetBundle]) -> nn.Module:
    """The same SiLU CNN with GroupNorm, Nesterov SGD, with label smoothing 0.1 (95.4 %).
    Initialisation seed 2: with seeds 0 to 3 the whole network with the sample lost -0.67
    (the former bound fired already), 1.78 (the sample read it within 1: still missed), 1.67
    and 1.22 on digit 3, and forget-only 5.33, 5.67, 3.33 and 3.22."""
    torch.manual_seed(2)
    return _train(silu_cnn(), datasets["mnist5k"], epochs=20, recipe="sgd_ls")


def test_with_a_sample_a_label_smoothed_groupnorm_model_stays_within_one_point(
    datasets: dict[str, DatasetBundle], groupnorm_sgd_smoothed: nn.Module
) -> None:
    """Digit 3, with the sample. Measured: the whole network loses 1.67 points, the sample
    reading it within 3; at the sample's own bounds, 1 point overall or 5 on a class
    (``head_only_sample_drop``, ``head_only_class_drop``; either reads it here), the last
    layer is trained alone and it loses -0.56. The control, with the former bound of 3,
    must lose more than 1 point (the sample's target), or this model tests nothing."""
    bundle, model = datasets["mnist5k"], groupnorm_sgd_smoothed
    splits = make_unlearning_splits(bundle.train, bundle.test, [3])
    retain_before = _acc(model, splits.test_retain)
    assert _acc(model, splits.test_forget) > 90 and retain_before > 90

    result = _defaults(model, splits, 3, with_sample=True)
    assert result.selection is not None and result.selection.chosen.head == "12"
    assert _acc(result.model, splits.test_forget) < 5.0
    assert retain_before - _acc(result.model, splits.test_retain) <= 1.0, result.selection

    former = SelectionConfig(head_only_sample_drop=3.0, head_only_class_drop=None)
    control = _defaults(model, splits, 3, with_sample=True, selection=former)
    assert control.selection is not None and control.selection.chosen.head is None
    assert retain_before - _acc(control.model, splits.test_retain) > 1.0


def test_forget_only_a_label_smoothed_groupnorm_model_keeps_its_accuracy(
    datasets: dict[str, DatasetBundle], groupnorm_sgd_smoothed: nn.Module
) -> None:
    """Digit 3, forget data only. Measured: the whole network distilled loses 3.33 points,
    nearly every new error in one class (6), while the guard's inverted images and the soft
    check's carried forget images read it 0.0 short. On those inverted images class 6's
    logit rises beyond the bound against the images' own classes (``one_class_rise``), so
    the last layer is trained alone. The control, without that check, must lose more than 2
    points (the bound each family's test holds), or this model tests nothing."""
    bundle, model = datasets["mnist5k"], groupnorm_sgd_smoothed
    splits = make_unlearning_splits(bundle.train, bundle.test, [3])
    retain_before = _acc(model, splits.test_retain)
    result = _defaults(model, splits, 3, with_sample=False)
    assert result.selection is not None and result.selection.chosen.head == "12"
    assert "class 6's logit rose" in result.selection.stop_reason
    assert _acc(result.model, splits.test_forget) < 5.0
    assert retain_before - _acc(result.model, splits.test_retain) <= 1.0, result.selection

    control = _defaults(
        model, splits, 3, with_sample=False, selection=SelectionConfig(one_class_rise=None)
    )
    assert control.selection is not None and control.selection.chosen.head is None
    assert retain_before - _acc(control.model, splits.test_retain) > 2.0


def test_forget_only_a_batchnorm_model_whose_features_drift_keeps_its_accuracy(
    datasets: dict[str, DatasetBundle],
) -> None:
    """The same network with BatchNorm (Nesterov SGD, 95.3 %), digit 3, forget data only.
    Measured: the whole network distilled loses 30.89 points; the images inverted from the
    original read it 16.7 points short and its rerun 14.3, so the last layer is trained alone,
    judged by those images, and it loses -0.22. The control, without that fallback, must lose
    more than 3, the issue's forget-only bound."""
    bundle = datasets["mnist5k"]
    torch.manual_seed(0)
    model = _train(silu_cnn(norm="batch"), bundle, epochs=20, recipe="sgd")
    splits = make_unlearning_splits(bundle.train, bundle.test, [3])
    retain_before = _acc(model, splits.test_retain)
    assert _acc(model, splits.test_forget) > 90 and retain_before > 90

    result = _defaults(model, splits, 3, with_sample=False)
    assert result.selection is not None and result.selection.chosen.head == "12"
    assert _acc(result.model, splits.test_forget) < 5.0
    assert retain_before - _acc(result.model, splits.test_retain) <= 2.0, result.selection

    control = _defaults(
        model, splits, 3, with_sample=False, selection=SelectionConfig(head_only_drop=None)
    )
    assert retain_before - _acc(control.model, splits.test_retain) > 3.0
