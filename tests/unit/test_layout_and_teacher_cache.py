"""The two speed-ups of the defaults: a channels-last student where the logits stay the same,
and the teacher's logits computed once where the forget loader does not augment."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import delete
from delete.data.replay import replay_in_memory
from delete.models.memory_format import is_channels_last, to_channels_last_if_same
from tests.unit._tiny import tiny_data

EPOCHS = 3
FIXED: dict[str, Any] = {"device": "cpu", "epochs": EPOCHS, "lr": 0.01, "progress": False}
FORGET = 1


class _TwoConv(nn.Module):
    """Two 3x3 convolutions (the second has 8 input channels, so its layout can change) and
    a head over the flattened map; ``view`` makes the head LeNet-style (it fails on a
    channels-last map), ``raw`` reads the map's storage in memory order (its logits change).
    Eval-mode forwards of every instance (the run's deep copies too) are counted in
    ``eval_calls``."""

    eval_calls: ClassVar[list[int]] = [0]

    def __init__(self, head: str = "flatten") -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 4)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            self.eval_calls[0] += 1
        y = self.conv2(torch.relu(self.conv1(x)))
        n = y.size(0)
        if self.head == "view":
            flat = y.view(n, -1)
        elif self.head == "raw":
            flat = y.as_strided((n, y[0].numel()), (y[0].numel(), 1))
        else:
            flat = y.flatten(1)
        return self.fc(flat)


def _forget_loader(batch_size: int = 4) -> DataLoader:
    images, labels = tiny_data()
    keep = labels == FORGET
    return DataLoader(TensorDataset(images[keep], labels[keep]), batch_size=batch_size)


class _Augmented(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """The forget images with fresh noise on every read, as a random transform gives."""

    def __init__(self) -> None:
        images, labels = tiny_data()
        self.images, self.labels = images[labels == FORGET], labels[labels == FORGET]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i] + 0.01 * torch.rand_like(self.images[i]), self.labels[i]


def _model(head: str = "flatten") -> _TwoConv:
    torch.manual_seed(0)
    _TwoConv.eval_calls[0] = 0
    return _TwoConv(head).eval()


# -- channels-last -------------------------------------------------------------------------


def test_a_conv_net_trains_channels_last_and_comes_back_in_the_callers_layout() -> None:
    model = _model()
    seen: list[bool] = []

    def record(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if module.training:  # the student's training steps (deep copies keep the hook)
            seen.append(output.is_contiguous(memory_format=torch.channels_last))

    hook = model.conv2.register_forward_hook(record)
    result = delete.unlearn(model, _forget_loader(), [FORGET], **FIXED)
    hook.remove()
    # The student's training steps ran channels-last.
    assert seen and all(seen)
    # The caller's model is untouched; the result is back in the usual layout.
    assert not is_channels_last(model)
    assert all(p.is_contiguous() for p in result.parameters())


@pytest.mark.parametrize("head", ["view", "raw"])
def test_a_model_whose_logits_need_the_usual_layout_keeps_it(head: str) -> None:
    x = tiny_data()[0][:8]
    model = _model(head)
    before = model(x)
    assert to_channels_last_if_same(model, x) is False
    assert not is_channels_last(model)
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("head", ["view", "raw"])
def test_a_layout_sensitive_model_unlearns_exactly_as_in_the_usual_layout(
    head: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = delete.unlearn(_model(head), _forget_loader(), [FORGET], **FIXED)
    monkeypatch.setattr(delete.api, "to_channels_last_if_same", lambda model, inputs: False)
    ref = delete.unlearn(_model(head), _forget_loader(), [FORGET], **FIXED)
    for key, value in ref.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key


def test_a_lenet_style_view_head_unlearns_with_the_defaults() -> None:
    model = _model("view")
    result = delete.unlearn(model, _forget_loader(), [FORGET], device="cpu", progress=False)
    assert result(tiny_data()[0][:4]).shape == (4, 4)


def test_a_flatten_head_gives_the_same_logits_in_both_layouts() -> None:
    x = tiny_data()[0][:8]
    model = _model()
    before = model(x)
    assert to_channels_last_if_same(model, x) is True
    assert torch.allclose(model(x), before, atol=1e-5)


# -- the teacher's logits, once ------------------------------------------------------------


def test_the_teacher_runs_once_per_image_on_a_loader_that_does_not_augment() -> None:
    model = _model()
    result = delete.run_unlearning(model, _forget_loader(), [FORGET], **FIXED)
    assert result.runtime == {"layout": "channels_last", "teacher_logits": "computed once"}
    # 2 forget batches: 2 teacher forwards for the cache, 3 to count the classes (batches of
    # 2, 1 and the loader's size) and 2 for the layout check; computed every step it would be
    # 2 per epoch, 6 in all, on top of those.
    assert _TwoConv.eval_calls[0] == 7


def test_the_teacher_runs_every_step_on_a_loader_that_augments() -> None:
    model = _model("view")
    loader = DataLoader(_Augmented(), batch_size=4)
    result = delete.run_unlearning(model, loader, [FORGET], **FIXED)
    assert result.runtime == {"layout": "contiguous", "teacher_logits": "every step"}
    assert _TwoConv.eval_calls[0] == 5 + 2 * EPOCHS


def test_an_augmenting_loader_is_not_held_in_memory_and_a_fixed_one_is_in_any_order() -> None:
    shuffled = DataLoader(
        TensorDataset(*tiny_data()), batch_size=5, shuffle=True, generator=torch.Generator()
    )
    held = replay_in_memory(shuffled)
    assert held is not None and len(held.inputs) == 32 and held.batch_size == 5
    assert replay_in_memory(DataLoader(_Augmented(), batch_size=4)) is None
    # A shuffled loader that drops its last partial batch drops other images every pass.
    dropping = DataLoader(
        TensorDataset(*tiny_data()),
        batch_size=5,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert replay_in_memory(dropping) is None
    # The same images under other labels are not the same forget set.
    images, labels = tiny_data()

    class Relabel:
        passes = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            Relabel.passes += 1
            yield images, labels if Relabel.passes == 1 else (labels + 1) % 4

    assert replay_in_memory(Relabel()) is None


class _FixedBatch(_TwoConv):
    """A forward written for batches of exactly 4 images (``view(4, -1)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(torch.relu(self.conv1(x))).reshape(4, -1))


def test_a_model_that_refuses_the_layout_checks_batch_keeps_its_layout() -> None:
    torch.manual_seed(0)
    model = _FixedBatch().eval()
    x = tiny_data()[0][:4]
    # The check reads 8 images; this forward raises on them in either layout.
    assert to_channels_last_if_same(model, torch.cat([x, x])) is False
    assert not is_channels_last(model)
    assert model(x).shape == (4, 4)
