"""What the forget-only soft check (``SelectionConfig.soft_check_drop``) reads, at 10, 20 and 40
steps, on the zoo, the SmallCNN and the outside models (``soft_check_cpu.md``; not part of the
library).

Each request runs ``delete.unlearn``'s defaults with forget data only, the check reading the
state kept but never acting on it (its bound set out of reach), once per step count, from the
same guard images. One JSON line per request: points of retained test accuracy lost with the
check inert, what the guard read, and per step count ``[images kept, points short]``.
A request where the guard itself fired has no reading (the check only runs where it did not).
It reads the check's first form, the guard's images carried on: run it at commit 96b1e2c (the
check now carries forget images, ``morph_check.py``).

    PYTHONPATH=.:docs/bench .venv/bin/python docs/bench/soft_check.py \\
        groupnorm_cnn_sgd20:3/5/8 small:3/5/8 resnet18:3/5/8
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from outside_models import request, trained
from torch import nn

import delete.selection.auto as auto
from delete.bench.zoo import ZOO, silu_cnn
from delete.bench.zoo_bench import SMALL_CNN, _original
from delete.data import DatasetBundle, UnlearningSplits, load_mnist5k, make_unlearning_splits

STEPS = (10, 20, 40)
_library_check: Any = auto._soft_check
_read: dict[int, str] = {}


def _read_at_every_count(*args: Any, start: Any) -> Any:
    first, _, ctx, _, config, _ = args
    for steps in STEPS:
        inert = dataclasses.replace(config, soft_check_steps=steps, soft_check_drop=1e9)
        _library_check(*args[:4], inert, args[5], start=start)
        _read[steps] = ctx.notes.get(auto.SOFT_NOTE, "")
    return first


def _figures(note: str) -> list[float] | str:
    """``[images, points short]`` from the check's note, or the note when it did not read."""
    if "points below" not in note:
        return note
    return [int(note.split()[0]), float(note.split("points below")[0].split()[-1])]


def original(name: str, bundle: DatasetBundle) -> nn.Module:
    """The model ``name`` names, in eval mode: ``small`` (the SmallCNN), a zoo member, the
    path of a ``silu_cnn()`` state (the behavioural tests' GroupNorm models) or an outside
    recipe of ``outside_models.py``."""
    if name == "small" or name in ZOO:
        model = _original(SMALL_CNN if name == "small" else name, bundle)
    elif name.startswith("/"):
        model = silu_cnn()
        model.load_state_dict(torch.load(name))
    else:
        model = trained(name, bundle)
    return model.eval()


def each_split(specs: list[str]) -> Iterator[tuple[str, int, nn.Module, UnlearningSplits]]:
    """``(model name, digit, model, splits)`` for every ``NAME:D1/D2`` of ``specs`` (MNIST-5k,
    one thread): what every script here runs its requests on."""
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    for spec in specs:
        name, digits = spec.split(":")
        model = original(name, bundle)
        for digit in (int(d) for d in digits.split("/")):
            yield name, digit, model, make_unlearning_splits(bundle.train, bundle.test, [digit])


def each_request(
    specs: list[str], before: Callable[[], None]
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(model name, digit, request row)`` for every request of :func:`each_split`,
    ``delete.unlearn``'s defaults forget-only (``outside_models.request``); ``before`` runs
    before each request (a reader clearing what it read)."""
    for name, digit, model, splits in each_split(specs):
        before()
        yield name, digit, request(model, splits, digit)


def main(specs: list[str]) -> None:
    auto._soft_check = _read_at_every_count  # type: ignore[assignment]
    for name, digit, row in each_request(specs, _read.clear):
        figures = {f"steps{k}": _figures(v) for k, v in _read.items()}
        print(
            json.dumps(
                {
                    "model": name,
                    "digit": digit,
                    "points_lost": row["retain_drop"],
                    "guard": row["synthetic_check"],
                    **figures,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
