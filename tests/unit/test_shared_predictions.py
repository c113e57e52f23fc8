"""One prediction per model state and dataset inside ``shared_predictions()``.

The counts are set by each test's own setup: a forward hook counts the images a model sees.
"""

from __future__ import annotations

import torch
from torch import nn

from delete.applications.classification import CLASSIFICATION_TASK, evaluate_classification
from delete.data import DatasetBundle, ImageTensorDataset
from delete.metrics import predict, shared_predictions


class _Counted(nn.Module):
    """A linear classifier that counts the images it is run on."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, classes))
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.net(x)


def _dataset(n: int, seed: int) -> ImageTensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return ImageTensorDataset(torch.rand(n, 1, 2, 2, generator=gen), torch.arange(n) % 3)


def test_outside_a_scope_every_call_predicts() -> None:
    model, ds = _Counted(), _dataset(10, 0)
    predict(model, ds, "cpu")
    predict(model, ds, "cpu")
    assert model.seen == 20


def test_inside_a_scope_the_same_state_and_dataset_is_predicted_once() -> None:
    model, ds = _Counted(), _dataset(10, 0)
    with shared_predictions():
        first, labels = predict(model, ds, "cpu")
        first.zero_()  # a caller's in-place change must not reach the next caller
        second, _ = predict(model, ds, "cpu")
    assert model.seen == 10
    assert labels.tolist() == (torch.arange(10) % 3).tolist()
    assert not torch.equal(second, torch.zeros_like(second))


def test_a_model_changed_in_place_is_predicted_again() -> None:
    model, ds = _Counted(), _dataset(10, 0)
    with shared_predictions():
        before, _ = predict(model, ds, "cpu")
        optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
        loss = model(torch.ones(1, 1, 2, 2)).sum()  # one more image seen
        loss.backward()
        optimiser.step()
        after, _ = predict(model, ds, "cpu")
    assert model.seen == 21
    assert not torch.allclose(before, after)


def test_other_datasets_and_models_are_not_confused() -> None:
    a, b = _Counted(), _Counted()
    ds1, ds2 = _dataset(10, 0), _dataset(10, 1)  # same size, same labels, other images
    with shared_predictions():
        a1, _ = predict(a, ds1, "cpu")
        a2, _ = predict(a, ds2, "cpu")
        b1, _ = predict(b, ds1, "cpu")
    assert (a.seen, b.seen) == (20, 10)
    assert not torch.allclose(a1, a2)
    assert not torch.allclose(a1, b1)


def test_evaluation_membership_and_behaviour_share_the_splits() -> None:
    """The request's three readers of a classifier: each split once per model."""
    train, test = _dataset(30, 0), _dataset(12, 1)
    data = DatasetBundle("t", train, test, ["a", "b", "c"])
    model = _Counted()
    spec = CLASSIFICATION_TASK
    with shared_predictions():
        evaluate_classification(model, data, [1], "cpu", mia=False)
        seen_by_evaluation = model.seen
        assert spec.membership is not None
        spec.membership(model, data, [1], torch.device("cpu"))
        logits, labels = spec.behaviour(model, data, [1], torch.device("cpu"))
    # train_forget 10 + train_retain 20 + test_forget 4 + test_retain 8
    assert seen_by_evaluation == 42
    assert model.seen == 42
    assert labels.tolist() == [0, 2, 0, 2, 0, 2, 0, 2]
    assert logits.shape == (8, 3)
