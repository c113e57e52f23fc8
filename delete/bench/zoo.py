"""A model zoo trained here from *outside* recipes, for the benchmark and the tests.

Every DELETE default has to hold on models this project did not make. The zoo stands in for
them: architectures from torchvision (ResNet-18 with BatchNorm, MobileNetV3 with depthwise
convolutions and BatchNorm, a small ViT with LayerNorm) and a plain CNN without any
normalisation, each trained with a recipe that is *not* the project's (AdamW or Nesterov SGD,
label smoothing, augmentation, its own input normalisation folded into the model).

Weights are never committed: :func:`load_zoo_model` trains a member once (seeded) and caches
its state dict under ``$DELETE_ZOO_CACHE`` (default ``~/.cache/delete-unlearn/zoo``), keyed by
the recipe, the dataset and the seed, so that a changed recipe never reuses stale weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from delete.data import DatasetBundle, RandomShift

__all__ = [
    "ZooRecipe",
    "ZOO",
    "BNCNN",
    "Gray2RGB",
    "Normalized",
    "PlainCNN",
    "Tempered",
    "mlp_bn",
    "silu_cnn",
    "build_zoo_model",
    "train_zoo_model",
    "load_zoo_model",
    "zoo_cache_dir",
]

log = logging.getLogger(__name__)


class Normalized(nn.Module):
    """``net((x - mean) / std)``: an outside model's own input normalisation, folded in.

    Example:
        >>> m = Normalized(nn.Identity(), mean=0.5, std=0.5)
        >>> m(torch.ones(1, 1, 2, 2)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


class PlainCNN(nn.Module):
    """Three convolutions and two linear layers, no normalisation layer at all (Keras-style).

    Example:
        >>> PlainCNN(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(64 * 16, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class BNCNN(nn.Sequential):
    """Conv-BN-ReLU twice, max-pooling and dropout before the head: a classic BatchNorm CNN.

    Example:
        >>> BNCNN(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(256, num_classes),
        )


def _resnet18(num_classes: int) -> nn.Module:
    from delete.models.torchvision_models import build_torchvision_classifier

    return build_torchvision_classifier("resnet18", num_classes, in_channels=1)


def _mobilenet(num_classes: int) -> nn.Module:
    import torchvision

    # MobileNetV3's first conv takes 3 channels: outside users feed gray images repeated.
    net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    return nn.Sequential(Gray2RGB(), net)


def _vit(num_classes: int) -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        image_size=28,
        patch_size=7,
        num_layers=4,
        num_heads=4,
        hidden_dim=96,
        mlp_dim=192,
        num_classes=num_classes,
    )


class Gray2RGB(nn.Module):
    """Repeat a gray channel three times: how outside teams feed MNIST to RGB torchvision models.

    Example:
        >>> Gray2RGB()(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class Tempered(nn.Module):
    """``model``'s logits divided by ``temperature``: how calibration (temperature scaling)
    leaves a model it serves, soft on every image.

    Example:
        >>> Tempered(nn.Identity(), 4.0)(torch.tensor([[8.0, 0.0]])).tolist()
        [[2.0, 0.0]]
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature


def mlp_bn(num_classes: int = 10, in_features: int = 28 * 28) -> nn.Sequential:
    """A multilayer perceptron with BatchNorm1d and dropout: BatchNorm on features, not maps.

    Example:
        >>> mlp_bn()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, 256),
        nn.BatchNorm1d(256),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(256, 128),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def silu_cnn(num_classes: int = 10, norm: str = "group") -> nn.Sequential:
    """Three convolutions with GroupNorm (8 groups; ``norm="batch"``: BatchNorm, ``"layer"``:
    one group over channels and pixels), SiLU and
    stride-2 downsampling, global average pooling, dropout and a linear head (module ``12``).
    Trained with Nesterov SGD it is the outside model that whole-network DELETE breaks
    (``delete/selection/head.py``).

    Example:
        >>> silu_cnn()(torch.zeros(2, 1, 28, 28)).shape, type(silu_cnn(norm="batch")[1]).__name__
        (torch.Size([2, 10]), 'BatchNorm2d')
    """

    def normalise(channels: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(channels)
        return nn.GroupNorm(1 if norm == "layer" else 8, channels)  # one group: LayerNorm

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        normalise(32),
        nn.SiLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        normalise(64),
        nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2),
        normalise(64),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(64, num_classes),
    )


def _vit_gray(num_classes: int) -> nn.Module:
    return nn.Sequential(Gray2RGB(), _vit(num_classes))


def _plain(num_classes: int) -> nn.Module:
    return PlainCNN(num_classes)


_ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": _resnet18,
    "mobilenet_v3_small": _mobilenet,
    "plain_cnn": _plain,
    "vit_tiny": _vit_gray,
    "bn_cnn": BNCNN,
}


@dataclass(frozen=True)
class ZooRecipe:
    """How an outside team trained one zoo member.

    Attributes:
        name: Zoo name.
        arch: Key of the architecture builder.
        norm_family: ``batchnorm``, ``none`` or ``layernorm``: what the model normalises with.
        optimizer: ``adamw`` or ``sgd`` (Nesterov).
        lr: Peak learning rate (cosine schedule to 0).
        weight_decay: Decoupled (AdamW) or L2 (SGD) weight decay.
        label_smoothing: Cross-entropy label smoothing.
        augment: Random-shift augmentation of the training images.
        mean: Input normalisation mean folded into the model.
        std: Input normalisation std folded into the model.
        epochs: Training epochs.
        batch_size: Training batch size.
    """

    name: str
    arch: str
    norm_family: str
    optimizer: str
    lr: float
    weight_decay: float
    label_smoothing: float
    augment: bool
    mean: float
    std: float
    epochs: int
    batch_size: int = 64
    extra: dict[str, float] = field(default_factory=dict)

    def key(self, dataset: str, seed: int) -> str:
        """Cache key: a hash of the recipe, the dataset, the seed and the torch version."""
        blob = json.dumps(
            {"recipe": asdict(self), "dataset": dataset, "seed": seed, "torch": torch.__version__},
            sort_keys=True,
        )
        return f"{self.name}-{dataset}-s{seed}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


#: The zoo. Recipes deliberately differ from the project's (SGD 0.05, cosine, no smoothing).
ZOO: dict[str, ZooRecipe] = {
    r.name: r
    for r in (
        ZooRecipe(
            "resnet18",
            "resnet18",
            "batchnorm",
            optimizer="adamw",
            lr=1e-3,
            weight_decay=0.05,
            label_smoothing=0.1,
            augment=False,
            mean=0.1307,
            std=0.3081,
            epochs=4,
        ),
        ZooRecipe(
            "mobilenet_v3_small",
            "mobilenet_v3_small",
            "batchnorm",
            optimizer="sgd",
            lr=0.1,
            weight_decay=4e-5,
            label_smoothing=0.0,
            augment=True,
            mean=0.5,
            std=0.5,
            epochs=12,
        ),
        ZooRecipe(
            "plain_cnn",
            "plain_cnn",
            "none",
            optimizer="adamw",
            lr=1e-3,
            weight_decay=0.0,
            label_smoothing=0.0,
            augment=False,
            mean=0.0,
            std=1.0,
            epochs=8,
        ),
        # Where frozen BatchNorm statistics hurt (the selection sample's fallback, README).
        ZooRecipe(
            "bn_cnn_sgd",
            "bn_cnn",
            "batchnorm",
            optimizer="sgd",
            lr=0.05,
            weight_decay=5e-4,
            label_smoothing=0.0,
            augment=False,
            mean=0.0,
            std=1.0,
            epochs=8,
        ),
        ZooRecipe(
            "vit_tiny",
            "vit_tiny",
            "layernorm",
            optimizer="adamw",
            lr=2e-3,
            weight_decay=0.05,
            label_smoothing=0.1,
            augment=True,
            mean=0.1307,
            std=0.3081,
            epochs=20,
            batch_size=128,
        ),
    )
}


def build_zoo_model(recipe: ZooRecipe, num_classes: int) -> nn.Module:
    """The recipe's architecture, its input normalisation folded in, with fresh weights."""
    return Normalized(_ARCHS[recipe.arch](num_classes), recipe.mean, recipe.std)


class _Augmented(Dataset[tuple[Tensor, Tensor]]):
    def __init__(self, base: Dataset[tuple[Tensor, Tensor]], pad: int) -> None:
        self.base, self.shift = base, RandomShift(pad)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.base[i]
        return self.shift(x), y


def train_zoo_model(
    recipe: ZooRecipe,
    bundle: DatasetBundle,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Train ``recipe`` on ``bundle.train`` (plain images, the recipe adds its own augmentation).

    Returns:
        The trained model in eval mode on ``device``.
    """
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_zoo_model(recipe, len(bundle.class_names)).to(dev)
        train: Dataset[tuple[Tensor, Tensor]] = bundle.train.with_transform(None)
        if recipe.augment:
            train = _Augmented(train, pad=2)
        loader = DataLoader(
            train,
            batch_size=recipe.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        params = model.parameters()
        optimizer: torch.optim.Optimizer
        if recipe.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                params, lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay
            )
        steps = recipe.epochs * len(loader)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=steps, pct_start=0.15
        )
        model.train()
        for _ in range(recipe.epochs):
            for x, y in loader:
                x, y = x.to(dev), y.to(dev)
                loss = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
    return model.eval()


def zoo_cache_dir() -> Path:
    """``$DELETE_ZOO_CACHE``, else ``~/.cache/delete-unlearn/zoo``."""
    env = os.environ.get("DELETE_ZOO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "delete-unlearn" / "zoo"


def load_zoo_model(
    name: str,
    bundle: DatasetBundle,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache_dir: Path | None = None,
) -> nn.Module:
    """The trained zoo member ``name``: from the cache, else trained now and cached.

    Raises:
        KeyError: ``name`` is not in :data:`ZOO`.
    """
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; known: {', '.join(sorted(ZOO))}")
    recipe = ZOO[name]
    folder = cache_dir or zoo_cache_dir()
    path = folder / f"{recipe.key(bundle.name, seed)}.pt"
    model = build_zoo_model(recipe, len(bundle.class_names))
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.to(device).eval()
    log.info("zoo: training %s on %s (seed %d), cached at %s", name, bundle.name, seed, path)
    trained = train_zoo_model(recipe, bundle, seed=seed, device=device)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({k: v.cpu() for k, v in trained.state_dict().items()}, tmp)
    os.replace(tmp, path)  # atomic: two processes training the same member never tear a file
    return trained
