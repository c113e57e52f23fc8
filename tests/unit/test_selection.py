"""The automatic selection: its stopping rule, its candidates, its veto and its report."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import delete
from delete.api import run_unlearning
from delete.errors import DatasetError
from delete.methods import create_method
from delete.methods.base import Batch, UnlearnContext, UnlearningMethod
from delete.selection import (
    Candidate,
    EpochSignals,
    ProbeSet,
    SelectionConfig,
    SelectionReport,
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


def test_stopper_waits_for_the_mass_on_the_forgotten_class_to_fall_too() -> None:
    stop = Stopper(SelectionConfig(patience=1, min_epochs=1, max_epochs=20, max_forgetting=0.05))
    # No measured image is recognised from epoch 1, but the forgotten class keeps 10 % of the
    # probability until epoch 6 (the forgetting term), then 4 %; retention is flat throughout.
    terms = [0.1] * 5 + [0.04] * 3
    decisions = [
        stop.update(EpochSignals(e + 1, 0.0, term, 0.1, 1.0)) for e, term in enumerate(terms)
    ]
    assert decisions.index(True) == 6  # one epoch of patience after the term fell (epoch 6)
    assert "forgetting term 0.040 <= 0.05" in stop.reason


def test_stopper_keeps_going_while_retention_improves() -> None:
    stop = Stopper(SelectionConfig(patience=2, min_epochs=1, max_epochs=12, min_delta=0.05))
    # Forgotten from epoch 1, retention keeps falling by 20 % an epoch until epoch 8.
    retention = [0.5 * 0.8**e for e in range(8)] + [0.5 * 0.8**7] * 4
    stopped_at = next(e + 1 for e, r in enumerate(retention) if stop.update(_sig(e + 1, 0.0, r)))
    assert stopped_at == 10  # two epochs after the last improvement (epoch 8)
    assert "stopped improving for 2 epochs" in stop.reason


@pytest.mark.parametrize(
    ("start", "min_delta_abs", "stopped_at"),
    [
        (0.5, 0.002, None),  # falls by 0.06, 0.05...: well above the floor, never settles
        (0.01, 0.002, 3),  # falls by 0.0012, 0.0011...: below it, settled at epoch 1
        (0.01, 0.0, None),  # the relative rule alone: 12 % an epoch always counts
    ],
)
def test_a_steady_relative_fall_of_a_tiny_term_does_not_hold_the_run_open(
    start: float, min_delta_abs: float, stopped_at: int | None
) -> None:
    config = SelectionConfig(patience=2, min_epochs=1, max_epochs=30, min_delta_abs=min_delta_abs)
    stop = Stopper(config)
    # Forgotten from epoch 1; the retention term falls by 12 % every epoch (min_delta 10 %).
    stopped = next(e for e in range(1, 31) if stop.update(_sig(e, 0.0, start * 0.88 ** (e - 1))))
    assert stopped == (stopped_at or 30)
    assert ("max_epochs=30" in stop.reason) == (stopped_at is None)


def test_the_selection_accuracy_does_not_prolong_the_run() -> None:
    stop = Stopper(SelectionConfig(patience=2, min_epochs=1, max_epochs=20))
    flat_retention = 0.1
    accs = [90.0, 92.0, 94.0, 96.0, 96.0, 96.0]
    decisions = [stop.update(_sig(e + 1, 0.0, flat_retention, a)) for e, a in enumerate(accs)]
    # Retention is flat from epoch 1: two epochs later the run stops, whatever the sample says
    # (the sample picks the epoch to keep afterwards; waiting on it cost epochs, not accuracy).
    assert decisions[:3] == [False, False, True]
    assert "retention term stopped improving for 2 epochs" in stop.reason


def test_the_selection_sample_picks_the_forgotten_state_it_classifies_best() -> None:
    from delete.selection.auto import _Live, _pick_by_selection

    model = nn.Linear(2, 2, bias=False)
    right = {"weight": torch.eye(2)}  # classifies the sample correctly
    wrong = {"weight": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}  # swaps both classes
    inputs = torch.eye(2)
    probe = ProbeSet(inputs, torch.tensor([0, 1]), inputs, inputs, torch.tensor([0, 1]), 100.0)
    ctx = _tiny_ctx(model, None)
    live = _Live(Candidate(0.01), ctx, None, [_sig(e, 0.0, 0.1) for e in range(1, 8)])  # type: ignore[arg-type]
    live.signals[6] = _sig(7, 40.0, 0.1)  # epoch 7 still remembers the forget class
    states = [
        (live.signals[4], wrong),
        (live.signals[5], right),
        (live.signals[6], right),  # classifies the sample well, but is not forgotten
        (live.signals[3], wrong),  # the forget-only pick
    ]
    kept, state = _pick_by_selection(live, probe, SelectionConfig(), states)
    assert kept.epoch == 6 and kept.selection_acc == 100.0
    assert torch.equal(state["weight"], right["weight"])
    read = {s.epoch: s.selection_acc for s in live.signals if s.selection_acc is not None}
    assert read == {4: 0.0, 5: 0.0, 6: 100.0}  # the report shows what was compared
    # Nothing forgotten among the states: the forget-only pick (the last entry) stays.
    kept, _ = _pick_by_selection(live, probe, SelectionConfig(), [states[2], states[2]])
    assert kept.epoch == 7


def test_states_the_sample_reads_within_one_image_of_each_other_are_ranked_by_delete_loss() -> None:
    from delete.selection.auto import _Live, _pick_by_selection

    # A sample of four images, two a class: one image is 25 points overall, 50 on its class.
    inputs, labels = torch.eye(4), torch.tensor([0, 0, 1, 1])
    right = {"weight": torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])}
    one_wrong = {"weight": torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])}
    two_wrong = {"weight": torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])}
    original_classes = torch.tensor([100.0, 100.0])
    probe = ProbeSet(inputs, labels, inputs, inputs, labels, 100.0, original_classes)
    model = nn.Linear(4, 2, bias=False)
    # Epoch 6 has the lower DELETE loss on the forget images (retention 0.05 against 0.2).
    signals = [_sig(5, 0.0, 0.2), _sig(6, 0.0, 0.05)]

    live = _Live(Candidate(0.01), _tiny_ctx(model, None), None, list(signals))  # type: ignore[arg-type]
    kept, state = _pick_by_selection(
        live, probe, SelectionConfig(), [(signals[0], right), (signals[1], one_wrong)]
    )
    # One image apart: the sample cannot tell them apart, DELETE's loss decides.
    assert kept.epoch == 6 and torch.equal(state["weight"], one_wrong["weight"])

    live = _Live(Candidate(0.01), _tiny_ctx(model, None), None, list(signals))  # type: ignore[arg-type]
    kept, state = _pick_by_selection(
        live, probe, SelectionConfig(), [(signals[0], right), (signals[1], two_wrong)]
    )
    # Two images apart: the sample decides.
    assert kept.epoch == 5 and torch.equal(state["weight"], right["weight"])


def test_the_selection_sample_is_read_only_where_a_decision_needs_it() -> None:
    # Tolerances no state misses: the run never goes on past the forget-only rule.
    # short_pass_steps=0: the long-pass rule (the tiny forget set is one step a pass).
    config = SelectionConfig(
        max_epochs=30,
        patience=2,
        selection_tolerance=100.0,
        selection_class_tolerance=100.0,
        short_pass_steps=0,
    )
    report = _select_tiny(config)
    assert report.epochs > config.patience + config.probe_epochs
    for trial in report.trials:  # every probe epoch (the veto)
        assert all(s.selection_acc is not None for s in trial.signals)
    after_probes = [
        s.epoch
        for s in report.history
        if s.selection_acc is not None and s.epoch > config.probe_epochs
    ]
    # After the probes: only the last patience + 1 epochs (and the forget-only pick).
    assert len(after_probes) <= config.patience + 2
    assert set(after_probes) >= set(range(report.epochs - config.patience, report.epochs + 1))
    assert report.best_epoch in {s.epoch for s in report.history if s.selection_acc is not None}


def test_on_short_passes_the_sample_is_read_every_epoch_and_its_best_epoch_kept() -> None:
    # The tiny forget set is one step a pass: per_pass turns every-epoch reading on.
    config = SelectionConfig(max_epochs=30, patience=2)
    report = _select_tiny(config)
    assert all(s.selection_acc is not None for s in report.history)
    forgotten = [s for s in report.history if s.forget_acc <= config.forget_threshold]
    best = max(s.selection_acc or 0.0 for s in forgotten)
    kept = report.final
    assert kept.forget_acc <= config.forget_threshold and kept.selection_acc == best


def test_short_passes_with_a_sample_take_the_short_pass_settings() -> None:
    config = SelectionConfig(
        probe_epochs=3, patience=2, short_probe_epochs=5, short_patience=4, short_forget_probe=9
    )
    short = config.per_pass(config.short_pass_steps, with_sample=True)
    assert (short.probe_epochs, short.patience, short.max_forget_probe) == (5, 4, 9)
    assert short.sample_every_epoch
    long = config.per_pass(config.short_pass_steps + 1, with_sample=True)
    assert long == config and not long.sample_every_epoch


def test_short_passes_with_forget_data_only_multiply_every_epoch_count() -> None:
    config = SelectionConfig(
        probe_epochs=3, patience=2, min_epochs=4, max_epochs=10, short_pass_factor=5
    )
    short = config.per_pass(1, with_sample=False)
    counts = (short.probe_epochs, short.patience, short.min_epochs, short.max_epochs)
    assert counts == (15, 10, 20, 50)
    assert not short.sample_every_epoch  # there is no sample to read
    assert config.per_pass(config.short_pass_steps + 1, with_sample=False) == config


def test_read_every_epoch_the_sample_holds_the_stop_open_while_it_improves() -> None:
    stop = Stopper(
        SelectionConfig(patience=2, min_epochs=1, max_epochs=20, sample_every_epoch=True)
    )
    flat_retention = 0.1
    accs = [90.0, 92.0, 94.0, 96.0, 96.0, 96.0]
    decisions = [stop.update(_sig(e + 1, 0.0, flat_retention, a)) for e, a in enumerate(accs)]
    # Epochs 2-4 gain on the sample: the run stops two epochs after the last gain.
    assert decisions == [False] * 5 + [True]
    assert "retention term and selection accuracy stopped improving" in stop.reason


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


def _select_tiny(config: SelectionConfig, *, with_sample: bool = True) -> SelectionReport:
    """The selection's report on the tiny problem (one step a pass), forgetting class 1."""
    model, forget_loader, retain_loader = _trained_tiny()
    res = run_unlearning(
        model,
        forget_loader,  # type: ignore[arg-type]
        [1],
        device="cpu",
        progress=False,
        selection=config,
        selection_loader=retain_loader if with_sample else None,  # type: ignore[arg-type]
    )
    assert res.selection is not None
    return res.selection


