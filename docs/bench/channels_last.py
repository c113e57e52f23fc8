"""Channels-last against the usual layout, per zoo model (not part of the library).

Times DELETE's training steps (256 MNIST-5k images in batches of 64, BatchNorm frozen as the
default candidates run it, SGD) and no-grad forwards of the same images (the teacher and the
per-epoch readings), each model in both layouts, on one thread; the median of five repeats.
Also prints the largest logit difference between the layouts. Prints a Markdown table:

    .venv/bin/python docs/bench/channels_last.py
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import Tensor, nn

from delete.bench.zoo import ZOO
from delete.bench.zoo_bench import SMALL_CNN, _original
from delete.data import load_mnist5k
from delete.engine import set_batchnorm_eval
from delete.losses import delete_loss

IMAGES, BATCH, REPEATS = 256, 64, 5


def _time(model: nn.Module, x: Tensor, teacher: Tensor, channels_last: bool) -> tuple[float, float]:
    student = copy.deepcopy(model)
    if channels_last:
        student.to(memory_format=torch.channels_last)
    student.train()
    set_batchnorm_eval(student)
    optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
    started = time.perf_counter()
    for i in range(0, IMAGES, BATCH):
        loss = delete_loss(student(x[i : i + BATCH]), teacher[i : i + BATCH], [3], 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = time.perf_counter()
    student.eval()
    with torch.no_grad():
        for i in range(0, IMAGES, BATCH):
            student(x[i : i + BATCH])
    return trained - started, time.perf_counter() - trained


def main() -> None:
    torch.set_num_threads(1)
    bundle = load_mnist5k(augment=False)
    x = torch.stack([bundle.train[i][0] for i in range(IMAGES)])
    print(
        "| model | train step, usual (ms/batch) | channels-last | forward, usual"
        " | channels-last | max logit diff |"
    )
    print("|---|---|---|---|---|---|")
    for name in [SMALL_CNN, *ZOO]:
        model = _original(name, bundle).eval()
        with torch.no_grad():
            teacher = model(x)
            last = copy.deepcopy(model).to(memory_format=torch.channels_last)
            diff = float((last(x) - teacher).abs().max())
        runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(REPEATS):
            for layout in (False, True):
                runs[layout].append(_time(model, x, teacher, layout))
        per_batch = IMAGES // BATCH
        cells = []
        for part in (0, 1):
            for layout in (False, True):
                ms = 1000 * statistics.median(r[part] for r in runs[layout]) / per_batch
                cells.append(f"{ms:.1f}")
        print(f"| {name} | {' | '.join(cells)} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
