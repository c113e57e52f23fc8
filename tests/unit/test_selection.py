"""The automatic selection: its stopping rule, its candidates, its veto and its report."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import delete
from delete.api import run_unlearning
from delete.methods import create_method
from delete.methods.base import Batch, UnlearnContext, UnlearningMethod
from delete.selection import (
    Candidate,
    EpochSignals,
    ProbeSet,
    SelectionConfig,
    Stopper,
    select_and_train,
)
from tests.unit._tiny import loader_of, tiny_data, tiny_problem


def _sig(
    epoch: int, forget_acc: float, retention: float, selection: float | None = None
) -> EpochSignals:
    return EpochSignals(epoch, forget_acc, 0.0, retention, 1.0, selection)


def test_stopper_never_stops_before_forgetting() -> None:
    stop = Stopper(SelectionConfig(patience=1, min_epochs=1, max_epochs=8))
    # Retention is flat from the start: only the forget accuracy keeps it going.
    decisions = [stop.update(_sig(e, 50.0, 0.1)) for e in range(1, 9)]
    assert decisions == [False] * 7 + [True]
    assert "before forgetting was done" in stop.reason


def test_stopper_keeps_going_while_retention_improves() -> None:
    stop = Stopper(SelectionConfig(patience=2, min_epochs=1, max_epochs=12, min_delta=0.05))
    # Forgotten from epoch 1, retention keeps falling by 20 % an epoch until epoch 8.
    retention = [0.5 * 0.8**e for e in range(8)] + [0.5 * 0.8**7] * 4
    stopped_at = next(e + 1 for e, r in enumerate(retention) if stop.update(_sig(e + 1, 0.0, r)))
    assert stopped_at == 10  # two epochs after the last improvement (epoch 8)
    assert "stopped improving for 2 epochs" in stop.reason


def test_stopper_with_selection_waits_for_both_signals() -> None:
    stop = Stopper(SelectionConfig(patience=2, min_epochs=1, max_epochs=20))
    flat_retention = 0.1
    accs = [90.0, 92.0, 94.0, 96.0, 96.0, 96.0]
    decisions = [stop.update(_sig(e + 1, 0.0, flat_retention, a)) for e, a in enumerate(accs)]
    # Retention is flat from epoch 1; the accuracy still improves until epoch 4.
    assert decisions == [False, False, False, False, False, True]
    assert "selection accuracy" in stop.reason


def _tiny_ctx(model: nn.Module, forget_loader: object, forget: int = 1) -> UnlearnContext:
    original = copy.deepcopy(model).eval()
    return UnlearnContext(
        student=copy.deepcopy(model),
        original=original,
        forget_loader=forget_loader,  # type: ignore[arg-type]
        retain_loader=None,
        forget_classes=(forget,),
        num_classes=4,
        device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )


def _trained_tiny() -> tuple[nn.Module, object, object]:
    model, forget_loader, retain_loader = tiny_problem(forget=1)
    images, labels = tiny_data(n=64)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), forget_loader, retain_loader


def test_selection_stops_early_on_an_easy_case_and_says_why() -> None:
    model, forget_loader, _ = _trained_tiny()
    ctx = _tiny_ctx(model, forget_loader)
    probe = ProbeSet.gather(ctx.original, forget_loader, ctx.device)  # type: ignore[arg-type]
    config = SelectionConfig(max_epochs=40, patience=2)
    _, report = select_and_train(
        lambda c, n: create_method(
            "delete", lr=c.lr, freeze_bn=c.freeze_bn, epochs=n, grad_clip=1.0
        ),
        ctx,
        probe,
        config,
    )
    assert report.mode == "forget-only"
    assert report.epochs < 40, report.summary()
    assert report.stop_reason.startswith("forgotten"), report.stop_reason
    assert report.final.forget_acc <= 1.0
    assert [t.status for t in report.trials].count("chosen") == 1
    assert len(report.trials) == 3  # the default grid: three learning rates, BN frozen
    record = report.to_dict()
    assert record["stop_reason"] == report.stop_reason and record["tried"][0]["signals"]


class _Collapse(UnlearningMethod):
    """Forgets by mapping *everything* to one retained class: forget data looks fine."""

    name = "collapse-test"

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        target = torch.full_like(batch.targets, ctx.retain_classes[0])
        return nn.functional.cross_entropy(ctx.student(batch.inputs), target)

    def after_backward(self, ctx: UnlearnContext) -> None:
        head = ctx.student.head  # type: ignore[union-attr]
        # A bias no input can overcome: retained images all land on one class too.
        with torch.no_grad():
            head.bias[ctx.retain_classes[0]] += 50.0


def test_selection_sample_vetoes_a_candidate_that_collapses_retained_accuracy() -> None:
    model, forget_loader, retain_loader = _trained_tiny()
    ctx = _tiny_ctx(model, forget_loader)
    probe = ProbeSet.gather(
        ctx.original,
        forget_loader,
        ctx.device,
        selection_loader=retain_loader,  # type: ignore[arg-type]
    )
    assert probe.original_selection_acc is not None and probe.original_selection_acc > 80
    # The collapsing candidate has the gentler step, so it is probed first and must be vetoed.
    healthy, collapsing = Candidate(1e-2, True), Candidate(1e-4, True)

    def factory(c: Candidate, n: int) -> UnlearningMethod:
        if c == collapsing:
            return _Collapse(create_method("delete", epochs=n).config)
        return create_method("delete", lr=c.lr, freeze_bn=True, epochs=n, grad_clip=1.0)

    _, report = select_and_train(
        factory, ctx, probe, SelectionConfig(candidates=(collapsing, healthy), max_epochs=10)
    )
    status = {t.candidate: t.status for t in report.trials}
    assert status[collapsing] == "vetoed"
    assert report.chosen == healthy
    assert report.mode == "selection-sample"


def test_unlearn_defaults_run_the_selection_and_fixed_settings_run_exactly() -> None:
    model, forget_loader, retain_loader = _trained_tiny()
    auto = run_unlearning(model, forget_loader, [1], device="cpu", progress=False)
    assert auto.selection is not None and auto.selection.mode == "forget-only"
    fixed = run_unlearning(
        model, forget_loader, [1], device="cpu", progress=False, lr=0.01, epochs=3
    )
    assert fixed.selection is None
    assert fixed.config.epochs == 3 and len(fixed.engine.epoch_losses) == 3
    with_sample = run_unlearning(
        model, forget_loader, [1], device="cpu", progress=False, selection_loader=retain_loader
    )
    assert with_sample.selection is not None
    assert with_sample.selection.mode == "selection-sample"
    assert with_sample.selection.selection_size == sum(len(y) for _, y in retain_loader)  # type: ignore[attr-defined]


def test_a_pinned_bn_policy_or_lr_narrows_the_candidates() -> None:
    model, forget_loader, _ = _trained_tiny()
    res = run_unlearning(
        model, forget_loader, [1], device="cpu", progress=False, selection=True, lr=0.003
    )
    assert res.selection is not None
    assert {t.candidate.lr for t in res.selection.trials} == {0.003}


def test_bad_selection_config_is_one_line() -> None:
    with pytest.raises(delete.InvalidHparamError, match="probe_epochs"):
        SelectionConfig(probe_epochs=5, max_epochs=2)


def test_selection_data_is_never_trained_on() -> None:
    model, forget_loader, _ = _trained_tiny()
    sentinel = 123.0
    seen_in_training: list[bool] = []

    def spy(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        if module.training:
            seen_in_training.append(bool((args[0] == sentinel).any()))

    model.register_forward_pre_hook(spy)  # deep copies (student, candidates) keep the hook
    images, labels = tiny_data(n=16, seed=3)
    selection = loader_of(torch.full_like(images, sentinel), (labels + 1) % 4)
    res = run_unlearning(
        model, forget_loader, [1], device="cpu", progress=False, selection_loader=selection
    )
    assert res.selection is not None and res.selection.selection_size == 16
    assert seen_in_training and not any(seen_in_training)


@pytest.mark.parametrize("kill_after", [0, 1])
def test_a_killed_selection_resumes_after_its_probes_with_the_same_result(
    tmp_path, kill_after: int
) -> None:  # type: ignore[no-untyped-def]
    model, forget_loader, _ = _trained_tiny()
    kwargs = dict(device="cpu", progress=False, cache_teacher=True)
    config = SelectionConfig(max_epochs=12, patience=2)
    whole = run_unlearning(model, forget_loader, [1], selection=config, **kwargs)  # type: ignore[arg-type]
    assert whole.selection is not None and whole.selection.epochs > config.probe_epochs + 1

    ckpt = tmp_path / "ckpt"
    import delete.selection.auto as auto

    calls = {"n": 0}
    # Epochs spent probing in the uninterrupted run (the later candidates may be skipped).
    probed = sum(len(t.signals) for t in whole.selection.trials)
    real_epoch = auto._epoch

    def dying_epoch(live, probe, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == probed + kill_after + 1:
            raise RuntimeError("killed")
        return real_epoch(live, probe, **kwargs)

    auto._epoch = dying_epoch  # type: ignore[assignment]
    try:
        with pytest.raises(RuntimeError, match="killed"):
            run_unlearning(
                model, forget_loader, [1], selection=config, checkpoint_dir=ckpt, **kwargs
            )  # type: ignore[arg-type]
    finally:
        auto._epoch = real_epoch  # type: ignore[assignment]
    assert (ckpt / "selection.json").exists() and (ckpt / "engine_checkpoint.pt").exists()

    resumed = run_unlearning(
        model, forget_loader, [1], selection=config, checkpoint_dir=ckpt, **kwargs
    )  # type: ignore[arg-type]
    # Killed in the first epoch after the probes: resumes at their end; later: at its epoch.
    assert resumed.engine.resumed_from_epoch == config.probe_epochs + kill_after
    assert resumed.selection is not None
    assert resumed.selection.chosen == whole.selection.chosen
    assert resumed.selection.best_epoch == whole.selection.best_epoch
    assert [t.status for t in resumed.selection.trials] == [
        t.status for t in whole.selection.trials
    ]
    for a, b in zip(
        resumed.model.state_dict().values(), whole.model.state_dict().values(), strict=True
    ):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_an_unreadable_selection_state_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model, forget_loader, _ = _trained_tiny()
    (tmp_path / "selection.json").write_text("{not json")
    with pytest.raises(delete.CheckpointError, match="selection state"):
        run_unlearning(
            model, forget_loader, [1], device="cpu", progress=False, checkpoint_dir=tmp_path
        )


def test_any_method_can_use_the_selection() -> None:
    model, forget_loader, _ = _trained_tiny()
    res = run_unlearning(
        model,
        forget_loader,
        [1],
        method="gradient_ascent",
        device="cpu",
        progress=False,
        selection=SelectionConfig(max_epochs=4, patience=1),
    )
    assert res.method == "gradient_ascent"
    assert res.selection is not None and res.selection.stop_reason
    assert res.config.lr == res.selection.chosen.lr


def test_spatial_logits_ask_for_a_fixed_setting_in_one_line() -> None:
    class Seg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 1)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x)

    images, labels = tiny_data(n=8)
    loader = loader_of(images, labels)
    with pytest.raises(delete.InvalidHparamError, match=r"pass lr= and epochs="):
        run_unlearning(Seg(), loader, [1], device="cpu", progress=False)
    fixed = run_unlearning(Seg(), loader, [1], device="cpu", progress=False, lr=0.01, epochs=1)
    assert fixed.selection is None
