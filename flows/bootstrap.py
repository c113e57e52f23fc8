"""``bootstrap`` flow: version the dataset with DVC, train the original model, register it.

``task=`` bootstraps a model of another task from the same digits (``face``: the classes as
identities, ``backdoor``: a BadNets-poisoned training split, ``segmentation``: scenes of
digits); the version records the task and its data options in its tags, so unlearning
rebuilds the same data.

Every task, classification included, trains its :class:`~delete.applications.TaskSpec`'s
default architecture with the task's loss and recipe, and registers through
:func:`flows._original.register_original`, the code ``unlearn register`` uses.

Idempotent: a clean DVC workspace is kept, and a complete version tagged
``request_id=bootstrap`` is reused (``@champion`` is only set when the model has none, so a
re-run never demotes a model produced by later deletions).
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from typing import Any

import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.applications import get_task
from delete.data import DatasetBundle, RandomShift
from delete.models import ModelSpec, build_model
from delete.training import train_classifier
from flows._common import move_alias_task, settings_for
from flows._original import Original, register_original
from tasks.applications import DEFAULT_TASK_OPTIONS, default_model_name, evaluate_original
from tasks.audit import AuditLog, open_audit_log
from tasks.dataset import ensure_dataset_task, load_dataset_task, push_to_remote_task
from tasks.registry import CHAMPION, ModelRegistry
from tasks.settings import PipelineSettings

__all__ = ["BOOTSTRAP_REQUEST_ID", "bootstrap_flow", "check_task_options", "train_original"]

#: The ``request_id`` tag of the original model's version (the bootstrap's idempotency key).
BOOTSTRAP_REQUEST_ID = "bootstrap"


@task(name="train-original", cache_policy=NO_CACHE)
def train_original(
    task_name: str,
    bundle: DatasetBundle,
    options: dict[str, Any],
    epochs: int,
    seed: int,
    device: str,
) -> tuple[nn.Module, ModelSpec, dict[str, float]]:
    """Train the task's default architecture with its loss and recipe; its test metrics.

    The digits are random-shift augmented (segmentation composes its scenes from them).
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
    return model, model_spec, evaluate_original(task_name, model, data)


def check_task_options(task_name: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """The task's default data options under ``given``; an option its loader lacks is refused.

    Raises:
        ValueError: An option the task's data loader does not take (checked by the CLI before
            any flow starts, and again by the flow).
    """
    options = {**DEFAULT_TASK_OPTIONS.get(task_name, {}), **(given or {})}
    params = inspect.signature(get_task(task_name).load_data).parameters
    accepted = set(params) - {"bundle", "root", "dataset"}
    unknown = sorted(set(options) - accepted)
    # a loader taking **options (segmentation's dispatcher) checks its own keywords
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise ValueError(
            f"unknown {task_name} option(s) {unknown}; accepted: {', '.join(sorted(accepted))}"
        )
    return options


@flow(name="bootstrap", log_prints=True)
def bootstrap_flow(
    root: str | None = None,
    model_name: str | None = None,
    epochs: int = 10,
    max_per_class: int | None = None,
    seed: int = 0,
    device: str = "auto",
    task: str = "classification",
    task_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Materialise + ``dvc add`` + ``dvc push`` the data; train and register version 1 @champion.

    Args:
        root: Project root (``UNLEARN_HOME`` or the working directory when ``None``).
        model_name: Registered model name (default: the settings' ``registered_model``,
            suffixed with the task for the other tasks).
        epochs: Training epochs of the original (5: ~96% test accuracy, ~25 s on one CPU core).
        max_per_class: Keep only this many training images per class (small test roots).
        seed: Seed of the split, the initialisation and the shuffling.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``.
        task: ``classification`` (default), ``face``, ``backdoor`` or ``segmentation``.
        task_options: The task's data options (e.g. the backdoor's ``target`` and
            ``poison_rate``, the number of segmentation scenes), over
            :data:`tasks.applications.DEFAULT_TASK_OPTIONS`.

    Returns:
        ``{model, version, reused, data_version, champion, seconds}`` (and, when trained,
        ``task``, ``metrics``, ``onnx_path``).
    """
    started = time.perf_counter()
    settings = settings_for(root)
    get_task(task)  # an unknown task fails before any work
    options = check_task_options(task, task_options)
    name = model_name or default_model_name(settings.registered_model, task)
    audit = open_audit_log(settings)  # refuse to start without an audit key
    version = ensure_dataset_task(settings, max_per_class=max_per_class)
    push_to_remote_task(settings, ["data.dvc"])
    summary: dict[str, Any] = {"model": name, "data_version": version.to_dict()}

    reused = _reuse_existing(settings, audit, name)
    if reused is not None:
        print(f"bootstrap: reusing {name} version {reused['version']}; data {version.md5}")
        return {**summary, **reused, "seconds": time.perf_counter() - started}

    bundle, version = load_dataset_task(settings, version.md5)
    model, spec, metrics = train_original(task, bundle, options, epochs, seed, device)
    registered = register_original(
        settings,
        audit,
        Original(
            name=name,
            model=model,
            spec=spec,
            task=task,
            task_options=options,
            origin=BOOTSTRAP_REQUEST_ID,
            data_version=version,
            metrics=metrics,
            params={
                "arch": spec.arch,
                "epochs": epochs,
                "seed": seed,
                "max_per_class": max_per_class,
                "dataset": bundle.name,
            },
            tags={"train.epochs": epochs, "train.seed": seed},
            audit_event="model.bootstrapped",
        ),
    )
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "/" not in k)
    print(f"bootstrap: registered {task} model {name} version {registered.version} ({shown})")
    return {
        **summary,
        "version": registered.version,
        "reused": False,
        "champion": registered.champion,
        "task": task,
        "metrics": metrics,
        "onnx_path": registered.onnx_path,
        "seconds": time.perf_counter() - started,
    }


def _reuse_existing(
    settings: PipelineSettings, audit: AuditLog, name: str
) -> dict[str, Any] | None:
    """An earlier bootstrap's version of ``name`` (given @champion back if it lost it), as
    ``{version, reused, champion}``; ``None`` when there is none."""
    registry = ModelRegistry.of(settings)
    existing = registry.find_version_for_request(name, BOOTSTRAP_REQUEST_ID)
    if existing is None:
        return None
    if registry.get_alias(name, CHAMPION) is None:
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
    return {"version": existing, "reused": True, "champion": registry.get_alias(name, CHAMPION)}


if __name__ == "__main__":
    bootstrap_flow()
