"""DELETE on real handwritten digits: the forgotten digit is forgotten, the others are kept."""

from __future__ import annotations

import pytest
import torch

import delete
from delete.data import load_digits, make_unlearning_splits
from delete.methods.delete import RECOMMENDED_HPARAMS
from delete.models import ModelSpec, build_model
from delete.training import TrainConfig, make_loader, train_classifier


def _accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(images).argmax(1) == labels).float().mean() * 100)


@pytest.fixture(scope="module")
def original() -> tuple[torch.nn.Module, delete.data.DatasetBundle]:
    bundle = load_digits(seed=0)
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", num_classes=10, in_channels=1, image_size=8))
    train_classifier(model, bundle.train, TrainConfig(epochs=15, seed=0), device="cpu")
    return model, bundle


@pytest.mark.parametrize("forget_classes", [[3], [1, 8]])
def test_delete_forgets_and_retains_on_digits(
    original: tuple[torch.nn.Module, delete.data.DatasetBundle], forget_classes: list[int]
) -> None:
    model, bundle = original
    splits = make_unlearning_splits(bundle.train, bundle.test, forget_classes)
    retain_before = _accuracy(model, splits.test_retain.images, splits.test_retain.labels)
    forget_before = _accuracy(model, splits.test_forget.images, splits.test_forget.labels)
    assert forget_before > 90, "the original model must know the class before it can forget it"

    unlearned = delete.unlearn(
        model,
        make_loader(splits.train_forget, 64, shuffle=True, seed=0),
        forget_classes,
        device="cpu",
        progress=False,
        **RECOMMENDED_HPARAMS["digits"],
    )
    forget_after = _accuracy(unlearned, splits.test_forget.images, splits.test_forget.labels)
    retain_after = _accuracy(unlearned, splits.test_retain.images, splits.test_retain.labels)
    assert forget_after < 5.0
    assert retain_before - retain_after <= 3.0
