"""Research probe behind the README's forget-only limit (not part of the library).

Forget data only, an under-trained GroupNorm CNN (84 % retained; Nesterov SGD, 8 epochs on
MNIST-5k) loses 8.7 points when the selection stops at epoch 8: DELETE's retention term on the
forget images flattens by epoch 6 while retained accuracy recovers until epoch 30. This trains
that model, runs DELETE (lr 0.001, SGD momentum 0.9, clipped at 1, BatchNorm-free) for 30
epochs, and prints per epoch the retained test drop next to candidate data-free signals: the
teacher-masked KL and the top-1 agreement of student and teacher on *transformed* forget
images (rotated 90 degrees, noisy, pairwise mixed, shifted), which the teacher assigns to other
classes. Output of one run on this 2-core CPU: ``forget_only_proxy_cpu.md``.

    python docs/bench/forget_only_proxy.py
    python docs/bench/forget_only_proxy.py "small_cnn (project)" 3   # a zoo model instead
    POLICY=train EPOCHS=20 python docs/bench/forget_only_proxy.py bn_cnn_sgd 5  # BatchNorm
    # in train mode (bn_policy_proxy_cpu.md)
"""

from __future__ import annotations

import copy
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.data import DatasetBundle, load_mnist5k, make_unlearning_splits
from delete.training import make_loader

FORGET = int(sys.argv[2]) if len(sys.argv) > 2 else 5
# BatchNorm policy ("frozen" or "train"), learning rate and epochs: bn_policy_proxy_cpu.md
POLICY = os.environ.get("POLICY", "frozen")
LR = float(os.environ.get("LR", "1e-3"))
EPOCHS = int(os.environ.get("EPOCHS", "30"))


def _gn_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.GroupNorm(8, 32),
        nn.GELU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.GroupNorm(8, 64),
        nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.GroupNorm(8, 64),
        nn.GELU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _acc(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return round(float((model.eval()(images).argmax(1) == labels).float().mean()) * 100, 2)


def _masked(teacher: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        logits = teacher(x)
        logits[:, FORGET] = -1e9
        return F.softmax(logits, 1)


def _trained_gn(bundle: DatasetBundle) -> nn.Module:
    torch.manual_seed(0)
    model = _gn_cnn()
    loader = make_loader(bundle.train.with_transform(None), 64, shuffle=True, seed=0)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 8 * len(loader))
    model.train()
    for _ in range(8):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def main() -> None:
    torch.set_num_threads(2)
    bundle = load_mnist5k(seed=0, augment=False)
    if len(sys.argv) > 1:
        from delete.bench.zoo_bench import _original

        model = _original(sys.argv[1], bundle)
    else:
        model = _trained_gn(bundle)
    sp = make_unlearning_splits(bundle.train, bundle.test, [FORGET])
    retain = (sp.test_retain.images, sp.test_retain.labels)
    before = _acc(model, *retain)
    teacher, student = copy.deepcopy(model).eval(), copy.deepcopy(model)
    opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=0.9)
    forget_loader = make_loader(sp.train_forget, 64, shuffle=True, seed=0)
    fx = sp.train_forget.images[:128]
    g = torch.Generator().manual_seed(0)
    probes = {
        "rot90": torch.rot90(fx, 1, (2, 3)),
        "noise": fx + 0.5 * torch.randn(fx.shape, generator=g),
        "mix": 0.5 * fx + 0.5 * fx[torch.randperm(len(fx), generator=g)],
        "shift": torch.roll(fx, shifts=(6, 6), dims=(2, 3)),
    }
    print(json.dumps({"retained_before": before}))
    for epoch in range(1, EPOCHS + 1):
        student.train()
        if POLICY == "frozen":  # the selection's first policy
            _freeze_bn(student)
        for x, _ in forget_loader:
            loss = F.kl_div(
                F.log_softmax(student(x), 1), _masked(teacher, x), reduction="batchmean"
            )
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
        student.eval()
        row: dict[str, float] = {
            "epoch": epoch,
            "retained_drop": round(before - _acc(student, *retain), 2),
            "test_forget": _acc(student, sp.test_forget.images, sp.test_forget.labels),
        }
        with torch.no_grad():
            for name, x in probes.items():
                p, log_q = _masked(teacher, x), F.log_softmax(student(x), 1)
                row[f"{name}_kl"] = round(
                    float((p * (p.clamp_min(1e-12).log() - log_q)).sum(1).mean()), 4
                )
                row[f"{name}_agree"] = round(
                    float((p.argmax(1) == log_q.argmax(1)).float().mean()), 3
                )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