def _fit(model: nn.Module, inputs: Tensor, labels: Tensor, steps: int) -> nn.Module:
    """``model`` trained full-batch with Adam for ``steps`` steps, in eval mode."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(inputs), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _trained_tiny() -> tuple[nn.Module, object, object]:
    model, forget_loader, retain_loader = tiny_problem(forget=1)
    images, labels = tiny_data(n=64)
    return _fit(model, images, labels, 150), forget_loader, retain_loader


def test_selection_stops_early_on_an_easy_case_and_says_why() -> None:
    model, forget_loader, _ = _trained_tiny()
    ctx = _tiny_ctx(model, forget_loader)
    probe = ProbeSet.gather(ctx.original, forget_loader, ctx.device)  # type: ignore[arg-type]
    # The soft check reads the tiny network's states far short: tested in test_head_only.py.
    config = SelectionConfig(max_epochs=40, patience=2, soft_check_drop=None)
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


def _tiny_with_sample() -> tuple[UnlearnContext, ProbeSet]:
    """The trained tiny problem's context and probe, its retained images as the sample."""
    model, forget_loader, retain_loader = _trained_tiny()
    ctx = _tiny_ctx(model, forget_loader)
    probe = ProbeSet.gather(
        ctx.original,
        forget_loader,
        ctx.device,
        selection_loader=retain_loader,  # type: ignore[arg-type]
    )
    return ctx, probe


