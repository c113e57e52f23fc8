"""Forget-only, one kept class's logit rising on the guard's inverted images starts the last
layer alone (``SelectionConfig.one_class_rise``; ``signals.one_class_rise``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from delete.methods import create_method
from delete.methods.base import UnlearnContext, UnlearningMethod
from delete.selection import Candidate, select_and_train
from delete.selection.auto import RISE_NOTE
from delete.selection.signals import one_class_rise
from tests.unit.test_head_only import _CONFIG, _problem, _retained

#: The kept class whose logit the whole-network run raises (class 1 is forgotten).
RAISED = 2


def test_a_rise_spread_over_every_class_reads_nothing_and_forgotten_columns_are_not_read() -> None:
    before = torch.tensor([[3.0, 0.0, 0.0, 9.0], [0.0, 3.0, 0.0, 9.0], [0.0, 0.0, 3.0, 9.0]])
    labels = torch.tensor([0, 1, 2])  # column 3 (a forgotten class) is no image's class
    # Every image's own logit falls by 1: each class rose 1 on the others' images alike.
    assert one_class_rise(before, before - torch.eye(3, 4), labels)[0] == 0.0
    after = before.clone()
    after[:, 3] = 50.0  # the forgotten class's logit is not a kept class's rise
    assert one_class_rise(before, after, labels)[0] == 0.0
    after = before.clone()
    after[:, 1] += 3.0  # one class rises by the original's margin (3) on every image
    rise, cls = one_class_rise(before, after, labels)
    assert cls == 1 and rise > 1.0  # 3 on the others' images, against the others' fall


class _RaisesAClass(UnlearningMethod):
    """DELETE whose every whole-network step also holds one kept class's bias ``delta``
    above the original's: every image's boundary with that class moves at once. A run of the
    last layer alone (the convolution frozen) trains its bias as DELETE does."""

    name = "raises-a-class-test"
    delta = 0.0

    def training_step(self, batch, ctx):  # type: ignore[no-untyped-def]
        return create_method("delete").training_step(batch, ctx)

    def after_backward(self, ctx: UnlearnContext) -> None:
        if ctx.student.conv.weight.requires_grad:  # type: ignore[union-attr]
            with torch.no_grad():
                bias = ctx.student.head.bias  # type: ignore[union-attr]
                bias[RAISED] = ctx.original.head.bias[RAISED] + self.delta  # type: ignore[union-attr]


def _raises(delta: float):  # type: ignore[no-untyped-def]
    def factory(c: Candidate, n: int) -> UnlearningMethod:
        method = _RaisesAClass(
            create_method("delete", lr=c.lr, freeze_bn=True, epochs=n, grad_clip=1.0).config
        )
        method.delta = delta
        return method

    return factory


def _margin(model: nn.Module) -> float:
    """The original's mean margin on the tiny problem's retained images."""
    from tests.unit._tiny import tiny_data

    images, labels = tiny_data(n=64)
    keep = labels != 1
    with torch.no_grad():
        logits = model(images[keep])[:, [0, 2, 3]]
    top2 = logits.topk(2, dim=1).values
    return float((top2[:, 0] - top2[:, 1]).mean())


#: The guard's own bound out of reach: its images read the moved boundary within it anyway,
#: and the check under test runs once they have.
_GUARDED = dataclasses.replace(_CONFIG, synthetic_rerun_drop=100.0, soft_check_drop=None)


@pytest.mark.parametrize(
    ("delta", "bound", "fires"),
    [(1.0, 0.35, True), (1.0, None, False), (1.0, 1000.0, False), (0.0, 0.35, False)],
    ids=["raised", "off", "above-the-bound", "not-raised"],
)
def test_one_class_rising_starts_the_last_layer_alone(
    delta: float, bound: float | None, fires: bool
) -> None:
    ctx, _, alone = _problem()
    raised = delta * _margin(ctx.original)  # the original's margin: the rise moves boundaries
    config = dataclasses.replace(_GUARDED, one_class_rise=bound)
    _, report = select_and_train(_raises(raised), ctx, alone, config)
    assert report.mode == "forget-only"
    assert (report.chosen.head == "head") is fires, report.stop_reason
    assert ("was trained alone" in report.stop_reason) is fires
    if bound is not None:  # what it read is in the run record either way
        assert f"limit {bound:g}" in ctx.notes[RISE_NOTE], ctx.notes
    else:
        assert RISE_NOTE not in ctx.notes
    if fires:
        assert f"class {RAISED}'s logit rose" in report.stop_reason
        assert report.stop_reason.endswith(": kept")
        assert _retained(ctx.student) >= _retained(ctx.original) - 5.0
        assert report.final.forget_acc <= 1.0
    elif delta and bound is None:  # the run the check would have replaced lost for real
        assert _retained(ctx.original) - _retained(ctx.student) > 10.0
