"""Forget-only, one kept class's rise on the guard's inverted images (``one_class_rise_cpu.md``;
not part of the library). ``SelectionConfig.one_class_rise`` (0.2) is the bound: beyond it
the last layer alone is trained and the state with the smaller rise is kept.

Each request runs ``delete.unlearn``'s defaults forget-only (``outside_models.request``) and
prints what the check read (``runtime["one_class_rise"]``). Where the last layer alone was
kept, it runs again with the check off (``one_class_rise=None``): the check only reads until
it fires, so a request that keeps its whole network keeps the same state without it. One JSON
line per run (``setting``: ``defaults`` or ``off``).

    PYTHONPATH=.:docs/bench .venv/bin/python docs/bench/one_class_rise.py \\
        groupnorm_cnn_sgd20_ls:3/5/8 small:3/5/8 resnet18:3/5/8 ...
"""

from __future__ import annotations

import json
import sys

from outside_models import request
from soft_check import each_split

from delete.selection import SelectionConfig

SETTINGS = {"defaults": SelectionConfig(), "off": SelectionConfig(one_class_rise=None)}
FIELDS = ("retain_drop", "test_forget", "epochs", "chosen", "seconds", "stop")


def main(specs: list[str]) -> None:
    for name, digit, model, splits in each_split(specs):
        for setting, config in SETTINGS.items():
            row = request(model, splits, digit, selection=config)
            head = {"model": name, "digit": digit, "setting": setting}
            read = {"rise": row["one_class_rise"]}
            print(json.dumps({**head, **read, **{k: row[k] for k in FIELDS}}), flush=True)
            if "head=" not in row["chosen"]:
                break  # the check did not fire: the same state without it


if __name__ == "__main__":
    main(sys.argv[1:])