def test_selection_sample_vetoes_a_candidate_that_collapses_retained_accuracy() -> None:
    ctx, probe = _tiny_with_sample()
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


class _Versioned(nn.Module):
    """Refuses a state without its format version, as torchvision's MNASNet does."""

    _version = 2

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x)  # type: ignore[no-any-return]

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, *args, **kwargs
    ) -> None:
        if local_metadata.get("version") is None:
            raise ValueError("version should be set to 1 or 2 instead of None")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_kept_states_load_into_a_model_that_needs_its_format_versions() -> None:
    # The selection copies states and loads them back (the epoch kept, the BatchNorm
    # fallback's reading); a copy that drops ``state_dict()._metadata`` broke MNASNet.
    model, forget_loader, retain_loader = _trained_tiny()
    versioned = _Versioned(model)
    for extra in ({}, {"selection_loader": retain_loader}):
        res = run_unlearning(versioned, forget_loader, [1], device="cpu", progress=False, **extra)
        assert res.selection is not None and res.selection.epochs >= 1


def test_a_pinned_bn_policy_or_lr_narrows_the_candidates() -> None:
    model, forget_loader, _ = _trained_tiny()
    res = run_unlearning(
        model, forget_loader, [1], device="cpu", progress=False, selection=True, lr=0.003
    )
    assert res.selection is not None
    assert {t.candidate.lr for t in res.selection.trials} == {0.003}


