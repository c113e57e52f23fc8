"""Metrics on tiny synthetic tensors with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from delete.data import ImageTensorDataset, make_unlearning_splits
from delete.errors import UnlearningError
from delete.metrics import (
    REPORT_METRICS,
    Accuracy,
    MetricInputError,
    PerClassAccuracy,
    accuracy,
    evaluate_unlearning,
    forget_vs_unseen_auc,
    h_mean,
    js_divergence,
    modified_entropy,
    per_class_accuracy,
    predict,
    svc_mia,
)


def _logits_for(preds: list[int], num_classes: int = 3) -> torch.Tensor:
    return 5.0 * torch.eye(num_classes)[torch.tensor(preds)]


# --- accuracy -----------------------------------------------------------------------------


def test_accuracy_from_logits_and_from_predictions() -> None:
    targets = torch.tensor([0, 1, 2, 2])
    assert accuracy(_logits_for([0, 1, 2, 0]), targets) == 75.0
    assert accuracy(torch.tensor([0, 1, 2, 0]), targets) == 75.0
    assert accuracy(torch.tensor([1, 0, 0, 0]), targets) == 0.0


def test_accuracy_rejects_empty_and_mismatched_input() -> None:
    with pytest.raises(MetricInputError, match="empty"):
        accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(MetricInputError, match="do not fit"):
        accuracy(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
    assert issubclass(MetricInputError, UnlearningError)


def test_stateful_accuracy_matches_the_function() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=gen)
    targets = torch.randint(0, 4, (50,), generator=gen)
    metric = Accuracy()
    for chunk in range(0, 50, 7):
        metric.update(logits[chunk : chunk + 7], targets[chunk : chunk + 7])
    assert metric.compute() == pytest.approx(accuracy(logits, targets))
    metric.reset()
    with pytest.raises(MetricInputError):
        metric.compute()


def test_per_class_accuracy_known_values_and_missing_class() -> None:
    logits = _logits_for([0, 0, 1, 2, 2], num_classes=4)
    out = per_class_accuracy(logits, torch.tensor([0, 1, 1, 1, 2]), num_classes=4)
    assert out[:3].tolist() == pytest.approx([100.0, 100.0 / 3, 100.0])
    assert math.isnan(out[3].item())  # no sample of class 3
    metric = PerClassAccuracy(4)
    metric.update(logits[:2], torch.tensor([0, 1]))
    metric.update(logits[2:], torch.tensor([1, 1, 2]))
    assert torch.equal(metric.compute().nan_to_num(-1.0), out.nan_to_num(-1.0))
    with pytest.raises(MetricInputError, match="3 classes but num_classes is 4"):
        per_class_accuracy(_logits_for([0]), torch.tensor([0]), num_classes=4)


# --- h_mean -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forget", "retain", "expected"),
    [
        (0.0, 100.0, 100.0),
        (0.0, 90.0, 2 * 100 * 90 / 190),
        (50.0, 50.0, 50.0),
        (100.0, 99.0, 0.0),
        (0.0, 0.0, 0.0),
        (20.0, 60.0, 2 * 80 * 60 / 140),
    ],
)
def test_h_mean_known_values(forget: float, retain: float, expected: float) -> None:
    assert h_mean(forget, retain) == pytest.approx(expected)


def test_h_mean_rejects_out_of_range() -> None:
    with pytest.raises(MetricInputError, match="test_retain_acc"):
        h_mean(0.0, 101.0)
    with pytest.raises(MetricInputError, match="test_forget_acc"):
        h_mean(float("nan"), 50.0)


# --- JS divergence ------------------------------------------------------------------------


def test_js_divergence_identical_is_zero_and_disjoint_is_ln2() -> None:
    logits = torch.randn(10, 5, generator=torch.Generator().manual_seed(1))
    assert js_divergence(logits, logits) == pytest.approx(0.0, abs=1e-12)
    p = torch.tensor([[100.0, 0.0]])
    q = torch.tensor([[0.0, 100.0]])
    assert js_divergence(p, q) == pytest.approx(math.log(2), abs=1e-6)
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    with pytest.raises(MetricInputError, match="differ in shape"):
        js_divergence(torch.zeros(2, 3), torch.zeros(2, 4))


# --- modified entropy ---------------------------------------------------------------------


def test_modified_entropy_matches_song_and_mittal_definition() -> None:
    probs = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), dim=1)
    labels = torch.tensor([0, 3, 1, 1, 2, 0])
    expected = []
    for p, y in zip(probs.double(), labels.tolist(), strict=True):
        value = -(1 - p[y]) * torch.log(p[y])
        value -= sum(p[i] * torch.log(1 - p[i]) for i in range(4) if i != y)
        expected.append(float(value))
    assert modified_entropy(probs, labels).tolist() == pytest.approx(expected, rel=1e-5)
    # Confidently wrong is penalised, confidently right is not (plain entropy cannot tell).
    sharp = torch.tensor([[0.99, 0.01], [0.99, 0.01]])
    right, wrong = modified_entropy(sharp, torch.tensor([0, 1])).tolist()
    assert right < 0.1 < 4.0 < wrong


# --- membership inference -----------------------------------------------------------------


def _confident(n: int, cls: torch.Tensor, margin: float, seed: int) -> torch.Tensor:
    """Logits that favour the true class by ``margin`` plus noise."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=gen) + margin * torch.eye(4)[cls]


