"""The automatic selection sharpens a soft model's logits (``SelectionConfig.sharpen_below``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import delete
from delete.bench.zoo import Tempered
from delete.errors import InvalidHparamError
from delete.selection import SelectionConfig
from delete.selection.sharpen import sharpening_scale
from tests.unit._tiny import TinyNet, tiny_problem


def _mean_top(logits: torch.Tensor) -> float:
    return float(logits.softmax(1).max(1).values.mean())


def test_the_scale_of_two_class_logits_is_the_logit_of_the_target() -> None:
    # softmax([s * a, 0]) tops at sigmoid(s * a): 0.8 at s * a = log(4).
    assert sharpening_scale(torch.tensor([[0.5, 0.0]]), 0.8) == pytest.approx(
        math.log(4.0) / 0.5, rel=1e-6
    )


def test_the_scaled_logits_read_the_target_on_average() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(32, 10, generator=g) * 0.3
    scale = sharpening_scale(logits, 0.8)
    assert scale > 1
    assert _mean_top(logits * scale) == pytest.approx(0.8, abs=1e-6)


def test_confident_logits_are_left_alone_and_flat_ones_are_capped() -> None:
    assert sharpening_scale(torch.tensor([[6.0, 0.0, 0.0]]), 0.8) == 1.0
    assert sharpening_scale(torch.zeros(4, 10), 0.8, most=50.0) == 50.0


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.2])
def test_a_target_outside_zero_one_is_refused(bad: float) -> None:
    with pytest.raises(InvalidHparamError, match="sharpen_below"):
        SelectionConfig(sharpen_below=bad)


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k.removeprefix("model."): v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("sharpen", [True, False], ids=["sharpened", "raw"])
def test_a_model_divided_by_a_temperature_unlearns_as_the_model_itself(sharpen: bool) -> None:
    """Both read soft (an untrained net), so sharpening brings both to the same logits: the
    runs must end with the same weights. Raw, the tempered twin trains on other logits."""
    model, forget, _ = tiny_problem()
    twin = Tempered(TinyNet(), 3.0)
    twin.model.load_state_dict(model.state_dict())
    config = SelectionConfig() if sharpen else SelectionConfig(sharpen_below=None)

    runs = [
        delete.run_unlearning(m, forget, [1], "delete", "cpu", progress=False, selection=config)
        for m in (model, twin)
    ]

    a, b = (_weights(r.model) for r in runs)
    same = all(torch.allclose(a[k], b[k], atol=1e-5) for k in a if a[k].is_floating_point())
    assert same is sharpen
    if sharpen:
        scales = [float(r.runtime["logit_scale"].split(":")[0]) for r in runs]
        assert scales[1] == pytest.approx(3 * scales[0], rel=0.01)  # notes round to 2 places
        assert "below 0.8" in runs[0].runtime["logit_scale"]
    else:
        assert all("logit_scale" not in r.runtime for r in runs)


def test_a_fixed_setting_is_never_sharpened() -> None:
    model, forget, _ = tiny_problem()
    result = delete.run_unlearning(
        model, forget, [1], "delete", "cpu", progress=False, lr=0.01, epochs=2
    )
    assert "logit_scale" not in result.runtime