def test_an_empty_selection_sample_is_named_in_one_line() -> None:
    model, forget_loader, retain_loader = _trained_tiny()
    empty = loader_of(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(
        DatasetError, match=r"selection sample \(selection_loader\) is empty"
    ) as info:
        run_unlearning(
            model, forget_loader, [1], device="cpu", progress=False, selection_loader=empty
        )
    assert "\n" not in str(info.value)


def test_bad_selection_config_is_one_line() -> None:
    with pytest.raises(delete.InvalidHparamError, match="probe_epochs"):
        SelectionConfig(probe_epochs=5, max_epochs=2)
    with pytest.raises(delete.InvalidHparamError, match="selection_patience"):
        SelectionConfig(selection_patience=0)
    with pytest.raises(delete.InvalidHparamError, match="short_pass_factor"):
        SelectionConfig(short_pass_factor=0)


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
    # 16 images, four of each label; the four labelled 1, the forget class, are left out.
    assert res.selection is not None and res.selection.selection_size == 12
    assert seen_in_training and not any(seen_in_training)


@pytest.mark.parametrize("kill_after", [0, 1])
def test_a_killed_selection_resumes_after_its_probes_with_the_same_result(
    tmp_path, kill_after: int
) -> None:  # type: ignore[no-untyped-def]
    model, forget_loader, _ = _trained_tiny()
    kwargs = dict(device="cpu", progress=False, cache_teacher=True)
    config = SelectionConfig(max_epochs=12, patience=2, short_pass_steps=0, soft_check_drop=None)
    whole = run_unlearning(model, forget_loader, [1], selection=config, **kwargs)  # type: ignore[arg-type]
    assert whole.selection is not None and whole.selection.epochs > config.probe_epochs + 1

    ckpt = tmp_path / "ckpt"
    import delete.selection.auto as auto

    calls = {"n": 0}
    # Epochs the uninterrupted run spent probing frozen statistics (the later candidates may
    # be skipped); the train-mode fallback runs after the frozen run.
    probed = sum(len(t.signals) for t in whole.selection.trials if t.candidate.freeze_bn)
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


def test_a_selection_sample_that_reads_short_keeps_the_run_going() -> None:
    model, forget_loader, retain_loader = _trained_tiny()

    def run(tolerance: float) -> SelectionReport:
        res = run_unlearning(
            model,
            forget_loader,
            [1],
            device="cpu",
            progress=False,
            selection=SelectionConfig(
                max_epochs=30,
                patience=2,
                selection_tolerance=tolerance,
                selection_class_tolerance=100.0,
                short_pass_steps=0,
            ),
            selection_loader=retain_loader,
        )
        assert res.selection is not None
        return res.selection

    content, short = run(100.0), run(-1.0)  # -1: no state can ever be within it
    assert "training went on" not in content.stop_reason
    assert "training went on" in short.stop_reason, short.stop_reason
    assert short.epochs > content.epochs
    # Every epoch past the forget-only stop was read, and the best read one is kept.
    extra = [s for s in short.history if s.epoch > content.epochs]
    assert extra and all(s.selection_acc is not None for s in extra)
    read = [  # the states that were kept along the way (probe epochs only veto)
        s
        for s in short.history
        if s.selection_acc is not None and s.forget_acc <= 1.0 and s.epoch > 3
    ]
    assert short.final.selection_acc == max(s.selection_acc for s in read)  # type: ignore[type-var]


def test_a_forget_set_of_few_steps_a_pass_is_probed_with_the_short_pass_settings() -> None:
    _, forget_loader, _ = _trained_tiny()
    assert len(forget_loader) == 1  # type: ignore[arg-type]  # the setup: one step a pass

    def probes(short_pass_steps: int, with_sample: bool) -> set[int]:
        config = SelectionConfig(
            probe_epochs=3,
            short_probe_epochs=2,
            short_pass_factor=2,
            short_pass_steps=short_pass_steps,
            bn_fallback_rotated=False,  # its probes may stop early: only the counts here
        )
        report = _select_tiny(config, with_sample=with_sample)
        # The forget-only rule that a short request with a sample runs too has its own test.
        return {len(t.signals) for t in report.trials if t.signals and not t.rule}

    assert probes(1, with_sample=True) == {2}  # short, with a sample: the short probe
    assert probes(1, with_sample=False) == {6}  # short, forget data only: 2 x the probe
    assert probes(0, with_sample=True) == {3}  # nothing is short: the probe as written


def _two_rules(collapsing: set[Candidate], *, tolerance: float) -> SelectionReport:
    """The tiny problem with its sample, as a short request runs it: the forget-only rule tries
    ``lr 0.05`` first, the sample rule ``lr 0.1`` if the sample reads the first's state more
    than ``tolerance`` points short (on average or on a class); the candidates in
    ``collapsing`` map every image to one class."""
    ctx, probe = _tiny_with_sample()

    def factory(c: Candidate, n: int) -> UnlearningMethod:
        if c in collapsing:
            return _Collapse(create_method("delete", epochs=n).config)
        return create_method("delete", lr=c.lr, freeze_bn=c.freeze_bn, epochs=n, grad_clip=1.0)

    config = SelectionConfig(
        candidates=(SAMPLE_RULE,),
        max_epochs=30,
        sample_every_epoch=True,
        bn_fallback_drop=None,
        selection_tolerance=tolerance,
        selection_class_tolerance=tolerance,
        # The head-only fallback (test_head_only.py) would retrain what the two rules chose:
        # on this tiny problem the sample reads both of them far short.
        head_only_drop=None,
        head_only_sample_drop=None,
        head_only_class_drop=None,
    )
    rule = dataclasses.replace(config, candidates=(FORGET_RULE,), sample_every_epoch=False)
    _, report = select_and_train(factory, ctx, probe, config, forget_only=rule)
    return report


SAMPLE_RULE, FORGET_RULE = Candidate(0.1, False), Candidate(0.05, False)
EVERYTHING_READS_SHORT, NOTHING_READS_SHORT = -1000.0, 1000.0


def _statuses(report: SelectionReport) -> dict[tuple[Candidate, str], str]:
    return {(t.candidate, t.rule): t.status for t in report.trials}


def test_a_short_request_keeps_the_forget_only_rules_state_where_the_sample_reads_it_well() -> None:
    # The sample rule would collapse: it must never run.
    report = _two_rules({SAMPLE_RULE}, tolerance=NOTHING_READS_SHORT)
    assert report.mode == "selection-sample"
    assert report.chosen == FORGET_RULE, report.summary()
    assert _statuses(report) == {(FORGET_RULE, "forget-only"): "chosen"}
    assert report.stop_reason.endswith("so it was kept"), report.stop_reason
    assert report.final.selection_acc is not None  # the report shows what the sample read
    assert "lr=0.05 bn=train (forget-only rule) (chosen)" in report.summary()


def test_where_the_forget_only_rule_reads_short_the_sample_rule_runs_and_wins_if_better() -> None:
    report = _two_rules({FORGET_RULE}, tolerance=1.0)
    assert report.chosen == SAMPLE_RULE, report.summary()
    assert _statuses(report) == {
        (FORGET_RULE, "forget-only"): "beaten",
        (SAMPLE_RULE, ""): "chosen",
    }
    assert report.stop_reason.endswith(": kept"), report.stop_reason


def test_a_sample_rule_that_reads_worse_is_not_kept() -> None:
    report = _two_rules({SAMPLE_RULE}, tolerance=EVERYTHING_READS_SHORT)
    assert report.chosen == FORGET_RULE, report.summary()
    assert _statuses(report) == {
        (FORGET_RULE, "forget-only"): "chosen",
        (SAMPLE_RULE, ""): "beaten",
    }
    assert report.stop_reason.endswith("it read no better, not kept"), report.stop_reason


def test_where_the_sample_cannot_tell_the_two_rules_apart_the_forget_only_rules_state_is_kept() -> (
    None
):
    # Both collapse the same way (every image to one class): the sample reads them alike.
    report = _two_rules({SAMPLE_RULE, FORGET_RULE}, tolerance=1.0)
    assert report.chosen == FORGET_RULE, report.summary()
    assert _statuses(report)[(SAMPLE_RULE, "")] == "beaten"
    assert report.stop_reason.endswith("it read no better, not kept"), report.stop_reason


def test_a_sample_rule_state_one_image_better_does_not_replace_the_forget_only_rules() -> None:
    from delete.selection.auto import _stays

    labels = torch.arange(4).repeat(5)  # 20 images, 5 a class: one image is 5 points
    probe = ProbeSet(*[torch.zeros(1)] * 3, torch.zeros(20), labels, 100.0)

    def sig(acc: float, forget_acc: float = 0.0) -> EpochSignals:
        return EpochSignals(9, forget_acc, 0.0, 0.1, 1.0, selection_acc=acc)

    config = SelectionConfig()
    assert _stays(sig(95.0), sig(100.0), probe, config) == "within one image of it"
    assert _stays(sig(90.0), sig(100.0), probe, config) == ""  # two images: the sample sees it
    assert _stays(sig(95.0, forget_acc=20.0), sig(100.0), probe, config) == ""  # not forgotten
    assert _stays(sig(100.0), sig(95.0), probe, config) == "it read no better"


def test_a_short_request_with_a_sample_runs_the_forget_only_rule_and_a_long_one_only_its_own() -> (
    None
):
    def rules(short_pass_steps: int, short_forget_only: bool = True) -> set[str]:
        config = SelectionConfig(
            short_pass_steps=short_pass_steps,
            short_forget_only=short_forget_only,
            selection_tolerance=EVERYTHING_READS_SHORT,  # the sample rule runs too
        )
        return {t.rule for t in _select_tiny(config).trials}

    assert rules(1) == {"forget-only", ""}  # the tiny forget set is one step a pass
    assert rules(0) == {""}  # nothing is short
    assert rules(1, short_forget_only=False) == {""}
    forget_only = SelectionConfig(soft_check_drop=None)  # tested in test_head_only.py
    assert {t.rule for t in _select_tiny(forget_only, with_sample=False).trials} == {""}


@pytest.mark.parametrize(
    ("readings", "kept"),
    [((97.0, 97.0, 97.0, 97.0), 14), ((97.0, 96.0, 95.0, 95.0), 12), ((95.0,) * 4, 10)],
    ids=["ties", "one-image-then-two", "two-images-worse"],
)
def test_the_extension_keeps_the_lowest_loss_among_states_the_sample_cannot_tell_apart(
    monkeypatch: pytest.MonkeyPatch, readings: tuple[float, ...], kept: int
) -> None:
    # A 100-image sample (one image = 1 point) read 97 % at the kept epoch 10, 3 points short,
    # so the run trains on, reading it every epoch; each epoch's DELETE loss is lower than the
    # last. A state within one image of the best reading is a tie and the lower loss wins
    # (epoch 12 reads 96 against 97, epoch 14 95); two images below it never does.
    import types

    import delete.selection.auto as auto

    labels = torch.arange(100) % 10
    x = torch.zeros(100, 2)
    probe = ProbeSet(x[:1], labels[:1], x[:1], x, labels, original_selection_acc=100.0)
    live: Any = types.SimpleNamespace(
        run=types.SimpleNamespace(epoch=10), ctx=types.SimpleNamespace(student=nn.Linear(2, 2))
    )

    def scripted(live: Any, probe: ProbeSet, **_: bool) -> EpochSignals:
        live.run.epoch += 1
        e = live.run.epoch
        return EpochSignals(e, 0.0, 0.0, 0.1 / e, 1.0, selection_acc=readings[e - 11])

    monkeypatch.setattr(auto, "_epoch", scripted)
    start = EpochSignals(10, 0.0, 0.0, 0.1, 1.0, selection_acc=97.0)
    config = SelectionConfig(max_epochs=14, selection_class_tolerance=100.0)
    best, _, note = auto._extend_by_selection(
        live, probe, config, (start, {}), auto._Saver(None, [])
    )
    assert best.epoch == kept, note
    assert live.run.epoch == 14  # four epochs without a better reading


def test_one_class_short_on_the_sample_keeps_the_run_going_too() -> None:
    from delete.selection.auto import _short

    probe = ProbeSet(torch.zeros(1), torch.zeros(1), torch.zeros(1), original_selection_acc=99.5)
    config = SelectionConfig()  # within 1 point on average, each class within 3

    def reading(acc: float, worst: float) -> EpochSignals:
        return EpochSignals(9, 0.0, 0.0, 0.1, 1.0, selection_acc=acc, selection_worst_drop=worst)

    assert _short(reading(99.0, 2.0), probe, config) == ""
    assert "one class 6.0 points" in _short(reading(99.0, 6.0), probe, config)
    assert "2.0 points below the original" in _short(reading(97.5, 0.0), probe, config)
    unread = EpochSignals(9, 0.0, 0.0, 0.1, 1.0)
    assert _short(unread, probe, config) == ""


def test_the_worst_class_is_read_against_the_originals_own() -> None:
    from delete.selection.signals import selection_reading

    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    # Two images of each class; the original got class 0 right twice and class 1 once.
    inputs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    probe = ProbeSet(inputs, labels, inputs, inputs, labels, 75.0, torch.tensor([100.0, 50.0]))
    assert selection_reading(model, probe, torch.device("cpu")) == (75.0, 0.0)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # every answer swaps
    assert selection_reading(model, probe, torch.device("cpu")) == (25.0, 100.0)


class _Diverge(UnlearningMethod):
    """A loss that is NaN from the first step."""

    name = "diverge-test"

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        return ctx.student(batch.inputs).sum() * float("nan")


def _fallback_run(
    first: Candidate,
    second: Candidate,
    collapsing: set[Candidate],
    *,
    with_sample: bool = True,
    diverging: frozenset[Candidate] = frozenset(),
) -> SelectionReport:
    """The selection on the tiny problem (with a sample, or forget data only), ``first`` as
    the grid and ``second`` as the BatchNorm fallback; the candidates in ``collapsing`` map
    every image to one class."""
    ctx, probe = _tiny_with_sample()
    if not with_sample:
        probe = ProbeSet.gather(ctx.original, ctx.forget_loader, ctx.device)

    def factory(c: Candidate, n: int) -> UnlearningMethod:
        if c in collapsing:
            return _Collapse(create_method("delete", epochs=n).config)
        if c in diverging:
            return _Diverge(create_method("delete", epochs=n).config)
        return create_method("delete", lr=c.lr, freeze_bn=c.freeze_bn, epochs=n, grad_clip=1.0)

    # 24 sample images (one reads 4 points): a healthy run is within 20, a collapse is not.
    # The forget-only guard on inverted images is tested on its own
    # (test_synthetic_guard.py); here it would rerun what the fallback decided.
    config = SelectionConfig(
        candidates=(first,),
        max_epochs=30,
        sample_every_epoch=with_sample,
        bn_fallback_drop=20.0,
        synthetic_rerun_drop=None,
        # Both head-only bounds are tested on their own (test_head_only.py), as the guard is.
        head_only_drop=None,
        head_only_sample_drop=None,
        head_only_class_drop=None,
    )
    _, report = select_and_train(factory, ctx, probe, config, fallback=(second,))
    return report


def test_frozen_statistics_that_read_short_fall_back_to_batchnorm_in_train_mode() -> None:
    frozen, train = Candidate(0.1, True), Candidate(0.1, False)
    report = _fallback_run(frozen, train, collapsing={frozen})
    status = {t.candidate: t.status for t in report.trials}
    assert report.chosen == train, report.summary()
    assert status == {frozen: "beaten", train: "chosen"}
    assert "BatchNorm in train mode was tried too" in report.stop_reason
    assert report.stop_reason.endswith("and kept"), report.stop_reason


def test_the_fallback_is_kept_only_when_it_reads_better() -> None:
    frozen, train = Candidate(0.1, True), Candidate(0.1, False)
    report = _fallback_run(frozen, train, collapsing={frozen, train})  # both equally bad
    assert report.chosen == frozen
    assert {t.candidate: t.status for t in report.trials} == {frozen: "chosen", train: "beaten"}
    assert report.stop_reason.endswith("and not kept"), report.stop_reason


def test_a_kept_state_that_reads_well_never_pays_for_the_fallback() -> None:
    # On the tiny problem, train-mode statistics at lr 0.1 read 0 points below the original
    # (frozen ones read 33 below), so the roles are swapped here to give a first that reads well.
    healthy, other = Candidate(0.1, False), Candidate(0.1, True)
    report = _fallback_run(healthy, other, collapsing=set())
    assert report.chosen == healthy
    assert [t.candidate for t in report.trials] == [healthy]
    assert "was tried too" not in report.stop_reason


def test_the_fallback_runs_only_on_batchnorm_models_with_a_sample_and_a_free_bn_policy() -> None:
    config = SelectionConfig(bn_fallback_drop=-100.0)  # every reading counts as short

    def policies(**hparams: object) -> set[bool]:
        model, forget_loader, retain_loader = _trained_tiny()  # TinyNet has BatchNorm
        sample = hparams.pop("sample", True)
        res = run_unlearning(
            model,
            forget_loader,
            [1],
            device="cpu",
            progress=False,
            selection=config,
            selection_loader=retain_loader if sample else None,
            **hparams,  # type: ignore[arg-type]
        )
        assert res.selection is not None
        return {t.candidate.freeze_bn for t in res.selection.trials}

    assert policies() == {True, False}
    assert policies(sample=False) == {True, False}  # probed, judged on rotated images
    assert policies(freeze_bn=True) == {True}
    config = SelectionConfig(bn_fallback_drop=-100.0, bn_fallback_rotated=False)
    assert policies(sample=False) == {True}
    assert policies() == {True, False}  # the sample's fallback is its own setting


def test_forget_only_the_batchnorm_policy_that_wrecks_rotated_images_loses() -> None:
    frozen, train = Candidate(0.1, True), Candidate(0.1, False)
    report = _fallback_run(frozen, train, collapsing={frozen}, with_sample=False)
    assert report.mode == "forget-only"
    assert report.chosen == train, report.summary()
    assert {t.candidate: t.status for t in report.trials} == {frozen: "beaten", train: "chosen"}
    assert "judged by the retention term on rotated forget images" in report.stop_reason
    assert report.stop_reason.endswith(": kept)"), report.stop_reason
    assert report.final.rotated_retention is not None


def test_forget_only_a_policy_that_reads_worse_in_its_probe_is_abandoned() -> None:
    # Train-mode statistics keep the tiny problem healthy (see above); the collapsing policy
    # is probed second and must stop within its probe, which is all it costs.
    healthy, collapsing = Candidate(0.1, False), Candidate(0.1, True)
    report = _fallback_run(healthy, collapsing, collapsing={collapsing}, with_sample=False)
    trials = {t.candidate: t for t in report.trials}
    assert report.chosen == healthy, report.summary()
    assert trials[collapsing].status == "abandoned"
    assert 1 <= len(trials[collapsing].signals) <= SelectionConfig().probe_epochs
    assert "of its probe and was abandoned" in report.stop_reason, report.stop_reason


def test_forget_only_without_square_images_no_second_policy_is_probed() -> None:
    torch.manual_seed(0)
    images, labels = tiny_data(n=64)
    flat = images.flatten(1)  # vectors: a rotation means nothing, so nothing is compared
    model = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    model = _fit(model, flat, labels, 100)
    mask = labels == 1
    res = run_unlearning(
        model, loader_of(flat[mask], labels[mask]), [1], device="cpu", progress=False
    )
    assert res.selection is not None
    assert {t.candidate.freeze_bn for t in res.selection.trials} == {True}
    assert res.selection.final.rotated_retention is None


def _second_policy_run(
    monkeypatch: pytest.MonkeyPatch,
    retention: Callable[[int], float],
    rotated: Callable[[int], float],
) -> tuple[Any, SelectionConfig]:
    """One train-mode candidate run as a second BatchNorm policy against a bound of 0.1 on
    rotated forget images, its epochs scripted: forgetting through its 3-epoch probe (40 %),
    forgotten after, with ``retention(epoch)`` and ``rotated(epoch)`` as its two terms."""
    import delete.selection.auto as auto

    ctx, _ = _tiny_with_sample()
    probe = ProbeSet.gather(ctx.original, ctx.forget_loader, ctx.device)  # type: ignore[arg-type]

    def scripted(live: Any, probe: ProbeSet, **_: bool) -> EpochSignals:
        e = len(live.signals) + 1
        sig = EpochSignals(
            e,
            forget_acc=40.0 if e <= 3 else 0.0,
            forgetting=1.0 if e <= 3 else 0.0,
            retention=retention(e),
            agreement=1.0,
            rotated_retention=rotated(e),
        )
        live.signals.append(sig)
        return sig

    monkeypatch.setattr(auto, "_epoch", scripted)
    config = SelectionConfig(candidates=(Candidate(0.1, False),))  # min_epochs 10, patience 2
    outcome = auto._run(
        lambda c, n: create_method("delete", lr=c.lr, epochs=n),
        ctx,
        probe,
        config,
        False,
        None,
        abandon_above=0.1,
    )
    return outcome, config


def test_forget_only_a_second_policy_that_reads_worse_once_forgotten_is_abandoned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Below the bound through its probe; then its retention term improves 20 % an epoch (the
    # stopping rule never fires) but it reads 0.5 on rotated images from epoch 4 on.
    outcome, _ = _second_policy_run(
        monkeypatch, lambda e: 0.8**e, lambda e: 0.01 if e <= 3 else 0.5
    )
    assert outcome.abandoned, outcome.reason
    assert outcome.chosen.signals[-1].epoch == 11  # epochs 10 and 11 read above the bound
    assert "read above it for 2 epochs in a row after epoch 10" in outcome.reason
    assert [t.status for t in outcome.trials] == ["abandoned"]


@pytest.mark.parametrize(
    ("probe_reading", "abandoned"), [(0.12, False), (0.13, True)], ids=["near-tie", "above"]
)
def test_a_second_policy_is_abandoned_only_above_the_bound_by_more_than_its_margin(
    monkeypatch: pytest.MonkeyPatch, probe_reading: float, abandoned: bool
) -> None:
    # The probe reads ``probe_reading`` on rotated images against a bound of 0.1: 20 % or
    # 30 % above it (rotated_margin is 25 %). Then forgotten, flat, well below the bound.
    outcome, config = _second_policy_run(
        monkeypatch, lambda e: 0.2, lambda e: probe_reading if e <= 3 else 0.05
    )
    assert outcome.abandoned is abandoned, outcome.reason
    # Abandoned at the probe's first epoch, or trained until the stopping rule may fire (its
    # retention term is flat, so at min_epochs).
    assert outcome.chosen.signals[-1].epoch == (1 if abandoned else config.min_epochs)


def _rotated_keep_run(
    monkeypatch: pytest.MonkeyPatch, config: SelectionConfig, *, with_sample: bool
) -> Any:
    """One frozen candidate's run, its epochs scripted: forgotten from epoch 4, its retention
    term on the forget images falling 20 % an epoch to the end (12 epochs), its retention term
    on rotated forget images 0.05 to epoch 6 and 0.5 from epoch 7 on; the sample, where it is
    read, reads 90 % every time. Each reading is given only where the selection asks for it."""
    import delete.selection.auto as auto

    ctx, sampled = _tiny_with_sample()
    probe = dataclasses.replace(
        sampled,
        rotated_inputs=torch.zeros(1, 1, 8, 8),  # never read: the epochs are scripted
        rotated_teacher=torch.zeros(1, 4),
    )
    if not with_sample:
        probe = dataclasses.replace(probe, selection_inputs=None, selection_labels=None)

    def scripted(
        live: Any, probe: ProbeSet, with_selection: bool = False, with_rotated: bool = False
    ) -> EpochSignals:
        e = len(live.signals) + 1
        sig = EpochSignals(
            e,
            forget_acc=40.0 if e <= 3 else 0.0,
            forgetting=1.0 if e <= 3 else 0.0,
            retention=0.8**e,
            agreement=1.0,
            selection_acc=90.0 if with_selection and probe.selection_inputs is not None else None,
            rotated_retention=(0.05 if e <= 6 else 0.5) if with_rotated else None,
        )
        live.signals.append(sig)
        return sig

    monkeypatch.setattr(auto, "_epoch", scripted)
    return auto._run(
        lambda c, n: create_method("delete", lr=c.lr, epochs=n),
        ctx,
        probe,
        dataclasses.replace(config, candidates=(Candidate(0.1, True),), max_epochs=12),
        False,
        None,
    )


@pytest.mark.parametrize(
    ("keep_by_rotated", "kept"), [(True, 6), (False, 12)], ids=["rule-on", "rule-off"]
)
def test_forget_only_the_epoch_kept_is_the_one_rotated_images_read_best_with_delete_loss(
    monkeypatch: pytest.MonkeyPatch, keep_by_rotated: bool, kept: int
) -> None:
    # The forget images' retention term alone keeps improving to epoch 12 (overfitting the
    # images trained on); the rotated images read ten times worse from epoch 7, so with the
    # rule the last epoch before that is kept.
    outcome = _rotated_keep_run(
        monkeypatch, SelectionConfig(keep_by_rotated=keep_by_rotated), with_sample=False
    )
    assert outcome.best.epoch == kept, [s.to_dict() for s in outcome.chosen.signals]
    read = {s.rotated_retention is not None for s in outcome.chosen.signals}
    assert read == {keep_by_rotated}
    # The record says why: the kept epoch against the one DELETE's loss alone ranks first.
    moved = "; kept epoch 6: DELETE loss 0.262 plus 0.050 on rotated forget images (epoch 12"
    assert (moved in outcome.reason) is keep_by_rotated, outcome.reason


@pytest.mark.parametrize("keep_by_rotated", [True, False], ids=["rule-on", "rule-off"])
def test_with_a_sample_the_rotated_pick_is_among_the_states_the_sample_compares(
    monkeypatch: pytest.MonkeyPatch, keep_by_rotated: bool
) -> None:
    # Read only on the last states (long passes), the sample compares epochs 10-12 with the
    # forget-only pick: epoch 6 with the rule, epoch 12 without it.
    outcome = _rotated_keep_run(
        monkeypatch, SelectionConfig(keep_by_rotated=keep_by_rotated), with_sample=True
    )
    by_epoch = {s.epoch: s for s in outcome.chosen.signals}
    assert (by_epoch[6].selection_acc is not None) is keep_by_rotated
    assert all(by_epoch[e].selection_acc is not None for e in (10, 11, 12))


def test_where_the_sample_is_read_every_epoch_it_ranks_the_epochs_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    outcome = _rotated_keep_run(
        monkeypatch, SelectionConfig(sample_every_epoch=True), with_sample=True
    )
    assert all(s.rotated_retention is None for s in outcome.chosen.signals)


def test_forget_only_every_epoch_of_a_model_without_batchnorm_reads_rotated_images_too() -> None:
    torch.manual_seed(0)
    images, labels = tiny_data(n=64)
    model = _fit(
        nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 4)),
        images,
        labels,
        100,
    )
    mask = labels == 1
    for keep_by_rotated in (True, False):
        res = run_unlearning(
            model,
            loader_of(images[mask], labels[mask]),
            [1],
            device="cpu",
            progress=False,
            selection=SelectionConfig(keep_by_rotated=keep_by_rotated),
        )
        assert res.selection is not None
        read = {s.rotated_retention is not None for s in res.selection.history}
        assert read == {keep_by_rotated}


