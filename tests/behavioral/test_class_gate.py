"""The per-class gate rejects what the average hides: one retained class that fell.

The "unlearned" model is the original with one retained class's logit pushed down until that
class loses 10 to 40 points while the retained average loses less than 3: the average gate
passes it, so only the per-class gate can reject it. The verdict is fixed by this setup.
"""

from __future__ import annotations

import copy

import torch

from delete.applications.classification import evaluate_classification
from delete.data import load_digits, make_unlearning_splits
from delete.metrics import evaluate_unlearning
from delete.models import ModelSpec, build_model
from delete.training import TrainConfig, train_classifier
from tasks.evaluation import check_gates

GATES = {"max_drop_acc_retain": 3.0, "max_drop_class_acc": 5.0}
FORGET, VICTIM = (3,), 8


def _push_down(model: torch.nn.Module, cls: int, delta: float) -> torch.nn.Module:
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.classifier.bias[cls] -= delta  # type: ignore[index, operator]
    return out.eval()


def test_one_fallen_class_is_rejected_though_the_average_passes() -> None:
    bundle = load_digits(seed=0, augment=False)
    torch.manual_seed(0)
    model = build_model(ModelSpec("small_cnn", num_classes=10, in_channels=1, image_size=8))
    train_classifier(model, bundle.train, TrainConfig(epochs=15, seed=0), device="cpu")
    splits = make_unlearning_splits(bundle.train, bundle.test, FORGET)
    before = evaluate_unlearning(model, splits, "cpu", mia=False)

    fallen, after = None, None
    for delta in [x / 2 for x in range(1, 60)]:
        candidate = _push_down(model, VICTIM, delta)
        report = evaluate_unlearning(candidate, splits, "cpu", mia=False)
        lost = before.per_class_test_accuracy[VICTIM] - report.per_class_test_accuracy[VICTIM]
        if 10.0 <= lost <= 40.0 and before.acc_test_retain - report.acc_test_retain < 3.0:
            fallen, after = candidate, report
            break
    assert fallen is not None and after is not None, "setup: no shift drops one class alone"

    # The pipeline's own evaluation of both models, as the unlearn flow gates them.
    old = evaluate_classification(model, bundle, FORGET, "cpu", mia=False)
    new = evaluate_classification(fallen, bundle, FORGET, "cpu", mia=False)
    forgotten = [bundle.class_names[c] for c in FORGET]
    rejected = check_gates("classification", old, new, GATES, forgotten)
    assert not rejected.passed
    assert [c.name for c in rejected.checks if not c.passed] == ["max_drop_class_acc"]
    assert rejected.reasons[0].startswith("max_drop_class_acc: ")

    # The control: the parent against itself passes both gates.
    assert check_gates("classification", old, old, GATES, forgotten).passed
