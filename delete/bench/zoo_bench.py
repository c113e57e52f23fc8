"""DELETE with its defaults on every zoo model: ``python -m delete.bench.zoo_bench``.

For each model (the zoo of :mod:`delete.bench.zoo` and the project's SmallCNN) and each
forget class it reports test-forget accuracy, the retained drop against the original, the
epochs used, the candidate chosen and the time against a Retrain of the same model (its
own recipe on the retained training images), in two modes:

* ``forget-only``: ``delete.unlearn`` defaults, forget images only;
* ``selection``: the pipeline's mode, with a seeded sample of 500 retained *training* images
  used only to select (the test split is what is reported);

and the paper-faithful fixed row (lr 1e-4, 20 epochs, BatchNorm in train mode, no clipping).

``--device cuda`` runs every step on the GPU (training under bf16 autocast, ``MethodConfig.amp``)
and names the device and precision in each row; the CPU stays the default.

``--forget-images N`` keeps the first ``N`` training images of each forget class only: a short
forget set (128 images are 2 optimizer steps a pass), where the selection's short-pass rules
apply (``SelectionConfig.per_pass``, ``short_forget_only``); test-forget is still the whole
class's test images.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from delete._device import resolve_device
from delete.api import run_unlearning
from delete.bench.zoo import ZOO, load_zoo_model, train_zoo_model
from delete.data import DatasetBundle, load_mnist5k, make_unlearning_splits
from delete.errors import InvalidDeviceError
from delete.metrics.predict import predict
from delete.models import ModelSpec, build_model
from delete.selection import SelectionConfig
from delete.training import TrainConfig, make_loader, train_classifier

__all__ = [
    "run_zoo_bench",
    "describe_device",
    "summarize_zoo",
    "write_zoo_tables",
    "PAPER_FAITHFUL",
    "SELECTION_SAMPLE_SIZE",
]

#: The paper's official setting, run as a fixed row next to the defaults.
PAPER_FAITHFUL: dict[str, Any] = {"lr": 1e-4, "epochs": 20, "freeze_bn": False}
#: Retained training images in the selection sample (the pipeline's default too).
SELECTION_SAMPLE_SIZE = 500
SMALL_CNN = "small_cnn (project)"


def _accuracy(model: nn.Module, dataset: Any, device: str = "cpu") -> float:
    logits, labels = predict(model, dataset, device)
    return round(100.0 * float((logits.argmax(1) == labels).float().mean()), 2)


def _small_cnn() -> nn.Module:
    """The project's SmallCNN with seeded initial weights (train_classifier seeds only the
    training itself, so an unseeded init gave a different original in every process)."""
    torch.manual_seed(0)
    return build_model(ModelSpec("small_cnn", 10, 1, 28))


def _original(name: str, bundle: DatasetBundle, device: str = "cpu") -> nn.Module:
    """The trained model: the SmallCNN with the project's recipe, else the cached zoo member
    (cached weights are the same on every device, so a GPU table unlearns the CPU's originals)."""
    if name == SMALL_CNN:
        model = _small_cnn()
        train_classifier(model, load_mnist5k(augment=True).train, TrainConfig(), device)
        return model.eval()
    return load_zoo_model(name, bundle, device=device)


def _sync(device: str) -> None:
    """Wait for queued GPU work, so that a wall-clock reading counts it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _retrain_seconds(
    name: str, bundle: DatasetBundle, forget: int, device: str = "cpu"
) -> tuple[float, float]:
    """Train the model's own recipe on the retained images only: (seconds, test-retain acc)."""
    splits = make_unlearning_splits(bundle.train, bundle.test, [forget])
    _sync(device)
    started = time.perf_counter()
    if name == SMALL_CNN:
        model = _small_cnn()
        aug = load_mnist5k(augment=True)
        retain = make_unlearning_splits(aug.train, aug.test, [forget]).train_retain
        train_classifier(model, retain, TrainConfig(), device)
    else:
        retained = DatasetBundle(bundle.name, splits.train_retain, bundle.test, bundle.class_names)
        model = train_zoo_model(ZOO[name], retained, device=device)
    _sync(device)
    return time.perf_counter() - started, _accuracy(model.eval(), splits.test_retain, device)


def describe_device(device: str) -> tuple[str, str]:
    """``(device name, precision)`` as a row records them.

    Example:
        >>> describe_device("cpu")
        ('cpu', 'fp32')
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        # MethodConfig.amp (on by default) trains under bf16 autocast on CUDA only.
        return torch.cuda.get_device_name(dev), "bf16 autocast"
    return dev.type, "fp32"


def run_zoo_bench(
    models: Sequence[str],
    classes: Sequence[int] = (3, 5, 8),
    *,
    paper_classes: int = 1,
    out: Path | None = None,
    forget_images: int | None = None,
    selection: SelectionConfig | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Run the table; returns its rows and writes ``zoo.csv``/``zoo.md`` under ``out``.
    ``forget_images`` keeps that many of each forget class's training images; ``selection``
    replaces the default :class:`~delete.selection.SelectionConfig` of the automatic rows;
    ``device`` runs everything there (Retrain included, so the time ratio compares like with
    like)."""
    device = str(resolve_device(device))  # a CUDA request without CUDA fails here, in one line
    bundle = load_mnist5k(augment=False)
    device_name, precision = describe_device(device)
    rows: list[dict[str, Any]] = []
    for name in models:
        model = _original(name, bundle, device)
        retrain_s, retrain_acc = _retrain_seconds(name, bundle, classes[0], device)
        for i, cls in enumerate(classes):
            splits = make_unlearning_splits(bundle.train, bundle.test, [cls])
            forget_set = splits.train_forget
            if forget_images is not None:
                forget_set = forget_set.subset(torch.arange(min(forget_images, len(forget_set))))
            before = _accuracy(model, splits.test_retain, device)
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(len(splits.train_retain), generator=g)[:SELECTION_SAMPLE_SIZE]
            auto: dict[str, Any] = {} if selection is None else {"selection": selection}
            modes: list[tuple[str, dict[str, Any]]] = [
                ("forget-only", auto),
                (
                    "selection",
                    {
                        **auto,
                        "selection_loader": make_loader(
                            splits.train_retain.subset(idx), 250, shuffle=False
                        ),
                    },
                ),
            ]
            if i < paper_classes:
                modes.append(("paper-fixed", dict(PAPER_FAITHFUL)))
            for mode, kwargs in modes:
                forget_loader = make_loader(forget_set, 64, shuffle=True, seed=0)
                result = run_unlearning(
                    model,
                    forget_loader,
                    [cls],
                    device=device,
                    progress=False,
                    cache_teacher=True,
                    **kwargs,
                )
                after = _accuracy(result.model, splits.test_retain, device)
                sel = result.selection
                row = {
                    "model": name,
                    "norm": "batchnorm" if name == SMALL_CNN else ZOO[name].norm_family,
                    "forget_class": cls,
                    "forget_images": len(forget_set),
                    "mode": mode,
                    "test_forget": _accuracy(result.model, splits.test_forget, device),
                    "retain_before": before,
                    "retain_after": after,
                    "retain_drop": round(before - after, 2),
                    "epochs": sel.epochs if sel else result.config.epochs,
                    "chosen": sel.chosen.label if sel else "fixed",
                    "stop": sel.stop_reason if sel else "fixed epochs",
                    "seconds": round(result.engine.seconds, 1),
                    "retrain_seconds": round(retrain_s, 1),
                    "time_vs_retrain": round(result.engine.seconds / retrain_s, 3),
                    "retrain_retain_acc": retrain_acc,
                    "device": device_name,
                    "precision": precision,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    if out is not None:
        write_zoo_tables(rows, out)
    return rows


def summarize_zoo(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, mode): worst test-forget, mean and worst retained drop, mean
    epochs and mean time against Retrain.

    Example:
        >>> r = dict(model="m", norm="none", mode="forget-only", test_forget=0.0,
        ...          retain_drop=1.0, epochs=10, time_vs_retrain=0.1)
        >>> summarize_zoo([r, {**r, "retain_drop": 3.0}])[0]["drop_mean"]
        2.0
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["mode"]), []).append(row)
    out = []
    for (model, mode), items in groups.items():
        n = len(items)
        out.append(
            {
                "model": model,
                "norm": items[0]["norm"],
                "mode": mode,
                "classes": n,
                "forget_max": max(r["test_forget"] for r in items),
                "drop_mean": round(sum(r["retain_drop"] for r in items) / n, 2),
                "drop_max": max(r["retain_drop"] for r in items),
                "epochs_mean": round(sum(r["epochs"] for r in items) / n, 1),
                "time_vs_retrain": round(sum(r["time_vs_retrain"] for r in items) / n, 3),
            }
        )
    return out