def test_a_fallback_that_never_forgot_says_so_in_the_stop_reason() -> None:
    # The sample reads only forgotten states, so a train-mode run that never forgot (BatchNorm
    # statistics of one class wreck it) has no reading to report; the reason said "()".
    import delete.selection.auto as auto

    _, probe = _tiny_with_sample()
    original = probe.original_selection_acc or 0.0

    def outcome(sig: EpochSignals) -> Any:
        return auto._Outcome(None, [], sig, {}, "")  # type: ignore[arg-type]

    first = outcome(EpochSignals(12, 0.0, 0.01, 0.05, 1.0, selection_acc=original - 3.0))
    second = outcome(EpochSignals(30, 60.0, 1.5, 0.4, 0.5))
    better, note = auto._by_sample(first, second, probe, SelectionConfig())
    assert not better
    assert "BatchNorm in train mode was tried too (it still recognised 60 % of the forget" in note


@pytest.mark.parametrize("with_sample", [True, False], ids=["selection-sample", "forget-only"])
def test_a_fallback_that_diverges_keeps_the_first_policys_result(with_sample: bool) -> None:
    # With the sample the first policy must read short for the fallback to run: it collapses.
    first, second = Candidate(0.1, not with_sample), Candidate(0.1, with_sample)
    report = _fallback_run(
        first,
        second,
        collapsing={first} if with_sample else set(),
        with_sample=with_sample,
        diverging=frozenset({second}),
    )
    assert report.chosen == first, report.summary()
    assert "BatchNorm in train mode was tried too and diverged" in report.stop_reason
    assert report.stop_reason.endswith(": not kept"), report.stop_reason


