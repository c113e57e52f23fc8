"""Outside models tried after the zoo (not part of the library; README, "Outside models").

Each model is trained here with its own recipe on MNIST-5k (seeded, cached beside the zoo's
weights), then ``delete.unlearn``'s defaults forget each requested digit, forget data only and
with the pipeline's 500-image selection sample. One JSON line per request: retained test
accuracy before, points lost, test-forget, epochs, the chosen candidate and the stop reason.

    .venv/bin/python docs/bench/outside_models.py instancenorm_cnn 3,5,8
    .venv/bin/python docs/bench/outside_models.py efficientnet_sgd 3
    .venv/bin/python docs/bench/outside_models.py shufflenet_sgd 3,8
    .venv/bin/python docs/bench/outside_models.py efficientnet_adam 3,5,8   # keep_by_rotated_cpu.md
    .venv/bin/python docs/bench/outside_models.py lenet5_sgd 3,5,8
    .venv/bin/python docs/bench/outside_models.py mlp_bn_adam 3,5,8
    .venv/bin/python docs/bench/outside_models.py convnext_adamw 3,5,8
    .venv/bin/python docs/bench/outside_models.py densenet_adamw 3,5,8
    .venv/bin/python docs/bench/outside_models.py lenet5_sgd 3,5,8 head-only  # backbone frozen
    .venv/bin/python docs/bench/outside_models.py groupnorm_cnn_sgd 3,5,8  # under-trained (79 %)
    .venv/bin/python docs/bench/outside_models.py groupnorm_cnn_sgd20 3,5,8
    .venv/bin/python docs/bench/outside_models.py batchnorm_silu_cnn_sgd20 3,5,8
    .venv/bin/python docs/bench/outside_models.py layernorm_silu_cnn_sgd20 3,5,8
    .venv/bin/python docs/bench/outside_models.py ln_mlp_adam 3,5,8
    .venv/bin/python docs/bench/outside_models.py mnasnet_rmsprop 3,5,8
    .venv/bin/python docs/bench/outside_models.py groupnorm_cnn_sgd20_ls 3,5,8  # and the seven
        # other recipes at the end of RECIPES (head_only_sample_cpu.md)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from delete.api import run_unlearning
from delete.bench.zoo import Gray2RGB, Normalized, mlp_bn, silu_cnn, zoo_cache_dir
from delete.bench.zoo_bench import SELECTION_SAMPLE_SIZE, _accuracy
from delete.data import DatasetBundle, load_mnist5k, make_unlearning_splits
from delete.training import make_loader


def _instancenorm_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.InstanceNorm2d(32, affine=True),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.InstanceNorm2d(64, affine=True),
        nn.GELU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 49, 128),
        nn.GELU(),
        nn.Linear(128, 10),
    )


def _efficientnet() -> nn.Module:
    net = torchvision.models.efficientnet_b0(num_classes=10, stochastic_depth_prob=0.1)
    return Normalized(nn.Sequential(Gray2RGB(), net), 0.5, 0.25)


def _shufflenet() -> nn.Module:
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    return Normalized(nn.Sequential(Gray2RGB(), net), 0.1307, 0.3081)


def _convnext() -> nn.Module:
    # A two-stage ConvNeXt: LayerNorm2d, depthwise 7x7, GELU, layer scale, stochastic depth.
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    stages = [CNBlockConfig(48, 96, 2), CNBlockConfig(96, None, 2)]
    net = ConvNeXt(stages, stochastic_depth_prob=0.1, num_classes=10)
    return Normalized(nn.Sequential(Gray2RGB(), net), 0.1307, 0.3081)


def _densenet() -> nn.Module:
    # A small DenseNet-BC: BatchNorm before every conv, features concatenated.
    net = torchvision.models.DenseNet(
        growth_rate=12, block_config=(4, 4, 4), num_init_features=24, num_classes=10
    )
    return Normalized(nn.Sequential(Gray2RGB(), net), 0.1307, 0.3081)


def _lenet5() -> nn.Module:
    # LeCun's LeNet-5 as usually written today: tanh, average pooling, no normalisation.
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, 10),
    )


def _mnasnet() -> nn.Module:
    # torchvision's MNASNet keeps BatchNorm momentum at 0.0003 (TensorFlow's 0.9997).
    net = torchvision.models.mnasnet0_5(num_classes=10)
    return Normalized(nn.Sequential(Gray2RGB(), net), 0.1307, 0.3081)


def _ln_mlp() -> nn.Module:
    # A wide MLP with LayerNorm and SiLU, no convolution.
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.LayerNorm(512),
        nn.SiLU(),
        nn.Linear(512, 256),
        nn.LayerNorm(256),
        nn.SiLU(),
        nn.Linear(256, 10),
    )


def _elu_cnn() -> nn.Module:
    # The Keras MNIST example's shape: ELU, dropout, no normalisation, inputs standardised.
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ELU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ELU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ELU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 49, 128),
        nn.ELU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    )
    return Normalized(net, 0.1307, 0.3081)


def _gelu_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.GELU(),
        nn.Linear(256, 256),
        nn.GELU(),
        nn.Linear(256, 10),
    )


def _prelu_bn_cnn() -> nn.Module:
    # BatchNorm, PReLU, global max pooling, inputs scaled to [-1, 1].
    net = nn.Sequential(
        nn.Conv2d(1, 24, 5, padding=2), nn.BatchNorm2d(24), nn.PReLU(24), nn.MaxPool2d(2),
        nn.Conv2d(24, 48, 3, padding=1), nn.BatchNorm2d(48), nn.PReLU(48), nn.MaxPool2d(2),
        nn.Conv2d(48, 96, 3, padding=1), nn.BatchNorm2d(96), nn.PReLU(96),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(96, 10),
    )  # fmt: skip
    return Normalized(net, 0.5, 0.5)


class _MishResidual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels), nn.Mish(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(4, channels),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x + self.body(x))


def _mish_gn_resnet() -> nn.Module:
    # Two residual blocks with GroupNorm (4 groups) and Mish.
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(4, 32), nn.Mish(), _MishResidual(32),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GroupNorm(4, 64), nn.Mish(),
        _MishResidual(64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


def _sgd(params: object, lr: float, wd: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)  # type: ignore[arg-type]


#: name -> (builder, optimizer, epochs, label smoothing)
RECIPES: dict[
    str, tuple[Callable[[], nn.Module], Callable[..., torch.optim.Optimizer], int, float]
] = {
    "instancenorm_cnn": (_instancenorm_cnn, lambda p: torch.optim.RMSprop(p, lr=1e-3), 6, 0.0),
    "efficientnet_sgd": (_efficientnet, lambda p: _sgd(p, 0.05, 1e-4), 12, 0.1),
    "shufflenet_sgd": (_shufflenet, lambda p: _sgd(p, 0.1, 5e-4), 10, 0.1),
    "efficientnet_adam": (_efficientnet, lambda p: torch.optim.Adam(p, lr=2e-3), 6, 0.0),
    "lenet5_sgd": (_lenet5, lambda p: torch.optim.SGD(p, lr=0.05), 10, 0.0),
    "mlp_bn_adam": (mlp_bn, lambda p: torch.optim.Adam(p, lr=1e-3), 8, 0.05),
    "densenet_adamw": (
        _densenet,
        lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=1e-4),
        6,
        0.0,
    ),
    "groupnorm_cnn_sgd": (silu_cnn, lambda p: _sgd(p, 0.05, 5e-4), 8, 0.0),
    "groupnorm_cnn_sgd20": (silu_cnn, lambda p: _sgd(p, 0.05, 5e-4), 20, 0.0),
    "batchnorm_silu_cnn_sgd20": (
        lambda: silu_cnn(norm="batch"),
        lambda p: _sgd(p, 0.05, 5e-4),
        20,
        0.0,
    ),
    "layernorm_silu_cnn_sgd20": (
        lambda: silu_cnn(norm="layer"),
        lambda p: _sgd(p, 0.05, 5e-4),
        20,
        0.0,
    ),
    "mnasnet_rmsprop": (
        _mnasnet,
        lambda p: torch.optim.RMSprop(p, lr=2e-3, momentum=0.9, eps=1e-3, weight_decay=1e-5),
        10,
        0.1,
    ),
    "ln_mlp_adam": (_ln_mlp, lambda p: torch.optim.Adam(p, lr=1e-3), 10, 0.2),
    "convnext_adamw": (
        _convnext,
        lambda p: torch.optim.AdamW(p, lr=2e-3, weight_decay=0.05),
        8,
        0.1,
    ),
    # Tried later (``head_only_sample_cpu.md``).
    "elu_cnn_adam_ls": (_elu_cnn, lambda p: torch.optim.Adam(p, lr=1e-3), 6, 0.1),
    "elu_cnn_sgd20": (_elu_cnn, lambda p: _sgd(p, 0.05, 5e-4), 20, 0.0),
    "gelu_mlp_sgd_wd": (
        _gelu_mlp,
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-3),
        10,
        0.0,
    ),
    "prelu_bn_cnn_adamax": (_prelu_bn_cnn, lambda p: torch.optim.Adamax(p, lr=2e-3), 8, 0.0),
    "prelu_bn_cnn_sgd20_ls": (_prelu_bn_cnn, lambda p: _sgd(p, 0.05, 5e-4), 20, 0.1),
    "mish_gn_resnet_sgd20": (_mish_gn_resnet, lambda p: _sgd(p, 0.05, 5e-4), 20, 0.0),
    "groupnorm_cnn_sgd20_ls": (silu_cnn, lambda p: _sgd(p, 0.05, 5e-4), 20, 0.1),
    "batchnorm_silu_cnn_sgd20_ls": (
        lambda: silu_cnn(norm="batch"),
        lambda p: _sgd(p, 0.05, 5e-4),
        20,
        0.1,
    ),
}


def _precise_bn(model: nn.Module, loader: torch.utils.data.DataLoader) -> None:
    """Re-estimate BatchNorm running statistics over the training set when the model's own
    momentum is too small to have converged in this short training (MNASNet's 0.0003: 700
    steps leave them near their initial values, and the model at 11 % in eval mode), as a
    "precise BN" pass does; the layers keep their momentum afterwards."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    slow = [m for m in layers if m.momentum is not None and m.momentum < 0.01]
    if not slow:
        return
    momenta = [m.momentum for m in slow]
    for m in slow:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
    model.train()
    with torch.no_grad():
        for x, _ in loader:
            model(x)
    for m, momentum in zip(slow, momenta, strict=True):
        m.momentum = momentum


