"""Soft models with the automatic selection's sharpening on and off (``sharpen_cpu.md``).

A model divided by a temperature, as calibration leaves it, or one that reads soft on its own
(the under-trained outside recipes), forgets each digit with ``delete.unlearn``'s defaults,
forget data only and with the pipeline's 500-image selection sample. One JSON line a request:
points of retained test accuracy lost, test-forget, epochs, the chosen candidate and the logit
scale the run recorded (``runtime["logit_scale"]``).

    .venv/bin/python docs/bench/sharpen.py convnext_adamw 4 3,5,8        # sharpening on
    .venv/bin/python docs/bench/sharpen.py convnext_adamw 4 3,5,8 off    # sharpen_below=None
    .venv/bin/python docs/bench/sharpen.py zoo:plain_cnn 4 3,5,8

Names are ``outside_models.py`` recipes, or ``zoo:NAME`` for a member of the model zoo.
"""

from __future__ import annotations

import json
import sys

import torch
from outside_models import request, trained

from delete.bench.zoo import Tempered
from delete.bench.zoo_bench import SELECTION_SAMPLE_SIZE, _original
from delete.data import load_mnist5k, make_unlearning_splits
from delete.selection import SelectionConfig
from delete.training import make_loader


def main(name: str, temperature: float, digits: list[int], sharpen: bool) -> None:
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    base = _original(name[4:], bundle) if name.startswith("zoo:") else trained(name, bundle)
    model = Tempered(base, temperature).eval()
    selection = SelectionConfig() if sharpen else SelectionConfig(sharpen_below=None)
    for digit in digits:
        splits = make_unlearning_splits(bundle.train, bundle.test, [digit])
        g = torch.Generator().manual_seed(0)
        sample = splits.train_retain.subset(
            torch.randperm(len(splits.train_retain), generator=g)[:SELECTION_SAMPLE_SIZE]
        )
        for mode, loader in (("forget-only", None), ("selection", sample)):
            figures = request(
                model,
                splits,
                digit,
                selection=selection,
                selection_loader=None
                if loader is None
                else make_loader(loader, 250, shuffle=False),
            )
            row = {
                "model": name,
                "temperature": temperature,
                "sharpen": sharpen,
                "digit": digit,
                "mode": mode,
                **figures,
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(
        sys.argv[1],
        float(sys.argv[2]),
        [int(d) for d in sys.argv[3].split(",")],
        sys.argv[4:] != ["off"],
    )
