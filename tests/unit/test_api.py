"""The one-call API: validation of bad inputs, immutability of the input, checkpoints, NaN guard."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import delete
from delete.errors import (
    CheckpointError,
    InvalidClassError,
    InvalidDeviceError,
    InvalidForgetSetError,
    InvalidHparamError,
    MissingRetainDataError,
    NonFiniteLossError,
    UnknownMethodError,
)
from delete.methods import Batch, UnlearnContext, UnlearningMethod, register_method
from delete.methods._registry import _REGISTRY
from delete.methods.delete import DeleteMethod
from tests.unit._tiny import loader_of, tiny_problem


def test_returns_new_model_and_leaves_input_untouched() -> None:
    model, forget, _ = tiny_problem()
    before = copy.deepcopy(model.state_dict())
    out = delete.unlearn(model, forget, [1], device="cpu", epochs=2, progress=False)
    assert out is not model
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(
        not torch.equal(a, b)
        for a, b in zip(out.state_dict().values(), before.values(), strict=True)
    )
    assert not out.training


def test_forget_probability_falls_on_tiny_problem() -> None:
    model, forget, _ = tiny_problem()
    images = torch.cat([x for x, _ in forget])
    with torch.no_grad():
        p_before = torch.softmax(model.eval()(images), 1)[:, 1].mean()
    out = delete.unlearn(model, forget, [1], device="cpu", epochs=10, lr=0.05, progress=False)
    with torch.no_grad():
        p_after = torch.softmax(out(images), 1)[:, 1].mean()
    assert p_after < p_before * 0.5


def test_empty_forget_set_is_rejected() -> None:
    model, _, _ = tiny_problem()
    empty = loader_of(torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(InvalidForgetSetError, match="empty"):
        delete.unlearn(model, empty, [1], device="cpu")


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([7], "out of range"),
        ([-1], "out of range"),
        ([0, 1, 2, 3], "every class"),
        ([1, 1], "duplicated"),
        ([], "empty"),
    ],
)
def test_bad_forget_classes_are_rejected(classes: list[int], match: str) -> None:
    model, forget, _ = tiny_problem()
    with pytest.raises(InvalidClassError, match=match):
        delete.unlearn(model, forget, classes, device="cpu")


@pytest.mark.parametrize("bare", [1, np.int64(1), torch.tensor(1)])
def test_one_forget_class_may_be_given_bare(bare: object) -> None:
    model, forget, _ = tiny_problem()
    listed = delete.unlearn(model, forget, [1], device="cpu", epochs=1, progress=False)
    got = delete.unlearn(model, forget, bare, device="cpu", epochs=1, progress=False)  # type: ignore[arg-type]
    for key, value in listed.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("tpu", "device 'tpu' is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ("cpu:x", "device 'cpu:x' is not a torch device"),
    ],
)
def test_an_unknown_device_is_refused_in_one_line(device: str, match: str) -> None:
    model, forget, _ = tiny_problem()
    with pytest.raises(InvalidDeviceError, match=match) as info:
        delete.unlearn(model, forget, [1], device=device, epochs=1)
    assert "\n" not in str(info.value)


def test_error_messages_are_one_line() -> None:
    model, forget, _ = tiny_problem()
    with pytest.raises(InvalidClassError) as info:
        delete.unlearn(model, forget, [9], device="cpu")
    assert "\n" not in str(info.value)


def test_unknown_method_and_hparam() -> None:
    model, forget, _ = tiny_problem()
    with pytest.raises(UnknownMethodError, match="unknown unlearning method 'nope'"):
        delete.unlearn(model, forget, [1], method="nope")
    with pytest.raises(InvalidHparamError, match="no hyper-parameter"):
        delete.unlearn(model, forget, [1], device="cpu", learning_rate=0.1)
    with pytest.raises(InvalidHparamError, match="epochs"):
        delete.unlearn(model, forget, [1], device="cpu", epochs=0)


@pytest.mark.parametrize("method", delete.list_methods(needs_retain=True))
def test_method_needing_retained_data_refuses_without_it(method: str) -> None:
    model, forget, _ = tiny_problem()
    with pytest.raises(MissingRetainDataError, match="needs retained training data"):
        delete.unlearn(model, forget, [1], method=method, device="cpu")


class _NaNAfterFirstStep(UnlearningMethod):
    """Injects a non-finite loss on the second step, as a diverging run would."""

    def training_step(self, batch: Batch, ctx: UnlearnContext) -> torch.Tensor:
        loss = ctx.student(batch.inputs).logsumexp(1).mean()
        ctx.state["steps"] = ctx.state.get("steps", 0) + 1
        return loss * float("nan") if ctx.state["steps"] > 1 else loss


@pytest.fixture
def nan_method() -> Iterator[str]:
    register_method("_test_nan")(_NaNAfterFirstStep)
    yield "_test_nan"
    _REGISTRY.unregister("_test_nan")  # keep list_methods() clean for the parametrized method tests


def test_non_finite_loss_aborts_with_clear_error(nan_method: str) -> None:
    model, forget, _ = tiny_problem()
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2, step 2"):
        delete.unlearn(model, forget, [1], method=nan_method, device="cpu", progress=False)


class _SimulatedCrashError(RuntimeError):
    pass


def test_resume_after_crash_matches_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, forget, _ = tiny_problem()
    kwargs = {"device": "cpu", "epochs": 4, "progress": False}
    full = delete.run_unlearning(model, forget, [1], **kwargs)

    original_batches = DeleteMethod.batches

    def crash_in_epoch_three(
        self: DeleteMethod, ctx: UnlearnContext, epoch: int
    ) -> Iterator[Batch]:
        if epoch == 2:
            raise _SimulatedCrashError("simulated kill during epoch 3")
        return original_batches(self, ctx, epoch)

    monkeypatch.setattr(DeleteMethod, "batches", crash_in_epoch_three)
    with pytest.raises(_SimulatedCrashError):
        delete.run_unlearning(model, forget, [1], checkpoint_dir=tmp_path, **kwargs)
    assert torch.load(tmp_path / "engine_checkpoint.pt", weights_only=True)["epoch"] == 2

    monkeypatch.setattr(DeleteMethod, "batches", original_batches)
    resumed = delete.run_unlearning(model, forget, [1], checkpoint_dir=tmp_path, **kwargs)
    assert resumed.engine.resumed_from_epoch == 2
    assert len(resumed.engine.epoch_losses) == 4
    pairs = zip(resumed.model.state_dict().values(), full.model.state_dict().values(), strict=True)
    for a, b in pairs:
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path: Path) -> None:
    model, forget, _ = tiny_problem()
    delete.run_unlearning(
        model, forget, [1], device="cpu", epochs=2, progress=False, checkpoint_dir=tmp_path
    )
    other = delete.run_unlearning(
        model, forget, [1], device="cpu", epochs=3, progress=False, checkpoint_dir=tmp_path
    )
    assert other.engine.resumed_from_epoch == 0


def test_corrupt_engine_checkpoint_is_refused(tmp_path: Path) -> None:
    model, forget, _ = tiny_problem()
    (tmp_path / "engine_checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        delete.unlearn(model, forget, [1], device="cpu", checkpoint_dir=tmp_path, progress=False)


def test_works_on_a_foreign_classifier() -> None:
    foreign = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    images = torch.rand(12, 1, 8, 8)
    labels = torch.tensor([0, 1, 2] * 4)
    out = delete.unlearn(
        foreign,
        loader_of(images[labels == 2], labels[labels == 2]),
        [2],
        device="cpu",
        epochs=1,
        progress=False,
    )
    assert out(images).shape == (12, 3)
