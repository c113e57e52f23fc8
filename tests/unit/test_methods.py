"""Every registered method on tiny synthetic data: runs, stays finite, never touches its input.

Plus the registry contract and one cheap behavioural check per method family.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from delete.api import run_unlearning
from delete.errors import InvalidHparamError, MissingRetainDataError, UnknownMethodError
from delete.methods import create_method, list_methods, method_info
from delete.methods._common import _mix_samples, _random_other_labels, _reinitialize
from delete.methods.base import MethodConfig, UnlearnContext
from delete.methods.boundary_shrink import nearest_wrong_labels
from delete.methods.l1_sparse import l1_alpha
from delete.methods.salun import saliency_mask

NUM_CLASSES = 4
FORGET = (1,)
BASELINES = {
    "retrain",
    "finetune",
    "gradient_ascent",
    "random_label",
    "boundary_shrink",
    "l1_sparse",
    "salun",
    "scrub",
    "bad_teacher",
}


class TinyNet(nn.Module):
    """Conv + BatchNorm + linear head, so BN handling and re-initialisation are exercised."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4 * 4 * 4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.head(x.flatten(1))


def _data(seed: int, per_class: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-dependent 8x8 images in [0, 1]: class c lights up quadrant c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    images = 0.2 * torch.rand(len(labels), 1, 8, 8, generator=g)
    for c in range(NUM_CLASSES):
        r, col = divmod(c, 2)
        images[labels == c, :, 4 * r : 4 * r + 4, 4 * col : 4 * col + 4] += 0.7
    return images.clamp(0, 1), labels


@pytest.fixture(scope="module")
def problem() -> tuple[nn.Module, DataLoader, DataLoader]:
    """A TinyNet trained briefly on the synthetic task, plus forget and retain loaders."""
    torch.manual_seed(0)
    images, labels = _data(0)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(12):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    forget = torch.isin(labels, torch.tensor(FORGET))
    g = torch.Generator().manual_seed(1)
    forget_loader = DataLoader(
        TensorDataset(images[forget], labels[forget]), batch_size=4, shuffle=True, generator=g
    )
    retain_loader = DataLoader(
        TensorDataset(images[~forget], labels[~forget]), batch_size=8, shuffle=True, generator=g
    )
    return model, forget_loader, retain_loader


def _forget_confidence(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    with torch.no_grad():
        probs = [F.softmax(model(x), 1)[torch.arange(len(y)), y] for x, y in loader]
    return float(torch.cat(probs).mean())


# --- registry -------------------------------------------------------------------------------


def test_registry_lists_every_method() -> None:
    names = list_methods()
    assert set(names) == BASELINES | {"delete"}
    assert names == sorted(names)
    assert set(list_methods(needs_retain=False)) == {"delete", "gradient_ascent", "boundary_shrink"}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_method_metadata_and_config(name: str) -> None:
    info = method_info(name)
    assert info["summary"] and info["reference"]
    cls = type(create_method(name))
    assert issubclass(cls.config_cls, MethodConfig)
    assert cls.config_cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    with pytest.raises(InvalidHparamError, match="no hyper-parameter"):
        create_method(name, not_a_real_knob=1)


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(UnknownMethodError, match="unknown unlearning method 'nope'"):
        create_method("nope")


@pytest.mark.parametrize(
    ("name", "hparams"),
    [
        ("salun", {"threshold": 0.0}),
        ("salun", {"threshold": 1.5}),
        ("scrub", {"msteps": -1}),
        ("scrub", {"kd_temperature": 0.0}),
        ("bad_teacher", {"retain_fraction": 0.0}),
        ("bad_teacher", {"optimizer": "lbfgs"}),
        ("boundary_shrink", {"bound": 0.0}),
        ("l1_sparse", {"alpha": -1.0}),
    ],
)
def test_invalid_hparam_values_are_rejected(name: str, hparams: dict[str, object]) -> None:
    with pytest.raises(InvalidHparamError):
        create_method(name, **hparams)


# --- every method on the tiny problem ----------------------------------------------------------


@pytest.mark.parametrize("name", list_methods())
def test_method_runs_finite_and_leaves_input_untouched(
    name: str, problem: tuple[nn.Module, DataLoader, DataLoader]
) -> None:
    model, forget_loader, retain_loader = problem
    before = copy.deepcopy(model.state_dict())
    result = run_unlearning(
        model,
        forget_loader,
        FORGET,
        name,
        "cpu",
        retain_loader=retain_loader,
        progress=False,
        epochs=2,
    )
    assert result.model is not model
    assert len(result.engine.epoch_losses) == 2
    assert all(torch.isfinite(torch.tensor(result.engine.epoch_losses)))
    assert not result.model.training
    with torch.no_grad():
        out = result.model(next(iter(forget_loader))[0])
    assert out.shape[1] == NUM_CLASSES and torch.isfinite(out).all()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", list_methods(needs_retain=True))
def test_retain_methods_require_retain_loader(
    name: str, problem: tuple[nn.Module, DataLoader, DataLoader]
) -> None:
    model, forget_loader, _ = problem
    with pytest.raises(MissingRetainDataError, match=name):
        run_unlearning(model, forget_loader, FORGET, name, "cpu", progress=False, epochs=1)


# --- per-family sanity checks ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gradient_ascent", "boundary_shrink"])
def test_forget_only_methods_lower_forget_confidence(
    name: str, problem: tuple[nn.Module, DataLoader, DataLoader]
) -> None:
    model, forget_loader, _ = problem
    before = _forget_confidence(model, forget_loader)
    result = run_unlearning(
        model, forget_loader, FORGET, name, "cpu", progress=False, epochs=2, lr=0.05
    )
    assert _forget_confidence(result.model, forget_loader) < before - 0.2


def test_retrain_reinitialises_reproducibly(
    problem: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, forget_loader, retain_loader = problem
    # Unshuffled loaders: only the method's own seed may differ between the runs.
    retain_data = retain_loader.dataset
    runs = [
        run_unlearning(
            model, forget_loader, FORGET, "retrain", "cpu",
            retain_loader=DataLoader(retain_data, batch_size=8), progress=False, epochs=1,
            seed=seed,
        ).model
        for seed in (3, 3, 4)
    ]  # fmt: skip
    first, same, other = (r.state_dict()["conv.weight"] for r in runs)
    assert torch.equal(first, same)
    assert not torch.equal(first, other)
    # One epoch from scratch cannot land near the trained weights.
    assert (first - model.state_dict()["conv.weight"]).abs().mean() > 0.05


def test_reinitialize_resets_batchnorm_statistics() -> None:
    bn = nn.BatchNorm1d(3)
    bn.running_mean.fill_(5.0)
    assert _reinitialize(bn, seed=0) == 1
    assert torch.equal(bn.running_mean, torch.zeros(3))


def test_salun_updates_only_salient_weights(
    problem: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, forget_loader, retain_loader = problem
    masks = saliency_mask(copy.deepcopy(model), forget_loader, 0.3, torch.device("cpu"))
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert kept == int(total * 0.3)
    result = run_unlearning(
        model, forget_loader, FORGET, "salun", "cpu", retain_loader=retain_loader,
        progress=False, epochs=1, threshold=0.3, weight_decay=1e-2,
    )  # fmt: skip
    new = dict(result.model.named_parameters())
    old = dict(model.named_parameters())
    for name, mask in masks.items():
        frozen = mask == 0
        assert torch.equal(new[name][frozen], old[name][frozen]), name
    moved = sum(int((new[n] != old[n]).sum()) for n in masks)
    assert 0 < moved <= kept


def test_random_labels_avoid_own_and_forget_classes() -> None:
    targets = torch.tensor([1, 1, 1, 1, 0, 2, 3] * 20)
    retain = (0, 2, 3)
    labels = _random_other_labels(targets, retain, torch.Generator().manual_seed(0))
    assert (labels != targets).all()
    assert set(labels.tolist()) == set(retain)


def test_mix_samples_keeps_every_sample_and_marks_forget_ones() -> None:
    forget = [(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))] * 3
    retain = [(torch.ones(3, 1), torch.ones(3, dtype=torch.long))] * 5
    # Announced counts that are wrong must neither drop nor invent samples.
    for counts in ((6, 15), (1, 40), (30, 2)):
        out = list(_mix_samples(forget, retain, counts, 4, torch.Generator().manual_seed(0)))
        assert sum(len(b.targets) for b in out) == 21
        assert all(torch.equal(b.extra["forget"], b.targets == 0) for b in out)
    exact = list(_mix_samples(forget, retain, (6, 15), 4, torch.Generator().manual_seed(0)))
    assert all(len(b.targets) == 4 for b in exact[:-1])
    assert sum(bool(b.extra["forget"].any() and (~b.extra["forget"]).any()) for b in exact) >= 2


def test_boundary_shrink_labels_are_retained_classes(
    problem: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, forget_loader, _ = problem
    x, y = next(iter(forget_loader))
    labels = nearest_wrong_labels(model.eval(), x, y, FORGET, bound=0.1)
    assert not torch.isin(labels, torch.tensor(FORGET)).any()
    assert all(p.grad is None for p in model.parameters())


def test_l1_alpha_decays_linearly() -> None:
    values = [l1_alpha(2.0, epoch, 5) for epoch in range(5)]
    assert values[0] == 2.0 and values[-1] == pytest.approx(0.4)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def _context(model: nn.Module, forget: DataLoader, retain: DataLoader) -> UnlearnContext:
    original = copy.deepcopy(model).eval()
    return UnlearnContext(
        student=copy.deepcopy(model),
        original=original,
        forget_loader=forget,
        retain_loader=retain,
        forget_classes=FORGET,
        num_classes=NUM_CLASSES,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )


def test_scrub_max_steps_only_in_first_msteps_epochs(
    problem: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, forget_loader, retain_loader = problem
    method = create_method("scrub", epochs=3, msteps=1)
    ctx = _context(model, forget_loader, retain_loader)
    first = [b.kind for b in method.batches(ctx, 0)]
    later = [b.kind for b in method.batches(ctx, 1)]
    assert first == ["forget_max"] * len(forget_loader) + ["retain_min"] * len(retain_loader)
    assert later == ["retain_min"] * len(retain_loader)
    # The max-step objective is minus a KL: non-positive, zero when student == teacher.
    ctx.student.eval()
    batch = next(method.batches(ctx, 0))
    assert float(method.training_step(batch, ctx).detach()) == pytest.approx(0.0, abs=1e-5)


def test_bad_teacher_uses_a_fraction_of_retain_batches(
    problem: tuple[nn.Module, DataLoader, DataLoader],
) -> None:
    model, forget_loader, retain_loader = problem
    method = create_method("bad_teacher", retain_fraction=0.5)
    ctx = _context(model, forget_loader, retain_loader)
    method.prepare(ctx)
    batches = list(method.batches(ctx, 0))
    n_forget = sum(int(b.extra["forget"].sum()) for b in batches)
    n_retain = sum(int((~b.extra["forget"]).sum()) for b in batches)
    assert n_forget == len(forget_loader.dataset)  # type: ignore[arg-type]
    # ceil(0.5 * 5 batches) = 3 of the retain loader's batches (8, 8, 8, 8, 4 samples).
    assert len(retain_loader) == 5 and n_retain in (20, 24)
    bad = ctx.state["bad_teacher"]
    assert not bad.training and not any(p.requires_grad for p in bad.parameters())
    assert not torch.equal(bad.head.weight, model.head.weight)
