"""Benchmark of DELETE beyond classification: face identities, backdoor removal, segmentation.

For each task: the original model, Retrain (from scratch without the forgotten data, or on
clean data for the backdoor), DELETE, and every registered baseline that applies, all run
through :func:`delete.run_unlearning`. ``python -m delete.bench.applications --quick --out DIR``
writes ``DIR/applications.md`` and one CSV per task.

Example:
    >>> print(_markdown_table([{"method": "DELETE", "asr": 1.25, "seconds": 0.5}], ["asr"]))
    | method | asr | seconds |
    |---|---|---|
    | DELETE | 1.2 | 0.5 |
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from delete._device import resolve_device
from delete.api import run_unlearning
from delete.applications import get_task
from delete.bench.application_cases import (
    NOT_APPLICABLE,
    SKIPPED_EVERYWHERE,
    BenchCase,
    bench_cases,
)
from delete.errors import UnlearningError
from delete.methods import list_methods, method_info
from delete.models import ModelSpec, build_model
from delete.training import make_loader, train_classifier

__all__ = ["main", "run_application_benchmarks", "run_case"]

log = logging.getLogger(__name__)


def _size(dataset: Dataset) -> int:
    """``len`` of a map-style dataset (``Dataset`` itself does not declare ``__len__``)."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no length")
    return len(dataset)


