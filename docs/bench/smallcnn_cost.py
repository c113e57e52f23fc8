"""The cost target of the issue on unseen models, measured back to back (not part of the library).

Runs ``delete.unlearn``'s defaults (forget data only) on the project's SmallCNN for MNIST-5k
digits 3, 5 and 8, with and without the rotated-image BatchNorm check, without the synthetic
guard (``synthetic_rerun_drop=None``), without the soft check (``soft_check_drop=None``),
without the rise check (``one_class_rise=None``),
with the epoch kept ranked by DELETE's loss alone (``keep_by_rotated=False``), with the opt-in
absolute floor of the stopping rule (``min_delta_abs``), and with the defaults' two speed-ups
switched off (the teacher's logits computed every step, and the contiguous layout instead of
channels-last), and times a Retrain of the same model with the project's recipe before and
after, on one thread. A third Retrain runs the same recipe channels-last, so the cost can also
be read against a Retrain given the same layout. Prints one JSON line: per setting the seconds
of the three requests, the epochs each trained (probes included) and the mean cost against
the mean Retrain (``cost``) and against the channels-last one (``cost_vs_cl``). Run it with
nothing else on the machine:

    .venv/bin/python docs/bench/smallcnn_cost.py
"""

from __future__ import annotations

import json
import time
from typing import Any
from unittest import mock

import torch

from delete import api
from delete.api import run_unlearning
from delete.bench.zoo_bench import SMALL_CNN, _original, _retrain_seconds, _small_cnn
from delete.data import load_mnist5k, make_unlearning_splits
from delete.selection import SelectionConfig
from delete.training import TrainConfig, make_loader, train_classifier

DIGITS = (3, 5, 8)


def main() -> None:
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    model = _original(SMALL_CNN, bundle)
    before = _retrain_seconds(SMALL_CNN, bundle, DIGITS[0])[0]
    settings: dict[str, tuple[SelectionConfig, dict[str, Any], bool]] = {
        "default": (SelectionConfig(), {}, True),
        "no_rotated_check": (SelectionConfig(bn_fallback_rotated=False), {}, True),
        # without reading images inverted from the original at the end (forget-only guard)
        "no_synthetic_guard": (SelectionConfig(synthetic_rerun_drop=None), {}, True),
        # without carrying the guard's images on towards a soft target (forget-only check)
        "no_soft_check": (SelectionConfig(soft_check_drop=None), {}, True),
        # without reading one kept class's rise on the guard's images (forget-only check)
        "no_rise_check": (SelectionConfig(one_class_rise=None), {}, True),
        # the epoch kept ranked by DELETE's loss alone (no rotated reading every epoch)
        "keep_by_loss_alone": (SelectionConfig(keep_by_rotated=False), {}, True),
        # opt-in, not the default
        "absolute_floor": (SelectionConfig(min_delta_abs=0.002), {}, True),
        # the defaults before the two speed-ups
        "no_teacher_cache": (SelectionConfig(), {"cache_teacher": False}, True),
        "contiguous_layout": (SelectionConfig(), {}, False),
    }
    measured: dict[str, dict[str, object]] = {}
    for label, (config, extra, layout) in settings.items():
        seconds, epochs = 0.0, []
        for digit in DIGITS:
            splits = make_unlearning_splits(bundle.train, bundle.test, [digit])
            loader = make_loader(splits.train_forget, 64, shuffle=True, seed=0)
            with mock.patch.object(
                api, "to_channels_last_if_same", api.to_channels_last_if_same if layout else _no
            ):
                result = run_unlearning(
                    model,
                    loader,
                    [digit],
                    device="cpu",
                    progress=False,
                    selection=config,
                    **extra,
                )
            assert result.selection is not None
            seconds += result.engine.seconds
            # The kept run's epochs plus the epochs of every other trial that trained.
            others = sum(len(t.signals) for t in result.selection.trials if t.status != "chosen")
            epochs.append(result.selection.epochs + others)
        measured[label] = {"seconds": round(seconds, 2), "epochs": epochs, "cost": seconds}
    after = _retrain_seconds(SMALL_CNN, bundle, DIGITS[0])[0]
    retrain = (before + after) / 2
    cl_retrain = _retrain_channels_last()
    for entry in measured.values():
        per_request = float(entry["cost"]) / len(DIGITS)  # type: ignore[arg-type]
        entry["cost"] = round(per_request / retrain, 3)
        entry["cost_vs_cl"] = round(per_request / cl_retrain, 3)
    print(
        json.dumps(
            {
                "retrain_seconds": [round(before, 1), round(after, 1)],
                "retrain_channels_last_seconds": round(cl_retrain, 1),
                **measured,
            }
        )
    )


def _no(model: torch.nn.Module, inputs: torch.Tensor) -> bool:
    return False


def _retrain_channels_last() -> float:
    """The SmallCNN's Retrain (digit 3 held out) with its weights channels-last."""
    started = time.perf_counter()  # where _retrain_seconds starts its clock
    model = _small_cnn().to(memory_format=torch.channels_last)
    aug = load_mnist5k(augment=True)
    retain = make_unlearning_splits(aug.train, aug.test, [DIGITS[0]]).train_retain
    train_classifier(model, retain, TrainConfig(), "cpu")
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
