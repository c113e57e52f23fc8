"""Backdoor removal with a declared repair set keeps the target class, on real MNIST-5k.

Both attacks (a BadNets patch and a blended noise trigger), seed 0, the SmallCNN trained 6
epochs on 5% poisoned data, DELETE on the 40 known poisoned images (1% of the training set),
then the ``distill`` repair on 40 clean training images (1%). Without the repair the target
class's clean accuracy collapses (measured 10-18 %); with it, the attack stays removed and
clean accuracy stays within 3 points of the backdoored original.
"""

from __future__ import annotations

import pytest
import torch

from delete.api import run_unlearning
from delete.applications import get_task
from delete.bench.backdoor_repair import REPAIR_FRACTION, repair_indices
from delete.models import build_model
from delete.repair import repair
from delete.training import TrainConfig, make_loader, train_classifier


@pytest.mark.parametrize("attack", ["badnets", "blended"])
def test_repair_set_restores_clean_accuracy_without_the_trigger(attack: str) -> None:
    torch.set_num_threads(1)
    spec = get_task("backdoor")
    data = spec.load_data(target=0, poison_rate=0.05, known_fraction=0.01, seed=0, attack=attack)
    torch.manual_seed(0)
    original = build_model(spec.model_spec(data))
    train_classifier(original, data.train, TrainConfig(epochs=6, lr=0.05), "cpu")
    cpu = torch.device("cpu")
    before = spec.evaluate(original, data, (0,), cpu)
    assert before["asr"] > 90.0  # the setup: a working backdoor

    forget = make_loader(spec.forget_set(data, (0,)), 64, shuffle=True, seed=0)
    unlearned = run_unlearning(
        original, forget, (0,), "delete", "cpu", progress=False, lr=1e-3, epochs=20
    ).model
    alone = spec.evaluate(unlearned, data, (0,), cpu)
    assert alone["target_clean_acc"] < 50.0  # what the repair is for

    assert spec.repair_images is not None
    indices = repair_indices(data, REPAIR_FRACTION, seed=0).tolist()
    assert len(indices) == 40
    clean = make_loader(spec.repair_images(data, indices), 64, shuffle=True, seed=0)
    repaired = repair(unlearned, original, clean, forget, (0,), "distill", "cpu").model
    after = spec.evaluate(repaired, data, (0,), cpu)
    assert after["asr"] < 5.0
    assert before["clean_acc"] - after["clean_acc"] <= 3.0
    assert after["target_clean_acc"] > 70.0