def _table(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]


def write_zoo_tables(rows: list[dict[str, Any]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "zoo.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    keep = (
        "model",
        "forget_class",
        "mode",
        "test_forget",
        "retain_before",
        "retain_drop",
        "epochs",
        "chosen",
        "time_vs_retrain",
    )
    detail = [{k: r[k] for k in keep} for r in rows]
    where = f"_Device: {rows[0]['device']}, precision: {rows[0]['precision']}._"
    text = [
        "## Summary",
        "",
        where,
        "",
        *_table(summarize_zoo(rows)),
        "",
        "## Every run",
        "",
        *_table(detail),
    ]
    (out / "zoo.md").write_text("\n".join(text) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join([SMALL_CNN, *ZOO]))
    parser.add_argument("--classes", default="3,5,8")
    parser.add_argument("--paper-classes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--forget-images", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (bf16 autocast)")
    parser.add_argument(
        "--min-delta-abs",
        type=float,
        default=None,
        help="the stopping rule's opt-in absolute floor (SelectionConfig.min_delta_abs)",
    )
    args = parser.parse_args(argv)
    try:
        device = str(resolve_device(args.device))
    except InvalidDeviceError as exc:
        parser.error(str(exc))
    if args.threads:
        torch.set_num_threads(args.threads)
    run_zoo_bench(
        [m.strip() for m in args.models.split(",")],
        [int(c) for c in args.classes.split(",")],
        paper_classes=args.paper_classes,
        out=args.out,
        forget_images=args.forget_images,
        selection=None
        if args.min_delta_abs is None
        else SelectionConfig(min_delta_abs=args.min_delta_abs),
        device=device,
    )


if __name__ == "__main__":
    main()