def _cap(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most ``limit`` samples (the dataset itself when smaller)."""
    size = _size(dataset)
    if limit is None or size <= limit:
        return dataset
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:limit].sort().values.tolist())


def _row(
    method: str, metrics: Mapping[str, float], seconds: float, note: str = ""
) -> dict[str, Any]:
    return {"method": method, **metrics, "seconds": round(seconds, 1), "note": note}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _markdown_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    columns = ["method", *metrics, "seconds"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _baseline_hparams(case: BenchCase, name: str) -> dict[str, Any]:
    hparams = dict(case.baseline_hparams.get(name, {}))
    if case.baseline_epochs_cap is not None and "epochs" not in hparams:
        default_epochs = int(method_info(name)["defaults"]["epochs"])
        hparams["epochs"] = min(default_epochs, case.baseline_epochs_cap)
    return hparams


def run_case(
    case: BenchCase, device: torch.device, *, seed: int = 0
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Run one scenario; returns its table rows and the methods left out (name -> reason)."""
    spec = get_task(case.task)
    data = spec.load_data(**case.data_options)
    forget = case.forget_classes or spec.default_forget_classes(data)
    default = spec.model_spec(data)
    model_spec = ModelSpec(
        default.arch,
        default.num_classes,
        default.in_channels,
        default.image_size,
        {**default.kwargs, **case.model_kwargs},
    )

    def trained(dataset: Dataset) -> tuple[nn.Module, float]:
        started = time.perf_counter()
        torch.manual_seed(case.train.seed)  # the initial weights too, not only the training order
        model = build_model(model_spec)
        train_classifier(model, dataset, case.train, device, loss_fn=spec.train_loss(model))
        return model, time.perf_counter() - started

    rows: list[dict[str, Any]] = []
    original, seconds = trained(data.train)
    rows.append(_row("Original", spec.evaluate(original, data, forget, device), seconds))
    retrained, seconds = trained(spec.retrain_set(data, forget))
    rows.append(_row("Retrain", spec.evaluate(retrained, data, forget, device), seconds))

    forget_set = _cap(spec.forget_set(data, forget), case.forget_cap, seed)
    retain_set = _cap(spec.retain_set(data, forget), case.retain_cap, seed)
    log.info("%s: %d forget / %d retain samples", case.task, _size(forget_set), _size(retain_set))

    delete_hparams = spec.delete_hparams if case.delete_hparams is None else case.delete_hparams
    batch_size = case.batch_size or spec.unlearn_batch_size
    runs: list[tuple[str, str, dict[str, Any]]] = [("DELETE", "delete", dict(delete_hparams))]
    runs += [(label, "delete", dict(hparams)) for label, hparams in case.delete_variants]
    left_out: dict[str, str] = {}
    for name in list_methods():
        reason = SKIPPED_EVERYWHERE.get(name) or NOT_APPLICABLE.get(case.task, {}).get(name)
        if reason is not None:
            left_out[name] = reason
            continue
        runs.append((name, name, _baseline_hparams(case, name)))

    for label, method, hparams in runs:
        needs_retain = bool(method_info(method)["needs_retain"])
        # Fresh loaders per run: a shared one's shuffle order would depend on the rows before.
        forget_loader = make_loader(forget_set, batch_size, shuffle=True, seed=seed)
        retain_loader = make_loader(retain_set, batch_size, shuffle=True, seed=seed)
        started = time.perf_counter()
        try:
            result = run_unlearning(
                original,
                forget_loader,
                forget,
                method,
                device,
                retain_loader=retain_loader if needs_retain else None,
                progress=False,
                **hparams,
            )
        except UnlearningError as exc:  # e.g. a baseline's loss diverging: report, go on
            rows.append(_row(label, {}, time.perf_counter() - started, f"failed: {exc}"))
            continue
        seconds = time.perf_counter() - started
        note = ", ".join(f"{k}={v}" for k, v in hparams.items())
        rows.append(_row(label, spec.evaluate(result.model, data, forget, device), seconds, note))
    return rows, left_out


def _section(case: BenchCase, rows: list[dict[str, Any]], left_out: dict[str, str]) -> str:
    spec = get_task(case.task)
    parts = [
        f"## {case.title}",
        "",
        f"Task `{case.task}`; forgets {case.forget_label}. Metrics in %, time in seconds.",
        "",
        _markdown_table(rows, spec.headline),
        "",
        "Hyper-parameters: "
        + "; ".join(f"{r['method']}: {r['note'] or 'defaults'}" for r in rows[2:])
        + ".",
    ]
    caps = []
    if case.baseline_epochs_cap is not None:
        caps.append(f"epochs capped at {case.baseline_epochs_cap}")
    if case.retain_cap is not None:
        caps.append(f"retain set capped at {case.retain_cap} samples")
    parts += [
        "",
        "Baselines run with their registry defaults"
        + (f" ({', '.join(caps)})" if caps else "")
        + ", not tuned for this task.",
    ]
    for note in case.notes:
        parts += ["", note]
    if left_out:
        parts += [
            "",
            "Not run: " + "; ".join(f"`{k}` ({v})" for k, v in sorted(left_out.items())) + ".",
        ]
    return "\n".join(parts)


def run_application_benchmarks(
    quick: bool,
    out_dir: str | os.PathLike[str],
    *,
    device: str | torch.device = "auto",
    tasks: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Run the application scenarios; write ``applications.md`` and ``applications_<task>.csv``.

    Args:
        quick: Small data, few epochs, capped baselines (well under 4 minutes on 2 CPU cores).
        out_dir: Where the report and the CSVs go (created).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        tasks: Run only these tasks (default: all three).

    Returns:
        One table per task, keyed by task name.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    started = time.perf_counter()
    tables: dict[str, pd.DataFrame] = {}
    sections = [
        "# DELETE beyond classification",
        "",
        f"Mode: {'quick' if quick else 'full'}; device: {dev}.",
    ]
    for case in bench_cases(quick):
        if tasks is not None and case.task not in tasks:
            continue
        case_started = time.perf_counter()
        rows, left_out = run_case(case, dev)
        log.info("%s done in %.0f s", case.task, time.perf_counter() - case_started)
        table = pd.DataFrame(rows)
        table.to_csv(out / f"applications_{case.task}.csv", index=False)
        tables[case.task] = table
        sections += ["", _section(case, rows, left_out)]
    sections += ["", f"Total wall time: {time.perf_counter() - started:.0f} s."]
    (out / "applications.md").write_text("\n".join(sections) + "\n")
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m delete.bench.applications [--quick] [--out DIR] [--device D] [--tasks ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m delete.bench.applications",
        description="DELETE on face identities, backdoor removal and semantic segmentation.",
    )
    parser.add_argument("--quick", action="store_true", help="small data and few epochs")
    parser.add_argument("--out", default="bench_results", help="output folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", nargs="+", choices=["face", "backdoor", "segmentation"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    run_application_benchmarks(args.quick, args.out, device=args.device, tasks=args.tasks)
    print((Path(args.out) / "applications.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
