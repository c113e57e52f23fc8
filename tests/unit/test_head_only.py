"""With a selection sample, the last layer alone is trained when the whole-network run still
reads the sample short (``SelectionConfig.head_only_sample_drop``; delete/selection/head.py), and
without one when images made from the original read it far short (``head_only_drop``)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn

from delete.api import _candidate_method
from delete.methods import create_method
from delete.methods.base import UnlearnContext, UnlearningMethod
from delete.models.outputs import LogitsOnly
from delete.selection import Candidate, ProbeSet, SelectionConfig, select_and_train
from delete.selection.auto import HEAD_ONLY, SOFT_NOTE
from delete.selection.head import last_layer
from tests.unit._tiny import tiny_data, tiny_problem


class _DriftsFeatures(UnlearningMethod):
    """DELETE whose every step also scrambles each trainable convolution: retained images
    drift wherever the features train, and only there (the failure the fallback is for)."""

    name = "drifts-features-test"

    def training_step(self, batch, ctx):  # type: ignore[no-untyped-def]
        return create_method("delete").training_step(batch, ctx)

    def after_backward(self, ctx: UnlearnContext) -> None:
        with torch.no_grad():
            for param in ctx.student.parameters():
                if param.requires_grad and param.dim() == 4:
                    param.add_(torch.randn_like(param) * 2.0)


def _problem() -> tuple[UnlearnContext, ProbeSet, ProbeSet]:
    """The tiny problem trained, its context, and its probe with and without the retained
    images as the selection sample."""
    model, forget_loader, retain_loader = tiny_problem(forget=1)
    images, labels = tiny_data(n=64)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ctx = UnlearnContext(
        student=copy.deepcopy(model),
        original=copy.deepcopy(model).eval(),
        forget_loader=forget_loader,
        retain_loader=None,
        forget_classes=(1,),
        num_classes=4,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )
    with_sample = ProbeSet.gather(
        ctx.original,
        forget_loader,
        ctx.device,
        selection_loader=retain_loader,  # type: ignore[arg-type]
    )
    alone = ProbeSet.gather(ctx.original, forget_loader, ctx.device)
    return ctx, with_sample, alone


def _factory(drifts: bool):  # type: ignore[no-untyped-def]
    def factory(c: Candidate, n: int) -> UnlearningMethod:
        config = create_method("delete", lr=c.lr, freeze_bn=True, epochs=n, grad_clip=1.0).config
        return _DriftsFeatures(config) if drifts else create_method("delete", **config.to_dict())

    return factory


#: One learning rate, long enough for the head alone to forget (one step a pass).
_CONFIG = SelectionConfig(
    candidates=(Candidate(0.03),), max_epochs=30, min_epochs=2, synthetic_rerun_drop=None
)


def test_a_drifting_run_falls_back_to_its_last_layer_alone() -> None:
    ctx, probe, _ = _problem()
    conv = ctx.student.conv.weight.detach().clone()  # type: ignore[union-attr]
    _, report = select_and_train(_factory(drifts=True), ctx, probe, _CONFIG)
    assert report.chosen.head == "head", report.stop_reason
    assert "was trained alone" in report.stop_reason and ": kept" in report.stop_reason
    assert HEAD_ONLY in {t.rule for t in report.trials}
    # Only the head trained: the features are the original's, so nothing drifted.
    assert torch.equal(ctx.student.conv.weight, conv)  # type: ignore[union-attr]
    assert report.final.forget_acc <= 1.0
    assert report.final.selection_acc == probe.original_selection_acc


@pytest.mark.parametrize("field", ["head_only_sample_drop", "head_only_class_drop"])
def test_with_a_sample_each_bound_starts_the_head_on_its_own(field: str) -> None:
    # The guard's bound (head_only_drop) and the other sample bound are off throughout.
    ctx, probe, _ = _problem()
    off = dataclasses.replace(
        _CONFIG, head_only_drop=None, head_only_sample_drop=None, head_only_class_drop=None
    )
    _, control = select_and_train(_factory(drifts=True), ctx, probe, off)
    assert control.chosen.head is None
    final, original = control.final, probe.original_selection_acc
    assert original is not None and final.selection_acc is not None
    assert final.selection_worst_drop is not None
    if field == "head_only_sample_drop":
        read, says = original - final.selection_acc, "on the selection sample (more than {:g})"
    else:
        read, says = final.selection_worst_drop, f"one class {final.selection_worst_drop:.1f}"
    assert read > getattr(SelectionConfig(), field)  # the drift is past the default too
    for bound, fires in ((read - 0.5, True), (read + 0.5, False)):
        ctx, probe, _ = _problem()
        config = dataclasses.replace(off, **{field: bound})
        _, report = select_and_train(_factory(drifts=True), ctx, probe, config)
        assert (report.chosen.head == "head") is fires, (bound, report.stop_reason)
        assert (says.format(bound) in report.stop_reason) is fires


def test_forget_only_the_guards_images_judge_the_last_layer_alone() -> None:
    # No sample: the guard's inverted images read the drifting run short, its rerun too, so
    # the head is trained alone and judged by the same images.
    ctx, _, alone = _problem()
    conv = ctx.student.conv.weight.detach().clone()  # type: ignore[union-attr]
    guarded = dataclasses.replace(_CONFIG, synthetic_rerun_drop=3.0)
    _, report = select_and_train(_factory(drifts=True), ctx, alone, guarded)
    assert report.mode == "forget-only"
    assert report.chosen.head == "head", report.stop_reason
    assert "on images inverted from the original (more than 3)" in report.stop_reason
    assert "was trained alone" in report.stop_reason and report.stop_reason.endswith(": kept")
    assert torch.equal(ctx.student.conv.weight, conv)  # type: ignore[union-attr]
    # The same with the fallback off: the guard's rerun is all there is.
    ctx, _, alone = _problem()
    off = dataclasses.replace(guarded, head_only_drop=None)
    _, report = select_and_train(_factory(drifts=True), ctx, alone, off)
    assert report.chosen.head is None and "trained alone" not in report.stop_reason


class _ShiftsAChannel(UnlearningMethod):
    """DELETE whose every whole-network step also sets one BatchNorm shift 0.5 above the
    original's: a bounded shift of the logits, which the guard's saturated images survive and
    retained images do not; a run of the head alone leaves it as the original's."""

    name = "shifts-a-channel-test"

    def training_step(self, batch, ctx):  # type: ignore[no-untyped-def]
        return create_method("delete").training_step(batch, ctx)

    def after_backward(self, ctx: UnlearnContext) -> None:
        bias = ctx.student.bn.bias  # type: ignore[union-attr]
        if bias.requires_grad:
            with torch.no_grad():
                bias.copy_(ctx.original.bn.bias)  # type: ignore[union-attr]
                bias[0] += 0.5