def trained(name: str, bundle: DatasetBundle) -> nn.Module:
    """The recipe's model: from the cache, else trained now (seeded, cosine schedule)."""
    build, optimizer_for, epochs, smoothing = RECIPES[name]
    torch.manual_seed(1)
    model = build()
    path = zoo_cache_dir() / f"outside-{name}-s1.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train = bundle.train.with_transform(None)
    loader = torch.utils.data.DataLoader(
        train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    optimizer = optimizer_for(model.parameters())
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    _precise_bn(model, loader)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def request(model: nn.Module, splits: Any, digit: int, **kwargs: Any) -> dict[str, Any]:
    """``delete.unlearn``'s defaults (plus ``kwargs``) forgetting ``digit``: the row's figures
    (points of retained test accuracy lost, test-forget, epochs, kept epoch, candidate, the
    logit scale recorded for a soft model, time, stop reason)."""
    before = _accuracy(model, splits.test_retain)
    started = time.perf_counter()
    result = run_unlearning(
        model,
        make_loader(splits.train_forget, 64, shuffle=True, seed=0),
        [digit],
        device="cpu",
        progress=False,
        cache_teacher=True,
        **kwargs,
    )
    sel = result.selection
    assert sel is not None
    return {
        "retain_before": before,
        "retain_drop": round(before - _accuracy(result.model, splits.test_retain), 2),
        "test_forget": _accuracy(result.model, splits.test_forget),
        "epochs": sel.epochs,
        "kept_epoch": sel.best_epoch,
        "chosen": sel.chosen.label,
        "logit_scale": result.runtime.get("logit_scale", ""),
        "synthetic_check": result.runtime.get("synthetic_check", ""),
        "soft_check": result.runtime.get("soft_check", ""),
        "one_class_rise": result.runtime.get("one_class_rise", ""),
        "seconds": round(time.perf_counter() - started, 1),
        "stop": sel.stop_reason,
    }


def selection_loader(splits: Any) -> torch.utils.data.DataLoader:
    """The pipeline's selection sample: 500 retained training images, seeded."""
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(splits.train_retain), generator=g)
    sample = splits.train_retain.subset(order[:SELECTION_SAMPLE_SIZE])
    return make_loader(sample, 250, shuffle=False)


def freeze_all_but_head(model: nn.Module) -> str:
    """Freeze every parameter but the last layer's, as a fine-tune leaves a model; returns
    that layer's name. ``delete.unlearn`` then trains the head alone."""
    named = list(model.named_parameters())
    head = named[-1][0].rsplit(".", 1)[0]
    for name, param in named:
        param.requires_grad_(name.startswith(head + "."))
    return head


def main(name: str, digits: list[int], head_only: bool = False) -> None:
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    model = trained(name, bundle)
    if head_only:
        freeze_all_but_head(model)
    for digit in digits:
        splits = make_unlearning_splits(bundle.train, bundle.test, [digit])
        for mode, extra in (
            ("forget-only", {}),
            ("selection", {"selection_loader": selection_loader(splits)}),
        ):
            row = {"model": name, "head_only": head_only, "digit": digit, "mode": mode}
            print(json.dumps({**row, **request(model, splits, digit, **extra)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(d) for d in sys.argv[2].split(",")], sys.argv[3:] == ["head-only"])
