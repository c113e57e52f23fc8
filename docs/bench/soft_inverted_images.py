"""A lead, not in the library: images inverted towards a *soft* target read the feature drift
that the guard's confident images miss (``outside_more_recipes_cpu.md``, "A lead").

For each request (``NAME:D1/D2``; ``small`` is the project's SmallCNN), ``delete.unlearn``'s
defaults run forget-only; then 48 images are inverted from the original as the guard does
(``delete/selection/synthetic.py``) but with cross-entropy smoothed towards a target
probability (label smoothing 0.111, 0.3, 0.5: about 0.9, 0.73, 0.55 on the class) and kept at
0.8, 0.6, 0.4 or more; the row gives how many were kept and how many points below the
original the kept state reads them.

    PYTHONPATH=.:docs/bench .venv/bin/python docs/bench/soft_inverted_images.py \\
        groupnorm_cnn_sgd20:3/5/8,batchnorm_silu_cnn_sgd20:3/5/8,small:3/5/8
"""

from __future__ import annotations

import json
import sys

import torch
from outside_models import trained

from delete.api import run_unlearning
from delete.bench.zoo_bench import SMALL_CNN, _accuracy, _original
from delete.data import load_mnist5k, make_unlearning_splits
from delete.selection.synthetic import synthesize
from delete.training import make_loader


def main(specs: str) -> None:
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    for spec in specs.split(","):
        name, digits = spec.split(":")
        model = _original(SMALL_CNN, bundle) if name == "small" else trained(name, bundle)
        model.eval()
        for d in [int(v) for v in digits.split("/")]:
            splits = make_unlearning_splits(bundle.train, bundle.test, [d])
            kept = [c for c in range(10) if c != d]
            r = run_unlearning(
                model,
                make_loader(splits.train_forget, 64, shuffle=True, seed=0),
                [d],
                device="cpu",
                progress=False,
            )
            drop = round(
                _accuracy(model, splits.test_retain) - _accuracy(r.model, splits.test_retain), 2
            )
            fx = torch.stack([splits.train_forget[i][0] for i in range(64)])
            row = {
                "model": name,
                "digit": d,
                "drop": drop,
                "guard": r.runtime.get("synthetic_check", "")[:40],
            }
            for sm, mc in ((0.111, 0.8), (0.3, 0.6), (0.5, 0.4)):
                x, y = synthesize(
                    model, fx, kept, torch.device("cpu"), label_smoothing=sm, min_confidence=mc
                )
                with torch.no_grad():
                    a0 = (model(x).argmax(1) == y).float().mean().item() * 100 if len(y) else None
                    a1 = (
                        (r.model.eval()(x).argmax(1) == y).float().mean().item() * 100
                        if len(y)
                        else None
                    )
                row[f"s{sm}"] = (len(y), round(a0 - a1, 1) if a0 is not None else None)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
