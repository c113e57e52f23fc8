"""The forget-only synthetic guard (``SelectionConfig.synthetic_rerun_drop``) on the zoo, the
SmallCNN and the outside models (README, "Outside models"; ``synthetic_guard_cpu.md``).

Each request runs ``delete.unlearn``'s defaults with forget data only. Where the guard ran the
kept candidate again, the same request runs once more with the guard off, so the row shows both.
One JSON line per request: points of retained test accuracy lost, test-forget, epochs, the epoch
kept, seconds in all and seconds spent inverting images.

    PYTHONPATH=.:docs/bench .venv/bin/python docs/bench/synthetic_guard.py \\
        densenet_adamw:3,5,8 zoo/resnet18:3,5,8 small:3,5,8 lenet5_sgd:3,5,8:head-only \\
        convnext_adamw@4:3,5,8
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch
from outside_models import freeze_all_but_head, request, trained
from torch import nn

import delete.selection.auto as auto
from delete.bench.zoo import Tempered
from delete.bench.zoo_bench import SMALL_CNN, _original
from delete.data import DatasetBundle, load_mnist5k, make_unlearning_splits
from delete.selection import SelectionConfig

_inverting: list[float] = []


def _timed_synthesize(*args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    try:
        return _synthesize(*args, **kwargs)
    finally:
        _inverting.append(time.perf_counter() - started)


_synthesize = auto.synthesize


def _model(name: str, bundle: DatasetBundle) -> nn.Module:
    """``small`` (the project's SmallCNN), ``zoo/NAME`` (a zoo member) or an outside recipe;
    ``@T`` after any of them divides its logits by ``T`` (``sharpen_cpu.md``'s soft models)."""
    torch.manual_seed(0)
    if "@" in name:
        base, temperature = name.rsplit("@", 1)
        return Tempered(_model(base, bundle), float(temperature)).eval()
    if name == "small":
        return _original(SMALL_CNN, bundle)
    if name.startswith("zoo/"):
        return _original(name[4:], bundle)
    return trained(name, bundle)


def main(specs: list[str]) -> None:
    torch.set_num_threads(1)
    auto.synthesize = _timed_synthesize  # type: ignore[attr-defined]  # to time it apart
    bundle = load_mnist5k(augment=False)
    for spec in specs:
        name, digits, *rest = spec.split(":")
        model = _model(name, bundle)
        if rest == ["head-only"]:
            freeze_all_but_head(model)
            name += " (head only)"
        for digit in (int(d) for d in digits.split(",")):
            splits = make_unlearning_splits(bundle.train, bundle.test, [digit])
            _inverting.clear()
            row = request(model, splits, digit)
            ran_again = "images inverted from the original read" in row["stop"]
            out = {
                "model": name,
                "digit": digit,
                "retain_drop": row["retain_drop"],
                "test_forget": row["test_forget"],
                "epochs": row["epochs"],
                "kept_epoch": row["kept_epoch"],
                "seconds": row["seconds"],
                "inverting_seconds": round(sum(_inverting), 2),
                "ran_again": ran_again,
                "read": row["synthetic_check"],
            }
            if ran_again:
                off = request(
                    model, splits, digit, selection=SelectionConfig(synthetic_rerun_drop=None)
                )
                out |= {
                    "off_retain_drop": off["retain_drop"],
                    "off_test_forget": off["test_forget"],
                    "off_kept_epoch": off["kept_epoch"],
                    "off_seconds": off["seconds"],
                    "guard": row["stop"].rsplit("; ", 1)[-1],
                }
            print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
