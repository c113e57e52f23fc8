"""The repair step on tiny tensors: what it restores, what it keeps forgotten, what it refuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from delete.errors import (
    DuplicateRegistrationError,
    InvalidHparamError,
    MissingRetainDataError,
    UnknownMethodError,
)
from delete.repair import DistillRepair, recalibrate_batchnorm, register_repair, repair


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 16) -> list[tuple[torch.Tensor, ...]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_recalibration_puts_the_statistics_of_the_given_images() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
        model[0].bias.zero_()
    model[1].running_mean.fill_(50.0)  # where forget-only batches had moved them
    model[1].momentum = 0.3
    x = torch.tensor([[1.0, 10.0], [3.0, 20.0], [5.0, 30.0], [7.0, 40.0]])
    model.eval()
    assert recalibrate_batchnorm(model, _batches(x, torch.zeros(4), size=2)) == 4
    # Plain average over both batches: means 4 and 25; unbiased variances per batch 2 and 50.
    assert model[1].running_mean.tolist() == pytest.approx([4.0, 25.0])
    assert model[1].running_var.tolist() == pytest.approx([2.0, 50.0])
    assert model[1].momentum == 0.3 and not model.training


def test_recalibration_without_batchnorm_reads_nothing() -> None:
    assert recalibrate_batchnorm(nn.Linear(2, 2), _batches(torch.ones(4, 2), torch.zeros(4))) == 0


def _setup() -> tuple[nn.Module, nn.Module, list, list]:
    """A teacher over 3 classes, an "unlearned" copy that lost class 0 on clean inputs and
    forgot class 0 on the forget inputs, a clean repair set and the forget set."""
    gen = torch.Generator().manual_seed(0)
    teacher = nn.Linear(4, 3)
    with torch.no_grad():
        teacher.weight.copy_(torch.eye(3, 4) * 4.0)
        teacher.bias.zero_()
    clean = torch.eye(3, 4).repeat(8, 1) + 0.05 * torch.randn(24, 4, generator=gen)
    labels = torch.arange(3).repeat(8)
    forget = torch.zeros(16, 4)
    forget[:, 3] = 1.0  # the "trigger" feature
    forget[:, 0] = 1.0
    damaged = nn.Linear(4, 3)
    with torch.no_grad():
        damaged.weight.copy_(teacher.weight)
        damaged.weight[0, 0] = -4.0  # class 0 lost on clean images
        damaged.bias.zero_()
    return teacher, damaged, _batches(clean, labels), _batches(forget, torch.zeros(16))


def test_repair_restores_the_teachers_clean_behaviour_and_keeps_the_class_forgotten() -> None:
    teacher, damaged, repair_set, forget_set = _setup()
    clean = torch.cat([x for x, _ in repair_set])
    labels = torch.cat([y for _, y in repair_set])
    assert (damaged(clean).argmax(1) == labels).float().mean() < 0.7  # the setup's damage
    result = repair(damaged, teacher, repair_set, forget_set, [0], "distill", "cpu", lr=0.05)
    with torch.no_grad():
        assert (result.model(clean).argmax(1) == labels).all()
        forget_inputs = torch.cat([x for x, _ in forget_set])
        p_forgotten = result.model(forget_inputs).softmax(1)[:, 0]
    assert float(p_forgotten.max()) < 0.2
    assert result.engine.steps == 8 * 30
    assert result.repair_images == 24
    assert result.to_dict()["step"] == "distill"
    # the inputs are never modified
    assert damaged.weight[0, 0] == -4.0


def test_without_the_forget_term_the_forgetting_is_not_kept() -> None:
    """The forget term is what keeps the repaired model from relearning the forgotten class on
    the forget images: dropping it (``forget_weight=0``) brings class 0 back there."""
    teacher, damaged, repair_set, forget_set = _setup()
    result = repair(
        damaged, teacher, repair_set, forget_set, [0], "distill", "cpu", lr=0.05, forget_weight=0.0
    )
    with torch.no_grad():
        forget_inputs = torch.cat([x for x, _ in forget_set])
        p_forgotten = result.model(forget_inputs).softmax(1)[:, 0]
    assert float(p_forgotten.min()) > 0.5


def test_bad_calls_are_refused_in_one_line() -> None:
    teacher, damaged, repair_set, forget_set = _setup()
    with pytest.raises(MissingRetainDataError, match="empty repair set"):
        repair(damaged, teacher, [], forget_set, [0], device="cpu")
    with pytest.raises(UnknownMethodError, match="unknown repair step 'nope'; known: distill"):
        repair(damaged, teacher, repair_set, forget_set, [0], "nope", "cpu")
    with pytest.raises(InvalidHparamError, match="no hyper-parameter"):
        repair(damaged, teacher, repair_set, forget_set, [0], device="cpu", steps=3)


def test_a_taken_step_name_is_refused() -> None:
    class Other(DistillRepair):
        pass

    with pytest.raises(DuplicateRegistrationError, match="'distill' is already registered"):
        register_repair("distill")(Other)