def test_svc_mia_flags_overfit_members_and_not_unseen_samples() -> None:
    n = 120
    labels = torch.arange(n) % 4
    members = _confident(n, labels, 9.0, seed=0)  # overfit: train samples almost one-hot
    nonmembers = _confident(n, labels, 1.0, seed=1)
    looks_seen = _confident(n, labels, 9.0, seed=2)
    looks_unseen = _confident(n, labels, 1.0, seed=3)
    high = svc_mia(members, labels, nonmembers, labels, looks_seen, labels)
    low = svc_mia(members, labels, nonmembers, labels, looks_unseen, labels)
    assert high["member_rate"] > 90.0
    assert low["member_rate"] < 20.0
    for name in ("confidence", "entropy", "m_entropy", "prob"):
        assert 0.0 <= high[f"member_rate_{name}"] <= 100.0
    assert high["member_rate"] == high["member_rate_confidence"]


def test_svc_mia_balances_and_caps_the_shadow_sets() -> None:
    labels = torch.arange(200) % 4
    out = svc_mia(
        _confident(200, labels, 9.0, 0),
        labels,
        _confident(80, labels[:80], 1.0, 1),
        labels[:80],
        _confident(10, labels[:10], 1.0, 2),
        labels[:10],
        max_shadow=50,
    )
    assert out["n_shadow"] == 50.0 and out["n_target"] == 10.0
    again = svc_mia(
        _confident(200, labels, 9.0, 0),
        labels,
        _confident(80, labels[:80], 1.0, 1),
        labels[:80],
        _confident(10, labels[:10], 1.0, 2),
        labels[:10],
        max_shadow=50,
    )
    assert again == out  # the subsample is seeded


def test_svc_mia_rejects_bad_labels() -> None:
    logits = torch.zeros(4, 3)
    with pytest.raises(MetricInputError, match="labels must lie in"):
        svc_mia(
            logits,
            torch.tensor([0, 1, 2, 3]),
            logits,
            torch.zeros(4).long(),
            logits,
            torch.zeros(4).long(),
        )


def test_auc_is_half_on_identical_distributions_and_one_when_separated() -> None:
    labels = torch.zeros(200, dtype=torch.long)
    same_a = _confident(200, labels, 3.0, seed=4)
    same_b = _confident(200, labels, 3.0, seed=5)
    out = forget_vs_unseen_auc(same_a, labels, same_b, labels)
    assert abs(out["auc"] - 0.5) < 0.1
    assert out["auc_std"] >= 0.0 and out["n_splits"] == 5.0
    separated = forget_vs_unseen_auc(_confident(200, labels, 12.0, 6), labels, same_b, labels)
    assert separated["auc"] > 0.97
    assert separated["auc_loss_threshold"] > 0.97


def test_auc_lowers_folds_for_tiny_sets_and_rejects_one_sample() -> None:
    labels = torch.zeros(3, dtype=torch.long)
    out = forget_vs_unseen_auc(
        torch.randn(3, 2), labels, torch.randn(20, 2), torch.zeros(20).long()
    )
    assert out["n_splits"] == 3.0
    with pytest.raises(MetricInputError, match=">= 2 samples"):
        forget_vs_unseen_auc(
            torch.randn(1, 2), labels[:1], torch.randn(5, 2), torch.zeros(5).long()
        )


