"""Forget data only, with and without ``SelectionConfig.keep_by_rotated`` (keep_by_rotated_cpu.md).

For each model and digit, ``delete.unlearn``'s defaults run twice on MNIST-5k with forget data
only: ranking the epochs to keep by DELETE's loss alone (``keep_by_rotated=False``, the rule
before) and by DELETE's loss plus the retention term on rotated forget images (the default).
One JSON line per request and rule: points of retained test accuracy lost, test-forget, epochs,
the kept epoch and the chosen candidate. Models are the zoo's, the project's SmallCNN
(``small_cnn``) or the outside recipes of ``outside_models.py`` (``outside:NAME``).

    .venv/bin/python docs/bench/keep_by_rotated.py outside:efficientnet_adam 3,5,8
    .venv/bin/python docs/bench/keep_by_rotated.py bn_cnn_sgd 5
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from delete.bench.zoo_bench import SMALL_CNN, _original
from delete.data import DatasetBundle, load_mnist5k, make_unlearning_splits
from delete.selection import SelectionConfig


def _outside() -> ModuleType:
    """``outside_models.py`` beside this file (the docs are not a package)."""
    spec = importlib.util.spec_from_file_location(
        "outside_models", Path(__file__).with_name("outside_models.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _model(name: str, bundle: DatasetBundle, outside: ModuleType) -> nn.Module:
    if name.startswith("outside:"):
        return outside.trained(name.split(":", 1)[1], bundle)  # type: ignore[no-any-return]
    return _original(SMALL_CNN if name == "small_cnn" else name, bundle)


def main(name: str, digits: list[int]) -> None:
    torch.set_num_threads(1)
    outside = _outside()
    bundle = load_mnist5k(augment=False)
    model = _model(name, bundle, outside)
    for digit in digits:
        splits = make_unlearning_splits(bundle.train, bundle.test, [digit])
        for rule in (False, True):
            row = {"model": name, "digit": digit, "keep_by_rotated": rule}
            figures = outside.request(
                model, splits, digit, selection=SelectionConfig(keep_by_rotated=rule)
            )
            print(json.dumps({**row, **figures}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(d) for d in sys.argv[2].split(",")])
