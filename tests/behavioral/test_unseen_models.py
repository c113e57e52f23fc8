"""DELETE's defaults on models trained with outside recipes, one per normalisation family.

Each model is trained here (AdamW, label smoothing: not the project's SGD recipe) on real
handwritten digits; ``delete.unlearn`` then runs with its defaults, forget images only.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import delete
from delete.bench.zoo import Gray2RGB, Normalized, PlainCNN
from delete.data import DatasetBundle, load_digits, load_mnist5k, make_unlearning_splits
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


def _train(model: nn.Module, bundle: DatasetBundle, epochs: int) -> nn.Module:
    torch.manual_seed(0)
    loader = make_loader(bundle.train.with_transform(None), 64, shuffle=True, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _acc(model: nn.Module, ds: delete.data.ImageTensorDataset) -> float:
    with torch.no_grad():
        return float((model.eval()(ds.images).argmax(1) == ds.labels).float().mean() * 100)


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