# --- predict and the full report ---------------------------------------------------------


class _Recorder(nn.Module):
    """Linear model that records whether it ran in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.saw_training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.saw_training |= self.training
        return self.linear(x.flatten(1))


def test_predict_uses_eval_mode_no_augmentation_and_restores_mode() -> None:
    images = torch.rand(6, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    ds = ImageTensorDataset(images, torch.tensor([0, 1] * 3), transform=lambda x: x + 100.0)
    model = _Recorder().train()
    logits, labels = predict(model, ds, "cpu", batch_size=4)
    assert not model.saw_training and model.training
    with torch.no_grad():
        assert torch.allclose(logits, model.linear(images.flatten(1)))
    assert labels.tolist() == [0, 1] * 3
    loader = [(images[:3], torch.tensor([0, 1, 0])), (images[3:], torch.tensor([1, 0, 1]))]
    assert torch.allclose(predict(model, loader, "cpu")[0], logits)
    with pytest.raises(MetricInputError, match="empty"):
        predict(model, [], "cpu")


def test_evaluate_unlearning_report_keys_and_values() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 3
    # Images encode the label, so a hand-made linear model is a perfect classifier.
    images = (torch.eye(3)[labels] + 0.05 * torch.randn(120, 3, generator=gen))[:, None, :, None]
    data = ImageTensorDataset(images, labels)
    splits = make_unlearning_splits(data.subset(range(90)), data.subset(range(90, 120)), [2])
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        model[1].weight.copy_(10.0 * torch.eye(3))
        model[1].bias.zero_()
    report = evaluate_unlearning(model, splits, "cpu", reference=model, seed=1)
    metrics = report.to_dict()
    assert list(metrics) == list(REPORT_METRICS)
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["acc_test_forget"] == 100.0 and metrics["acc_test_retain"] == 100.0
    assert metrics["h_mean"] == 0.0
    assert metrics["js_to_reference"] == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= metrics["mia_svc_member_rate"] <= 100.0
    assert 0.0 <= metrics["mia_auc"] <= 1.0
    assert report.per_class_test_accuracy == [100.0, 100.0, 100.0]
    assert "js_to_reference" not in evaluate_unlearning(model, splits, "cpu", mia=False).to_dict()


def test_evaluate_unlearning_names_an_empty_split() -> None:
    data = ImageTensorDataset(torch.rand(8, 1, 2, 2), torch.tensor([0, 1] * 4))
    test = ImageTensorDataset(torch.rand(4, 1, 2, 2), torch.tensor([0] * 4))
    splits = make_unlearning_splits(data, test, [1])
    with pytest.raises(MetricInputError, match="split test_forget is empty"):
        evaluate_unlearning(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), splits, "cpu")


def test_train_retain_cap_scores_a_seeded_subset_of_that_size() -> None:
    from delete.data import ImageTensorDataset, make_unlearning_splits
    from delete.metrics import evaluate_unlearning

    gen = torch.Generator().manual_seed(0)
    data = ImageTensorDataset(torch.rand(60, 1, 2, 2, generator=gen), torch.arange(60) % 3)
    splits = make_unlearning_splits(data, data, [2])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    whole = evaluate_unlearning(model, splits, "cpu", mia=False)
    capped = evaluate_unlearning(model, splits, "cpu", mia=False, max_train_retain=7)
    again = evaluate_unlearning(model, splits, "cpu", mia=False, max_train_retain=7)
    # 7 samples: the accuracy is a multiple of 100/7, the same subset both times.
    assert round(capped.acc_train_retain * 7 / 100, 6) == round(capped.acc_train_retain * 7 / 100)
    assert capped.acc_train_retain == again.acc_train_retain
    # The test split (what the gates read) is never capped.
    assert capped.acc_test_retain == whole.acc_test_retain
    assert (
        evaluate_unlearning(model, splits, "cpu", mia=False, max_train_retain=1000).to_dict()
        == whole.to_dict()
    )
