"""``bootstrap`` flow: version the dataset with DVC, train the original model, register it.

``task=`` bootstraps a model of another task from the same digits (``face``: the classes as
identities, ``backdoor``: a BadNets-poisoned training split, ``segmentation``: scenes of
digits); the version records the task and its data options in its tags, so unlearning
rebuilds the same data.

Idempotent: a clean DVC workspace is kept, and a complete version tagged
``request_id=bootstrap`` is reused (``@champion`` is only set when the model has none, so a
re-run never demotes a model produced by later deletions).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
from pathlib import Path
from typing import Any

import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.applications import get_task
from delete.data import DatasetBundle, RandomShift
from delete.metrics import accuracy, per_class_accuracy, predict
from delete.models import ModelSpec, build_model
from delete.training import TrainConfig, train_classifier
from flows._common import current_flow_run_id, move_alias_task, settings_for, utc_now
from tasks._common import code_version
from tasks.applications import CLASSIFICATION, DEFAULT_TASK_OPTIONS, task_tags
from tasks.audit import open_audit_log
from tasks.dataset import ensure_dataset_task, load_dataset_task, push_to_remote_task
from tasks.export import package_model_task
from tasks.registry import (
    CHAMPION,
    TAG_ALIAS_APPLIED,
    TAG_REQUEST_ID,
    TAG_VERDICT,
    create_run,
    find_version_for_request,
    finish_run,
    get_alias,
    log_to_run_task,
    mark_complete,
    register_version_task,
    set_version_tags,
)

__all__ = ["BOOTSTRAP_REQUEST_ID", "bootstrap_flow", "train_original"]

#: The ``request_id`` tag of the original model's version (the bootstrap's idempotency key).
BOOTSTRAP_REQUEST_ID = "bootstrap"


@task(name="train-original", cache_policy=NO_CACHE)
def train_original(
    bundle: DatasetBundle, epochs: int, seed: int, device: str
) -> tuple[nn.Module, ModelSpec]:
    """Train a :class:`~delete.models.SmallCNN` on the training split (random-shift augmented)."""
    channels, height, _ = bundle.image_shape
    spec = ModelSpec(
        "small_cnn", num_classes=bundle.num_classes, in_channels=channels, image_size=height
    )
    torch.manual_seed(seed)
    model = build_model(spec)
    train_classifier(
        model,
        bundle.train.with_transform(RandomShift(2)),
        TrainConfig(epochs=epochs, seed=seed),
        device,
    )
    return model.cpu().eval(), spec


@task(name="train-task-original", cache_policy=NO_CACHE)
def train_task_original(
    task_name: str,
    bundle: DatasetBundle,
    options: dict[str, Any],
    epochs: int,
    seed: int,
    device: str,
) -> tuple[nn.Module, ModelSpec, dict[str, float]]:
    """Train the task's default architecture with its loss and recipe; its headline metrics.

    The digits are random-shift augmented, as for classification (segmentation composes its
    scenes from the raw digits).
    """
    spec = get_task(task_name)
    augmented = DatasetBundle(
        bundle.name, bundle.train.with_transform(RandomShift(2)), bundle.test, bundle.class_names
    )
    data = spec.load_data(bundle=augmented, **options)
    model_spec = spec.model_spec(data)
    torch.manual_seed(seed)
    model = build_model(model_spec)
    recipe = dataclasses.replace(spec.train_config, epochs=epochs, seed=seed)
    train_classifier(model, data.train, recipe, device, loss_fn=spec.train_loss(model))
    model = model.cpu().eval()
    measured = spec.evaluate(model, data, spec.default_forget_classes(data), torch.device("cpu"))
    metrics = {
        k: float(v)
        for k, v in measured.items()
        if k in spec.headline and isinstance(v, int | float) and math.isfinite(v)
    }
    return model, model_spec, metrics


@flow(name="bootstrap", log_prints=True)
def bootstrap_flow(
    root: str | None = None,
    model_name: str | None = None,
    epochs: int = 10,
    max_per_class: int | None = None,
    seed: int = 0,
    device: str = "auto",
    task: str = CLASSIFICATION,
    task_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Materialise + ``dvc add`` + ``dvc push`` the data; train and register version 1 @champion.

    Args:
        root: Project root (``UNLEARN_HOME`` or the working directory when ``None``).
        model_name: Registered model name (default: the settings' ``registered_model``).
        epochs: Training epochs of the original (5: ~96% test accuracy, ~25 s on one CPU core).
        max_per_class: Keep only this many training images per class (small test roots).
        seed: Seed of the split, the initialisation and the shuffling.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``.
        task: ``classification`` (default), ``face``, ``backdoor`` or ``segmentation``.
        task_options: The task's data options (e.g. the backdoor's ``target`` and
            ``poison_rate``, the number of segmentation scenes), over
            :data:`tasks.applications.DEFAULT_TASK_OPTIONS`.

    Returns:
        ``{model, version, reused, data_version, champion, seconds}``.
    """
    started = time.perf_counter()
    settings = settings_for(root)
    task_spec = get_task(task)  # an unknown task fails before any work
    options = (
        {} if task == CLASSIFICATION else {**DEFAULT_TASK_OPTIONS[task], **(task_options or {})}
    )
    params = inspect.signature(task_spec.load_data).parameters
    accepted = set(params) - {"bundle", "root", "dataset"}
    unknown = sorted(set(options) - accepted)
    # a loader taking **options (segmentation's dispatcher) checks its own keywords
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(
            f"unknown {task} option(s) {unknown}; accepted: {', '.join(sorted(accepted))}"
        )
    name = model_name or (
        settings.registered_model
        if task == CLASSIFICATION
        else f"{settings.registered_model}-{task}"
    )
    audit = open_audit_log(settings)  # refuse to start without an audit key
    version = ensure_dataset_task(settings, max_per_class=max_per_class)
    push_to_remote_task(settings, ["data.dvc"])

    existing = find_version_for_request(settings, name, BOOTSTRAP_REQUEST_ID)
    if existing is not None:
        if get_alias(settings, name, CHAMPION) is None:
            move_alias_task(
                settings,
                audit,
                name,
                CHAMPION,
                existing,
                reason="bootstrap: the model had no champion",
                verdict="n/a",
                request_id=None,
            )
        print(f"bootstrap: reusing {name} version {existing}; data {version.md5}")
        return {
            "model": name,
            "version": existing,
            "reused": True,
            "data_version": version.to_dict(),
            "champion": get_alias(settings, name, CHAMPION),
            "seconds": time.perf_counter() - started,
        }

    bundle, version = load_dataset_task(settings, version.md5)
    if task == CLASSIFICATION:
        model, spec = train_original(bundle, epochs, seed, device)
        logits, labels = predict(model, bundle.test, "cpu")
        per_class = per_class_accuracy(logits, labels, bundle.num_classes).tolist()
        metrics = {
            "acc_test": accuracy(logits, labels),
            **{f"acc_test_class_{i}": v for i, v in enumerate(per_class)},
        }
    else:
        model, spec, metrics = train_task_original(task, bundle, options, epochs, seed, device)
    package = package_model_task(model, spec, settings.artifacts_dir / "bootstrap" / "model")
    code = code_version()
    run_id = create_run(
        settings,
        run_name=f"bootstrap-{name}",
        tags={TAG_REQUEST_ID: BOOTSTRAP_REQUEST_ID, "prefect.flow_run_id": current_flow_run_id()},
    )
    log_to_run_task(
        settings,
        run_id,
        params={
            "arch": spec.arch,
            "epochs": epochs,
            "seed": seed,
            "max_per_class": max_per_class,
            "dataset": bundle.name,
            "data.dvc_md5": version.md5,
            "task": task,
            **{f"task.{k}": v for k, v in options.items()},
        },
        metrics=metrics,
        artifacts=[(package.weights_path, "model_files"), (package.onnx_path, "model_files")],
        dicts={"onnx_parity.json": package.parity, "code_version.json": code},
    )
    tags = {
        TAG_REQUEST_ID: BOOTSTRAP_REQUEST_ID,
        "origin": "bootstrap",
        "forget_classes": [],
        "data.dvc_md5": version.md5,
        "data.git_rev": version.git_rev or "none",
        "data.dvc_file_committed": str(version.dvc_file_committed).lower(),
        "code.git_sha": code["git_sha"],
        "code.package_version": code["package_version"],
        "code.git_dirty": str(code["git_dirty"]).lower(),
        "train.epochs": epochs,
        "train.seed": seed,
        **task_tags(task, options),
        **{f"metric.{k}": round(v, 4) for k, v in metrics.items() if not k.startswith("acc_test_")},
        "onnx_sha256": package.onnx_sha256,
        TAG_VERDICT: "n/a",
    }
    new_version = register_version_task(
        settings, name=name, run_id=run_id, model_dir=package.model_dir, tags=tags
    )
    mark_complete(settings, name, new_version)
    if get_alias(settings, name, CHAMPION) is None:
        move_alias_task(
            settings,
            audit,
            name,
            CHAMPION,
            new_version,
            reason="bootstrap: original model",
            verdict="n/a",
            request_id=None,
        )
    set_version_tags(settings, name, new_version, {TAG_ALIAS_APPLIED: "true"})
    audit.append(
        "model.bootstrapped",
        {
            "model": name,
            "version": new_version,
            "data_version": version.to_dict(),
            "code_version": code,
            "task": task,
            "task_options": options,
            "metrics": metrics,
            "weights_sha256": package.weights_sha256,
            "onnx_sha256": package.onnx_sha256,
            "mlflow_run_id": run_id,
            "flow_run_id": current_flow_run_id(),
            "at": utc_now(),
        },
    )
    finish_run(settings, run_id)
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if not k.startswith("acc_test_"))
    print(f"bootstrap: registered {task} model {name} version {new_version} ({shown})")
    return {
        "model": name,
        "version": new_version,
        "reused": False,
        "data_version": version.to_dict(),
        "champion": get_alias(settings, name, CHAMPION),
        "task": task,
        "acc_test": metrics.get("acc_test"),  # classification only; the rest are in metrics
        "metrics": metrics,
        "onnx_path": str(Path(package.onnx_path)),
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    bootstrap_flow()
