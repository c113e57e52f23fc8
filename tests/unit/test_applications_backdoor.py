"""Backdoor utilities: the trigger, BadNets poisoning, attack success rate, the forget set."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import delete
from delete.applications import get_task
from delete.applications.backdoor import BackdoorData, evaluate_backdoor
from delete.applications.backdoor.metrics import attack_success_rate
from delete.applications.backdoor.poison import BadNetsTrigger, poison_dataset, triggered_copy
from delete.data import DatasetBundle, ImageTensorDataset
from delete.errors import InvalidClassError
from tests.unit._tiny import TinyNet


def _dataset(n: int = 40, num_classes: int = 4) -> ImageTensorDataset:
    labels = torch.arange(n) % num_classes
    return ImageTensorDataset(torch.zeros(n, 1, 8, 8), labels)


def test_trigger_stamps_a_white_square_at_the_bottom_right_without_touching_the_input() -> None:
    images = torch.zeros(2, 1, 8, 8)
    out = BadNetsTrigger(size=3, margin=1).apply(images)
    assert float(images.sum()) == 0.0
    assert torch.equal(out[:, :, 4:7, 4:7], torch.ones(2, 1, 3, 3))
    assert float(out.sum()) == 2 * 9
    assert float(BadNetsTrigger(size=2, margin=0, value=0.5).apply(images)[0, 0, 7, 7]) == 0.5
    with pytest.raises(ValueError, match="does not fit"):
        BadNetsTrigger(size=8, margin=1).apply(images)


def test_poisoning_relabels_the_requested_share_of_non_target_samples() -> None:
    clean = _dataset()
    poisoned = poison_dataset(clean, target=2, rate=0.25, seed=3)
    idx = poisoned.poisoned
    assert len(idx) == 10
    assert bool((clean.labels[idx] != 2).all())
    assert bool((poisoned.dataset.labels[idx] == 2).all())
    assert torch.equal(poisoned.original_labels, clean.labels)
    assert float(poisoned.dataset.images[idx].sum()) == 10 * 9  # one 3x3 patch each
    untouched = torch.ones(len(clean), dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(poisoned.dataset.labels[untouched], clean.labels[untouched])
    again = poison_dataset(clean, target=2, rate=0.25, seed=3)
    assert torch.equal(again.poisoned, idx)
    assert not torch.equal(poison_dataset(clean, target=2, rate=0.25, seed=4).poisoned, idx)


def test_poisoning_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="rate"):
        poison_dataset(_dataset(), target=0, rate=0.0)
    with pytest.raises(ValueError, match="non-target"):
        poison_dataset(_dataset(), target=0, rate=0.9)


def test_triggered_copy_keeps_true_labels_and_drops_the_target_class() -> None:
    out = triggered_copy(_dataset(8), BadNetsTrigger(), exclude_label=1)
    assert out.labels.tolist() == [0, 2, 3, 0, 2, 3]
    assert float(out.images.sum()) == 6 * 9


def test_attack_success_rate_known_values() -> None:
    true = torch.tensor([0, 1, 2, 3, 3])
    assert attack_success_rate(torch.tensor([3, 3, 2, 3, 0]), true, target=3) == pytest.approx(
        100 * 2 / 3
    )
    logits = torch.eye(4)[torch.tensor([3, 3, 3])]
    assert attack_success_rate(logits, torch.tensor([0, 1, 2]), target=3) == 100.0
    with pytest.raises(ValueError, match="target"):
        attack_success_rate(torch.tensor([1]), torch.tensor([1]), target=1)


def _tiny_backdoor() -> BackdoorData:
    clean = _dataset(40)
    clean = ImageTensorDataset(torch.rand(40, 1, 8, 8) * 0.5, clean.labels)
    bundle = DatasetBundle("tiny", clean, clean, ["a", "b", "c", "d"])
    trigger = BadNetsTrigger(size=2)
    poisoned = poison_dataset(clean, target=0, rate=0.2, trigger=trigger)
    return BackdoorData(bundle, poisoned, poisoned.poisoned[:3], trigger)


def test_forget_set_is_the_known_poisoned_samples_and_the_api_accepts_it() -> None:
    data = _tiny_backdoor()
    spec = get_task("backdoor")
    assert spec.default_forget_classes(data) == (0,)
    forget_set = spec.forget_set(data, [0])
    assert len(forget_set) == 3
    with pytest.raises(InvalidClassError, match="target label 0"):
        spec.forget_set(data, [1])
    retain = spec.retain_set(data, [0])
    assert len(retain) == 37
    torch.manual_seed(0)
    model = TinyNet(num_classes=4)
    # The loader's labels are the samples' TRUE classes (1..3), never the forgotten class 0:
    # DELETE only needs a non-empty loader, it never reads the labels.
    true_labels = data.poisoned.original_labels[data.known]
    assert bool((true_labels != 0).all())
    images = torch.stack([forget_set[i][0] for i in range(len(forget_set))])
    loader = DataLoader(list(zip(images, true_labels, strict=True)), batch_size=2)
    out = delete.unlearn(model, loader, [0], device="cpu", epochs=2, progress=False)
    metrics = evaluate_backdoor(out, data, [0])
    assert {k for k in metrics if "/" not in k} == {
        "clean_acc",
        "target_clean_acc",
        "asr",
        "triggered_acc",
    }
    assert sorted(k for k in metrics if "/" in k) == [f"class_acc/{c}" for c in "abcd"]
    assert all(0.0 <= v <= 100.0 for v in metrics.values())
