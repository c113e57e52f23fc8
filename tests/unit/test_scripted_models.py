"""TorchScript models, as they are often shipped (``torch.jit.save``/``torch.jit.load``).

``copy.deepcopy`` of one gives parameters that are not leaves, so unlearning failed with
"you can only change requires_grad flags of leaf variables" before any training.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import delete
from delete.metrics.predict import predict
from delete.models.clone import clone_module
from tests.unit._tiny import TinyNet, loader_of, tiny_data


def _forget() -> torch.utils.data.DataLoader:
    images, labels = tiny_data()
    return loader_of(images[labels == 1], labels[labels == 1])


def _shipped(tmp_path: Path) -> torch.jit.ScriptModule:
    """A TinyNet scripted, saved and loaded back, as a model arrives from elsewhere."""
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyNet()), tmp_path / "model.pt")
    return torch.jit.load(tmp_path / "model.pt")


@pytest.mark.parametrize("pinned", [{}, {"lr": 0.05, "epochs": 5}], ids=["defaults", "fixed"])
def test_a_shipped_torchscript_model_is_unlearned_and_handed_back_scripted(
    tmp_path: Path, pinned: dict
) -> None:
    model = _shipped(tmp_path)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    out = delete.unlearn(model, _forget(), [1], device="cpu", progress=False, **pinned)

    assert isinstance(out, torch.jit.ScriptModule)
    logits, _ = predict(out, _forget(), device="cpu")
    assert (logits.argmax(1) != 1).all()  # forgotten
    # The caller's module is untouched.
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_torchscript_copy_has_trainable_leaves_and_the_same_weights(tmp_path: Path) -> None:
    model = _shipped(tmp_path)
    copied = clone_module(torch.nn.Sequential(model))
    params = dict(copied.named_parameters())
    assert all(p.is_leaf for p in params.values())
    assert all(torch.equal(params[f"0.{n}"], p) for n, p in model.named_parameters())
    assert all(p is not params[f"0.{n}"] for n, p in model.named_parameters())
