"""Images inverted from the original, and the forget-only rerun they guard
(``SelectionConfig.synthetic_rerun_drop``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from delete.methods import create_method
from delete.methods.base import UnlearningMethod
from delete.selection import Candidate, SelectionConfig
from delete.selection.signals import ProbeSet
from delete.selection.synthetic import other_classes, synthesize
from tests.unit._tiny import TinyNet
from tests.unit.test_selection import _Collapse, _tiny_ctx, _tiny_with_sample, _trained_tiny

CPU = torch.device("cpu")


def _forget_images() -> torch.Tensor:
    return torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.0


def test_inverted_images_are_of_kept_classes_and_inside_the_forget_images_range() -> None:
    model, _, _ = _trained_tiny()
    like = _forget_images()
    x, y = synthesize(model, like, [0, 2, 3], CPU, count=24)
    assert len(y) >= 12, "most images should reach a kept class"
    assert set(y.tolist()) <= {0, 2, 3}
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), y)  # labelled as the original assigns them
    assert float(x.min()) >= float(like.min()) and float(x.max()) <= float(like.max())


def test_forget_images_are_sent_to_a_seeded_kept_class_other_than_the_one_ranked_first() -> None:
    # A linear net that ranks, among kept classes, the class of each image's brightest pixel
    # first: the setup decides which class is ranked first, not the code under test.
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.eye(4))
    images = torch.eye(4)[[0, 2, 3, 0, 2, 3]].reshape(6, 1, 2, 2)  # brightest: 0, 2, 3, ...
    kept = [0, 2, 3]  # class 1 forgotten
    targets = other_classes(net, images, kept, CPU)
    assert set(targets.tolist()) <= set(kept)
    assert all(t != r for t, r in zip(targets.tolist(), [0, 2, 3, 0, 2, 3], strict=True))
    assert torch.equal(targets, other_classes(net, images, kept, CPU))  # seeded
    # Across seeds the first image (ranked 0 first) goes to both other kept classes.
    assert {int(other_classes(net, images, kept, CPU, seed=s)[0]) for s in range(8)} == {2, 3}
    # One kept class: nothing else to send them to.
    assert other_classes(net, images, [2], CPU).tolist() == [2] * 6


class _Soft(torch.nn.Module):
    """A model whose logits are divided by 1000: no bounded input reaches 0.9 on a class."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) / 1000.0


def test_images_a_model_assigns_without_confidence_are_left_out() -> None:
    model, _, _ = _trained_tiny()
    soft = _Soft(model).eval()
    assert len(synthesize(soft, _forget_images(), [0, 2, 3], CPU, count=12)[1]) == 0
    # The same model unsoftened: its images are kept, so the confidence left them out.
    assert len(synthesize(model, _forget_images(), [0, 2, 3], CPU, count=12)[1]) >= 6


def test_inverting_leaves_the_model_as_it_was_and_is_seeded() -> None:
    torch.manual_seed(0)
    model = TinyNet().eval()
    with torch.no_grad():  # running statistics a forward pass in train mode would move
        model.bn.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
    before = copy.deepcopy(model.state_dict())
    first = synthesize(model, _forget_images(), [0, 2], CPU, count=8, steps=10)
    again = synthesize(model, _forget_images(), [0, 2], CPU, count=8, steps=10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert not model.bn._forward_hooks  # the BatchNorm prior's hooks are removed
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def _guarded(
    *, collapse_first: bool, drop: float | None = 3.0, sample: bool = False, images: int = 48
) -> Any:
    """A forget-only run on the tiny problem (the collapsing method first, if asked), then
    :func:`_rerun_by_synthetic` on it, whose rerun trains DELETE. The setup decides whether
    the kept state is short: a collapse maps every image to one kept class."""
    from delete.selection.auto import _rerun_by_synthetic, _run

    model, forget_loader, _ = _trained_tiny()
    ctx = _tiny_ctx(model, forget_loader)
    if sample:
        ctx, probe = _tiny_with_sample()
    else:
        probe = ProbeSet.gather(ctx.original, forget_loader, ctx.device)  # type: ignore[arg-type]
    collapse = [collapse_first]

    def factory(c: Candidate, n: int) -> UnlearningMethod:
        if collapse[0]:
            return _Collapse(create_method("delete", epochs=n).config)
        return create_method("delete", lr=c.lr, freeze_bn=c.freeze_bn, epochs=n, grad_clip=1.0)

    config = SelectionConfig(
        candidates=(Candidate(0.1, True),),
        max_epochs=20,
        synthetic_rerun_drop=drop,
        synthetic_images=images,
        soft_check_drop=None,  # what the guard's images lead to next: test_head_only.py
        one_class_rise=None,  # and test_one_class_rise.py
    )
    first = _run(factory, ctx, probe, config, False, None)
    history = list(first.chosen.signals)
    collapse[0] = False
    return _rerun_by_synthetic(first, factory, ctx, probe, config, False), first, history


def test_a_collapsed_forget_only_state_is_run_again_reading_inverted_images() -> None:
    outcome, first, _ = _guarded(collapse_first=True)
    assert [t.rule for t in outcome.trials] == ["", "synthetic-every-epoch"]
    assert [t.status for t in outcome.trials] == ["beaten", "chosen"]
    assert first.best.selection_acc is None  # forget-only: nothing read it before
    assert outcome.best.selection_acc is not None and outcome.best.selection_acc > 80
    assert "images inverted from the original read the state kept" in outcome.reason
    assert outcome.reason.endswith(": kept"), outcome.reason


@pytest.mark.parametrize(
    ("collapse_first", "drop", "sample"),
    [(True, 100.0, False), (True, None, False), (True, 3.0, True)],
    ids=["within-the-bound", "off", "with-a-sample"],
)
def test_a_state_within_the_bound_the_guard_off_or_a_real_sample_is_not_run_again(
    collapse_first: bool, drop: float | None, sample: bool
) -> None:
    outcome, first, history = _guarded(collapse_first=collapse_first, drop=drop, sample=sample)
    assert outcome is first
    note = outcome.chosen.ctx.notes.get("synthetic_check", "")
    # What the guard read is recorded where it read something (the run record's runtime).
    assert ("points below the original (limit 100)" in note) == (drop == 100.0), note
    assert [t.rule for t in outcome.trials] == [""]
    assert outcome.chosen.signals == history  # the reading is not left in the history


def test_too_few_confident_images_do_not_run_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import delete.selection.auto as auto

    real = auto.synthesize

    def three(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = real(*args, **kwargs)
        return x[:3], y[:3]  # as a soft model's few confident images

    monkeypatch.setattr(auto, "synthesize", three)
    outcome, first, _ = _guarded(collapse_first=True)  # 48 asked for: 3 cannot read 3 points
    assert outcome is first


def test_a_model_of_token_ids_cannot_be_inverted_and_keeps_its_run() -> None:
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from delete.api import run_unlearning

    torch.manual_seed(0)
    ids = torch.randint(0, 20, (96, 6))
    labels = ids[:, 0] % 4
    model = nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(48, 4))
    optimizer = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(200):
        loss = nn.functional.cross_entropy(model(ids), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    forget = labels == 1
    loader = DataLoader(TensorDataset(ids[forget], labels[forget]), batch_size=8)
    result = run_unlearning(model.eval(), loader, [1], device="cpu", progress=False)
    assert result.selection is not None
    assert "no images could be inverted from the original" in result.selection.stop_reason
