"""Backdoor removal with DELETE: forget the target label on the known triggered samples.

A BadNets-poisoned model predicts the attacker's target label whenever the trigger is
present. The defender knows a handful of poisoned training samples (here <= 1% of the
training set). DELETE runs on exactly those images with the *target label* as the forgotten
class: the frozen teacher's target logit is masked on triggered inputs, so the student learns
the teacher's remaining beliefs there (mostly the true digit, which the backdoored model still
sees) and stops mapping the trigger to the target. The forget loader's labels are the poisoned
labels; DELETE never reads them.

Metrics: attack success rate (ASR) on triggered test images whose true label is not the target,
clean test accuracy, and clean accuracy on the target class alone. The "retrain" reference is
a model trained on the clean training set.

Two threat models. With *no clean data* (the paper's), the forget set holds triggered images
only, so nothing anchors the target class on *clean* images: the ASR falls, but the target
class's clean accuracy falls with it (to ~13% at ASR ~3% on MNIST-5k, clean accuracy -9
points; README, "Backdoor without clean data: what was tried"). With a *declared repair set*
(at most 1% of the training set, clean images the defender chose; ``BACKDOOR_TASK.repair_step``
``"distill"``, :mod:`delete.repair`), a repair step after DELETE restores the clean behaviour
without the trigger: clean accuracy -0.8 / -0.9 points at ASR 0.4% / 0.1% for BadNets /
blended triggers over 3 seeds (``python -m delete.bench.backdoor_repair``).

Modules: :mod:`~delete.applications.backdoor.poison` (the trigger and the poisoning),
:mod:`~delete.applications.backdoor.data` (the poisoned dataset and the known samples),
:mod:`~delete.applications.backdoor.metrics` (attack success rate) and
:mod:`~delete.applications.backdoor.spec` (the evaluation and :data:`BACKDOOR_TASK`). The
model and loss are the library's ``small_cnn`` and cross-entropy.
"""

from __future__ import annotations

from delete.applications.backdoor.data import BackdoorData, load_backdoor_data
from delete.applications.backdoor.metrics import attack_success_rate
from delete.applications.backdoor.poison import (
    BadNetsTrigger,
    BlendedTrigger,
    PoisonedDataset,
    poison_dataset,
    triggered_copy,
)
from delete.applications.backdoor.spec import BACKDOOR_TASK, evaluate_backdoor

__all__ = [
    "BACKDOOR_TASK",
    "BackdoorData",
    "BadNetsTrigger",
    "BlendedTrigger",
    "PoisonedDataset",
    "attack_success_rate",
    "evaluate_backdoor",
    "load_backdoor_data",
    "poison_dataset",
    "triggered_copy",
]
