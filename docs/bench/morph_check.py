"""What forget images carried by the original into kept classes read (``morph_check_cpu.md``;
not part of the library). The library's soft check (``SelectionConfig.soft_check_drop``) is
now the ``other80soft`` variant. The rows in ``morph_check_cpu.jsonl`` were read at commit
d2fc938, where the check was the guard's images carried on 40 steps: its column there is
``soft40``; run today, the ``library`` column repeats ``other80soft``.

The guard's images start from noise; on a network without BatchNorm nothing pulls them towards
real digits, and they can stay confident while the features real digits use drift. These start
from the forget images themselves and are carried (Adam on the pixels, as
``delete/selection/synthetic.py``) until the original puts them in a kept class: the class it
ranks first once the forgotten ones are masked (``top``, what DELETE trains the forget images
towards) or a seeded other kept class (``other``). Each request runs ``delete.unlearn``'s
defaults forget-only with the soft check inert; the row gives points of retained test accuracy
lost and, per variant, ``[images kept, points short]`` the kept state reads. (The rows in
``morph_check_cpu.jsonl`` were gathered in several runs, each with some of the variants; the
two at a larger step size, after the change, are in ``morph_check_lr_cpu.jsonl``.)

    PYTHONPATH=.:docs/bench .venv/bin/python docs/bench/morph_check.py groupnorm_cnn_sgd20:3/5/8 \\
        /tmp/gn0.pt:3/8  # a silu_cnn() state, as the behavioural test trains it
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import torch
from soft_check import _figures, each_request

import delete.selection.auto as auto
from delete.selection.synthetic import synthesize

_library_check: Any = auto._soft_check
_read: dict[str, Any] = {}
VARIANTS = {  # name: (target, steps, label smoothing, confidence, Adam's lr)
    "top20": ("top", 20, 0.0, 0.9, 0.1),
    "top40": ("top", 40, 0.0, 0.9, 0.1),
    "other20": ("other", 20, 0.0, 0.9, 0.1),
    "other40": ("other", 40, 0.0, 0.9, 0.1),
    "other40soft": ("other", 40, 0.111, 0.8, 0.1),
    "other60soft": ("other", 60, 0.111, 0.8, 0.1),
    "other80soft": ("other", 80, 0.111, 0.8, 0.1),  # the library's (soft_check_steps 80)
    "other40soft_lr2": ("other", 40, 0.111, 0.8, 0.2),
    "other40soft_lr3": ("other", 40, 0.111, 0.8, 0.3),
}


def _read_morphs(*args: Any, **kwargs: Any) -> Any:
    first, _, ctx, probe, config, _ = args
    inert = dataclasses.replace(config, soft_check_drop=1e9)
    _library_check(*args[:4], inert, args[5], **kwargs)
    _read["library"] = _figures(ctx.notes.get(auto.SOFT_NOTE, ""))
    x = probe.forget_inputs[:48]
    kept = list(ctx.retain_classes)
    with torch.no_grad():
        logits = ctx.original(x.to(ctx.device)).float().cpu()
    mask = torch.full_like(logits, float("-inf"))
    mask[:, kept] = 0
    top = (logits + mask).argmax(1)
    g = torch.Generator().manual_seed(0)
    shift = torch.randint(1, len(kept), (len(x),), generator=g)
    index = torch.tensor([kept.index(int(t)) for t in top])
    other = torch.tensor(kept)[(index + shift) % len(kept)]
    for name, (target, steps, smoothing, confidence, lr) in VARIANTS.items():
        images, labels = synthesize(
            ctx.original,
            probe.forget_inputs,
            kept,
            ctx.device,
            steps=steps,
            lr=lr,
            label_smoothing=smoothing,
            min_confidence=confidence,
            start=(x, top if target == "top" else other),
        )
        if len(labels) < 8:
            _read[name] = [len(labels), None]
            continue
        auto._short_on(first, ctx, probe, images, labels, key="morph", what="morphs", limit=1e9)
        _read[name] = _figures(ctx.notes["morph"])
    return first


def main(specs: list[str]) -> None:
    auto._soft_check = _read_morphs  # type: ignore[assignment]
    for name, digit, row in each_request(specs, _read.clear):
        print(
            json.dumps({"model": name, "digit": digit, "points_lost": row["retain_drop"], **_read}),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
