"""The cost target of the issue on unseen models, measured back to back (not part of the library).

Runs ``delete.unlearn``'s defaults (forget data only) on the project's SmallCNN for MNIST-5k
digits 3, 5 and 8, with and without the rotated-image BatchNorm check and with the opt-in
absolute floor of the stopping rule (``min_delta_abs``), and times a Retrain of
the same model with the project's recipe before and after, on one thread. Prints one JSON line:
per setting the seconds of the three requests, the epochs each trained (probes included) and
the mean cost against the mean Retrain. Run it with nothing else on the machine:

    .venv/bin/python docs/bench/smallcnn_cost.py
"""

from __future__ import annotations

import json

import torch

from delete.api import run_unlearning
from delete.bench.zoo_bench import SMALL_CNN, _original, _retrain_seconds
from delete.data import load_mnist5k, make_unlearning_splits
from delete.selection import SelectionConfig
from delete.training import make_loader

DIGITS = (3, 5, 8)


def main() -> None:
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    model = _original(SMALL_CNN, bundle)
    before = _retrain_seconds(SMALL_CNN, bundle, DIGITS[0])[0]
    settings = {
        "default": SelectionConfig(),
        "no_rotated_check": SelectionConfig(bn_fallback_rotated=False),
        "absolute_floor": SelectionConfig(min_delta_abs=0.002),  # opt-in, not the default
    }
    measured: dict[str, dict[str, object]] = {}
    for label, config in settings.items():
        seconds, epochs = 0.0, []
        for digit in DIGITS:
            splits = make_unlearning_splits(bundle.train, bundle.test, [digit])
            loader = make_loader(splits.train_forget, 64, shuffle=True, seed=0)
            result = run_unlearning(
                model,
                loader,
                [digit],
                device="cpu",
                progress=False,
                cache_teacher=True,
                selection=config,
            )
            assert result.selection is not None
            seconds += result.engine.seconds
            # The kept run's epochs plus the epochs of every other trial that trained.
            others = sum(len(t.signals) for t in result.selection.trials if t.status != "chosen")
            epochs.append(result.selection.epochs + others)
        measured[label] = {"seconds": round(seconds, 2), "epochs": epochs, "cost": seconds}
    after = _retrain_seconds(SMALL_CNN, bundle, DIGITS[0])[0]
    retrain = (before + after) / 2
    for entry in measured.values():
        entry["cost"] = round(float(entry["cost"]) / len(DIGITS) / retrain, 3)  # type: ignore[arg-type]
    print(json.dumps({"retrain_seconds": [round(before, 1), round(after, 1)], **measured}))


if __name__ == "__main__":
    main()
