"""The benchmark loop: train, retrain, unlearn with every method, evaluate, time."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from delete.api import run_unlearning, validate_forget_classes
from delete.bench.config import BenchConfig, BenchResult
from delete.bench.plot import plot_per_class_accuracy
from delete.bench.summary import summarize, to_markdown, write_csv
from delete.checkpoint import save_model
from delete.data import DatasetBundle, UnlearningSplits, load_dataset, make_unlearning_splits
from delete.errors import one_line
from delete.hparams import resolve_hparams
from delete.methods import get_method_class, list_methods
from delete.metrics import REPORT_METRICS, evaluate_unlearning
from delete.models import ModelSpec, build_model
from delete.training import TrainConfig, make_loader, train_classifier

__all__ = ["run_benchmark", "method_hparams", "RESULT_COLUMNS"]

log = logging.getLogger(__name__)

_REFERENCE = "retrain"

#: Columns of ``results.csv``, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "dataset",
    "seed",
    "scenario",
    "method",
    "needs_retain",
    "status",
    "seconds",
    "time_ratio",
    "eval_seconds",
    *REPORT_METRICS,
    "mia_svc_rate_entropy",
    "mia_svc_rate_m_entropy",
    "mia_svc_rate_prob",
    "mia_auc_loss_threshold",
    "per_class_test_accuracy",
    "hparams",
    "error",
)


def method_hparams(name: str, config: BenchConfig, seed: int) -> dict[str, Any]:
    """Hyper-parameters of ``name`` in this benchmark.

    Order of precedence: the method's config defaults, its module's
    ``RECOMMENDED_HPARAMS[dataset]`` (when the module defines one), then
    ``config.method_hparams[name]``; ``seed`` is the run's seed, ``epochs`` is scaled by
    ``config.epoch_scale`` and ``cache_teacher`` (DELETE) is on unless the unlearning loaders
    augment. Retrain gets the original model's recipe instead.

    Example:
        >>> method_hparams("delete", BenchConfig(dataset="digits", epoch_scale=0.5), 1)["seed"]
        1
    """
    cls = get_method_class(name)
    fields = {f.name: f.default for f in dataclasses.fields(cls.config_cls)}
    hparams: dict[str, Any] = {}
    if name == _REFERENCE:
        recipe = {
            "epochs": config.train_epochs,
            "lr": config.train_lr,
            "momentum": TrainConfig.momentum,
            "weight_decay": TrainConfig.weight_decay,
        }
        hparams.update({k: v for k, v in recipe.items() if k in fields})
    else:
        # The benchmark's rows are fixed settings (paper-faithful): no automatic selection.
        hparams.update(resolve_hparams(name, {}, dataset=config.dataset, auto=False))
    hparams.update(config.method_hparams.get(name, {}))
    if "seed" in fields:
        hparams["seed"] = seed
    if name != _REFERENCE and config.epoch_scale != 1.0 and "epochs" in fields:
        epochs = int(hparams.get("epochs", fields["epochs"]))
        hparams["epochs"] = max(1, math.ceil(epochs * config.epoch_scale))
    if "cache_teacher" in fields:
        # Without augmentation the teacher's logits never change: compute them once. With
        # augmentation a cache would pin one random view, so they are recomputed every step.
        explicit = config.method_hparams.get(name, {}).get("cache_teacher")
        hparams["cache_teacher"] = not config.augment_unlearning and explicit is not False
    return hparams


def _method_order(config: BenchConfig) -> list[str]:
    registered = list_methods()
    names = list(config.methods) if config.methods is not None else registered
    for name in names:
        get_method_class(name)  # UnknownMethodError with the list of known methods
    names = [n for n in dict.fromkeys(names) if n != _REFERENCE]
    first = [n for n in ("delete",) if n in names]
    no_retain = [n for n in names if n not in first and not get_method_class(n).needs_retain]
    retain = [n for n in names if n not in first and get_method_class(n).needs_retain]
    return first + no_retain + retain


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _scenario_name(classes: tuple[int, ...]) -> str:
    return "+".join(str(c) for c in classes)


class _Runner:
    """State shared by the runs of one benchmark (data, config, rows)."""

    def __init__(self, config: BenchConfig, bundle: DatasetBundle, bar: tqdm) -> None:
        self.config = config
        self.bundle = bundle
        self.bar = bar
        self.rows: list[dict[str, Any]] = []
        channels, size, _ = bundle.image_shape
        self.spec = ModelSpec("small_cnn", bundle.num_classes, channels, size)
        self.train_cfg = TrainConfig(
            epochs=config.train_epochs, lr=config.train_lr, batch_size=config.batch_size
        )

    def _loader(self, dataset: Any, seed: int, *, augment: bool) -> Any:
        data = dataset if augment else dataset.with_transform(None)
        return make_loader(data, self.config.batch_size, shuffle=True, seed=seed)

    def _save(self, model: nn.Module, name: str) -> None:
        if self.config.out_dir is not None and self.config.save_models:
            save_model(
                model, self.spec, Path(self.config.out_dir) / "models" / f"{name}.safetensors"
            )

    def train_original(self, seed: int) -> tuple[nn.Module, float]:
        self.bar.set_postfix_str(f"seed {seed}: training the original model")
        torch.manual_seed(seed)
        model = build_model(self.spec)
        started = time.perf_counter()
        train_classifier(
            model,
            self.bundle.train,
            dataclasses.replace(self.train_cfg, seed=seed),
            self.config.device,
        )
        seconds = time.perf_counter() - started
        self._save(model, f"original_seed{seed}")
        return model, seconds

    def retrain(
        self, original: nn.Module, splits: UnlearningSplits, seed: int
    ) -> tuple[nn.Module, float, dict[str, Any]]:
        """Retrain from scratch without the forget classes: the registered method, else directly."""
        if _REFERENCE in list_methods():
            hparams = method_hparams(_REFERENCE, self.config, seed)
            started = time.perf_counter()
            result = run_unlearning(
                original,
                self._loader(splits.train_forget, seed, augment=False),
                splits.forget_classes,
                _REFERENCE,
                self.config.device,
                retain_loader=self._loader(splits.train_retain, seed, augment=True),
                progress=False,
                **hparams,
            )
            return result.model, time.perf_counter() - started, hparams
        torch.manual_seed(seed)
        model = build_model(self.spec)
        started = time.perf_counter()
        config = dataclasses.replace(self.train_cfg, seed=seed)
        train_classifier(model, splits.train_retain, config, self.config.device)
        return model, time.perf_counter() - started, dataclasses.asdict(config)

    def record(
        self,
        *,
        seed: int,
        splits: UnlearningSplits,
        method: str,
        model: nn.Module | None,
        seconds: float,
        reference: nn.Module | None,
        reference_seconds: float | None,
        hparams: Mapping[str, Any],
        error: str = "",
    ) -> None:
        row: dict[str, Any] = {
            "dataset": self.config.dataset,
            "seed": seed,
            "scenario": _scenario_name(splits.forget_classes),
            "method": method,
            "needs_retain": method == _REFERENCE
            or (method != "original" and get_method_class(method).needs_retain),
            "status": "ok" if model is not None else "failed",
            "seconds": seconds,
            "time_ratio": seconds / reference_seconds
            if reference_seconds and method != "original" and model is not None
            else float("nan"),
            "hparams": json.dumps(dict(hparams), sort_keys=True, default=str),
            "error": error,
        }
        if model is not None:
            started = time.perf_counter()
            report = evaluate_unlearning(
                model,
                splits,
                self.config.device,
                reference=reference,
                mia=self.config.mia,
                seed=seed,
                max_shadow=self.config.mia_max_shadow,
            )
            row["eval_seconds"] = time.perf_counter() - started
            row.update(report.to_dict())
            details = report.mia_details
            for feature in ("entropy", "m_entropy", "prob"):
                row[f"mia_svc_rate_{feature}"] = details.get(f"svc_member_rate_{feature}")
            row["mia_auc_loss_threshold"] = details.get("auc_auc_loss_threshold")
            row["per_class_test_accuracy"] = json.dumps(
                [round(v, 4) for v in report.per_class_test_accuracy]
            )
        self.rows.append({col: row.get(col, float("nan")) for col in RESULT_COLUMNS})
        if self.config.out_dir is not None:
            # Rewritten after every run: an interrupted benchmark keeps what it measured.
            write_csv(self.rows, Path(self.config.out_dir) / "results.csv", RESULT_COLUMNS)
        self.bar.update(1)

    def unlearn(
        self, name: str, original: nn.Module, splits: UnlearningSplits, seed: int
    ) -> tuple[nn.Module | None, float, dict[str, Any], str]:
        hparams = method_hparams(name, self.config, seed)
        augment = self.config.augment_unlearning
        needs_retain = get_method_class(name).needs_retain
        started = time.perf_counter()
        try:
            result = run_unlearning(
                original,
                self._loader(splits.train_forget, seed, augment=augment),
                splits.forget_classes,
                name,
                self.config.device,
                retain_loader=self._loader(splits.train_retain, seed, augment=augment)
                if needs_retain
                else None,
                progress=False,
                **hparams,
            )
        except Exception as exc:  # noqa: BLE001 - one broken method must not sink the benchmark
            message = f"{type(exc).__name__}: {one_line(str(exc))}"
            log.warning("%s failed on %s (seed %d): %s", name, splits.forget_classes, seed, message)
            return None, time.perf_counter() - started, hparams, message
        return result.model, time.perf_counter() - started, hparams, ""

    def run_scenario(
        self,
        seed: int,
        classes: tuple[int, ...],
        original: nn.Module,
        train_seconds: float,
        methods: list[str],
    ) -> None:
        """Retrain, evaluate the original and the reference, then every method, for one scenario."""
        splits = make_unlearning_splits(self.bundle.train, self.bundle.test, classes)
        tag = f"seed {seed}, forget {_scenario_name(classes)}"
        self.bar.set_postfix_str(f"{tag}: retrain")
        reference, ref_seconds, ref_hparams = self.retrain(original, splits, seed)
        self._save(reference, f"retrain_seed{seed}_forget{_scenario_name(classes)}")
        self.record(
            seed=seed,
            splits=splits,
            method="original",
            model=original,
            seconds=train_seconds,
            reference=reference,
            reference_seconds=None,
            hparams=dataclasses.asdict(self.train_cfg),
        )
        self.record(
            seed=seed,
            splits=splits,
            method=_REFERENCE,
            model=reference,
            seconds=ref_seconds,
            reference=reference,
            reference_seconds=ref_seconds,
            hparams=ref_hparams,
        )
        for name in methods:
            self.bar.set_postfix_str(f"{tag}: {name}")
            model, seconds, hparams, error = self.unlearn(name, original, splits, seed)
            self.record(
                seed=seed,
                splits=splits,
                method=name,
                model=model,
                seconds=seconds,
                reference=reference,
                reference_seconds=ref_seconds,
                hparams=hparams,
                error=error,
            )


def run_benchmark(config: BenchConfig) -> BenchResult:
    """Run the benchmark described by ``config`` and write its files to ``config.out_dir``.

    For each seed: train the original SmallCNN; for each forget scenario: retrain from scratch
    without the forget classes (the reference), then unlearn with every method, timing each
    run (wall clock, evaluation excluded) and evaluating it with
    :func:`delete.metrics.evaluate_unlearning` against the retrained model.

    Returns:
        A :class:`BenchResult`; with ``out_dir`` set, ``results.csv``, ``summary.csv``,
        ``summary.md`` and ``per_class_accuracy.png`` are written there.
    """
    started = time.perf_counter()
    methods = _method_order(config)
    with _torch_threads(config.threads):
        bundle = load_dataset(config.dataset, root=config.data_root)
        scenarios = [validate_forget_classes(s, bundle.num_classes) for s in config.scenarios]
        runs_per_scenario = len(methods) + 2  # + original + retrain
        total = len(config.seeds) * len(scenarios) * runs_per_scenario
        with tqdm(total=total, desc="bench", disable=not config.progress, unit="run") as bar:
            runner = _Runner(config, bundle, bar)
            for seed in config.seeds:
                original, train_seconds = runner.train_original(seed)
                for classes in scenarios:
                    runner.run_scenario(seed, classes, original, train_seconds, methods)
    summary = summarize(runner.rows)
    markdown = to_markdown(summary, config)
    result = BenchResult(config, runner.rows, summary, markdown)
    if config.out_dir is not None:
        out = Path(config.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.files["results"] = write_csv(runner.rows, out / "results.csv", RESULT_COLUMNS)
        result.files["summary_csv"] = write_csv(summary, out / "summary.csv")
        result.files["summary_md"] = out / "summary.md"
        result.files["summary_md"].write_text(markdown + "\n", encoding="utf-8")
        result.files["plot"] = plot_per_class_accuracy(
            runner.rows, out / "per_class_accuracy.png", bundle.class_names
        )
    result.seconds = time.perf_counter() - started
    return result