class _CountingLoader:
    """A loader that counts the passes made over it."""

    def __init__(self, loader: Any) -> None:
        self.loader, self.passes = loader, 0

    def __iter__(self) -> Any:
        self.passes += 1
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


@pytest.mark.parametrize("fallback", [False, True])
def test_the_teacher_is_run_over_the_forget_images_once_per_request(fallback: bool) -> None:
    model, forget_loader, _ = _trained_tiny()
    counting = _CountingLoader(forget_loader)
    res = run_unlearning(
        model,
        counting,  # type: ignore[arg-type]
        [1],
        device="cpu",
        progress=False,
        cache_teacher=True,
        # A BatchNorm model with square images: with the fallback on, a second run follows.
        selection=SelectionConfig(bn_fallback_rotated=fallback, max_epochs=12),
    )
    assert res.selection is not None
    runs = {t.candidate.freeze_bn for t in res.selection.trials if t.signals}
    assert runs == ({True, False} if fallback else {True})
    # One pass to check the first batch, one to gather the probe, one to cache the teacher's
    # logits, however many runs.
    assert counting.passes == 3


def _rerun(first_reads: float, *, collapse_again: bool, drop: float | None = 3.0) -> Any:
    """A real run on the tiny problem with the sample read on its last states, its kept state
    then *set* to read ``first_reads`` points below the original (the setup decides whether
    it is short), and :func:`_rerun_by_sample` on it; the rerun collapses if asked."""
    from delete.selection.auto import _rerun_by_sample, _run

    ctx, probe = _tiny_with_sample()
    kept = Candidate(0.1, False)
    collapse = [False]  # set for the rerun only

    def factory(c: Candidate, n: int) -> UnlearningMethod:
        if collapse[0]:
            return _Collapse(create_method("delete", epochs=n).config)
        return create_method("delete", lr=c.lr, freeze_bn=c.freeze_bn, epochs=n, grad_clip=1.0)

    config = SelectionConfig(candidates=(kept,), max_epochs=30, sample_rerun_drop=drop)
    first = _run(factory, ctx, probe, config, False, None)
    assert probe.original_selection_acc is not None
    read = probe.original_selection_acc - first_reads
    first = dataclasses.replace(first, best=dataclasses.replace(first.best, selection_acc=read))
    collapse[0] = collapse_again
    return _rerun_by_sample(first, factory, ctx, probe, config, False), first