def _shifts(c: Candidate, n: int) -> UnlearningMethod:
    return _ShiftsAChannel(
        create_method("delete", lr=c.lr, freeze_bn=True, epochs=n, grad_clip=1.0).config
    )


def _retained(model: nn.Module) -> float:
    """Accuracy (%) on the tiny problem's retained images (class 1 is forgotten)."""
    images, labels = tiny_data(n=64)
    keep = labels != 1
    with torch.no_grad():
        return float((model(images[keep]).argmax(1) == labels[keep]).float().mean()) * 100


def test_forget_only_images_carried_to_a_soft_target_see_what_the_guards_miss() -> None:
    # The tiny problem has 8 forget images: carried into other kept classes, they read the
    # shift 12.5 points short (one image), not the 31-71 of the SiLU CNNs: the bound here is 5.
    # The shift moves one class's boundary on every image: the rise check, which runs first,
    # reads it too (test_one_class_rise.py); it is off here, as the soft check is alone.
    checked = dataclasses.replace(
        _CONFIG, synthetic_rerun_drop=3.0, soft_check_drop=5.0, one_class_rise=None
    )
    ctx, _, alone = _problem()
    _, control = select_and_train(
        _shifts, ctx, alone, dataclasses.replace(checked, soft_check_drop=None)
    )
    assert "read the state kept 0.0 points" in ctx.notes["synthetic_check"]  # the guard misses
    assert _retained(ctx.original) - _retained(ctx.student) > 10.0  # ...a real loss
    assert control.chosen.head is None and SOFT_NOTE not in ctx.notes

    ctx, _, alone = _problem()
    _, report = select_and_train(_shifts, ctx, alone, checked)
    assert report.mode == "forget-only" and report.chosen.head == "head", report.stop_reason
    assert "limit 5" in ctx.notes[SOFT_NOTE] and "soft target" in report.stop_reason
    assert _retained(ctx.student) == _retained(ctx.original)
    assert report.final.forget_acc <= 1.0

    ctx, _, alone = _problem()  # above what the soft images read: no fallback
    _, report = select_and_train(
        _shifts, ctx, alone, dataclasses.replace(checked, soft_check_drop=50.0)
    )
    assert report.chosen.head is None and "limit 50" in ctx.notes[SOFT_NOTE]


def test_no_fallback_within_the_bound_when_off_or_without_a_sample() -> None:
    runs = []
    for config, with_sample in (
        # nothing reads 100 short, overall or on one class
        (
            dataclasses.replace(_CONFIG, head_only_sample_drop=100.0, head_only_class_drop=100.0),
            True,
        ),
        (dataclasses.replace(_CONFIG, head_only_sample_drop=None, head_only_class_drop=None), True),
        (_CONFIG, False),
    ):
        ctx, probe, alone = _problem()
        runs.append(
            select_and_train(_factory(drifts=True), ctx, probe if with_sample else alone, config)
        )
    for _, report in runs:
        assert report.chosen.head is None, report.stop_reason
        assert HEAD_ONLY not in {t.rule for t in report.trials}
        assert "trained alone" not in report.stop_reason


class _HeadFirst(nn.Module):
    """Registers its head first and runs it last, then a parameter-free log-softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(8, 3)
        self.body = nn.Linear(4, 8)
        self.aside = nn.Linear(4, 3)  # three wide, but not what the output comes from

    def forward(self, x: Tensor) -> Tensor:
        self.aside(x)
        return torch.log_softmax(self.out(torch.relu(self.body(x))), dim=1)


def test_the_last_layer_is_found_by_the_order_modules_run() -> None:
    net = _HeadFirst()
    assert last_layer(net, torch.zeros(2, 4), 3) == "out"
    assert last_layer(LogitsOnly(net), torch.zeros(2, 4), 3) == "out"  # the caller's names
    assert last_layer(net, torch.zeros(2, 4), 5) is None
    # TorchScript takes no forward hooks: no layer is named, rather than an error mid-request.
    assert (
        last_layer(torch.jit.script(nn.Sequential(nn.Linear(4, 3))), torch.zeros(2, 4), 3) is None
    )


def test_the_record_names_the_layer_trained_alone() -> None:
    factory = _candidate_method("delete", {}, SelectionConfig())
    assert factory(Candidate(0.01, head="fc"), 3).config.trainable == ("fc",)
    assert factory(Candidate(0.01), 3).config.trainable is None
    assert Candidate(0.01, head="fc").to_dict() == {"lr": 0.01, "freeze_bn": True, "head": "fc"}
