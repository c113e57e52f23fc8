"""With a selection sample, where the last layer alone starts (``head_only_sample_cpu.md``; not
part of the library). ``SelectionConfig.head_only_sample_drop`` (1 point overall) and
``head_only_class_drop`` (5 points on one class) are the bounds; before them, one bound of 3
overall (``head_only_drop``) served both modes.

Each request runs ``delete.unlearn``'s defaults with the pipeline's 500-image selection sample
(``outside_models.request``). Where the last layer alone was kept, it runs again with the
former bound (3 overall, none on a class): the bounds only gate the head-only run, so a
request that keeps its whole network under the defaults keeps the same state under the former
bound. One JSON line per run (``setting``: ``defaults`` or ``former``).

    PYTHONPATH=.:docs/bench .venv/bin/python docs/bench/head_only_sample.py \\
        groupnorm_cnn_sgd20_ls:3/5/8 densenet_adamw:3/8 resnet18:3/5/8 ...
"""

from __future__ import annotations

import json
import sys

from outside_models import request, selection_loader
from soft_check import each_split

from delete.selection import SelectionConfig

SETTINGS = {
    "defaults": SelectionConfig(),
    "former": SelectionConfig(head_only_sample_drop=3.0, head_only_class_drop=None),
}
FIELDS = ("retain_drop", "test_forget", "epochs", "chosen", "seconds", "stop")


def main(specs: list[str]) -> None:
    for name, digit, model, splits in each_split(specs):
        for setting, config in SETTINGS.items():
            row = request(
                model, splits, digit, selection_loader=selection_loader(splits), selection=config
            )
            head = {"model": name, "digit": digit, "setting": setting}
            print(json.dumps({**head, **{k: row[k] for k in FIELDS}}), flush=True)
            if "head=" not in row["chosen"]:
                break


if __name__ == "__main__":
    main(sys.argv[1:])