def test_a_kept_state_far_short_on_the_sample_is_run_again_reading_it_every_epoch() -> None:
    outcome, first = _rerun(50.0, collapse_again=False)
    rules = [t.rule for t in outcome.trials]
    assert rules == ["", "sample-every-epoch"], rules
    assert [t.status for t in outcome.trials] == ["beaten", "chosen"]
    assert outcome.best.selection_acc > first.best.selection_acc
    assert "ran again with the selection sample read after every epoch" in outcome.reason
    assert outcome.reason.endswith(": kept"), outcome.reason


def test_a_rerun_that_reads_worse_is_not_kept() -> None:
    outcome, first = _rerun(20.0, collapse_again=True)  # the rerun maps everything to one class
    assert [t.rule for t in outcome.trials] == ["", "sample-every-epoch"]
    assert outcome.best is first.best
    assert outcome.reason.endswith(": not kept"), outcome.reason


@pytest.mark.parametrize(("reads", "drop"), [(2.9, 3.0), (50.0, None)], ids=["within", "off"])
def test_a_state_within_the_bound_or_with_the_rerun_off_is_not_run_again(
    reads: float, drop: float | None
) -> None:
    outcome, first = _rerun(reads, collapse_again=False, drop=drop)
    assert outcome is first
    assert [t.rule for t in outcome.trials] == [""]
