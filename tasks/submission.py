"""What ``unlearn submit`` checks before it queues a request: everything that needs no run.

A request that names an unregistered model, a missing alias, a class the model does not have,
or an id that is already taken would only fail at ``process``; these checks refuse it at the
door, reading the registry's names, aliases and tags (no weights are downloaded, no data is
read but the dataset's class list).

What only a run can tell (the data at the pinned DVC version, the forget set's size, the
classes of face, backdoor and segmentation models, which their task derives from the data,
the files of a declared repair set) is still checked by the ``unlearn`` flow.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from delete.applications import get_task
from delete.data import DatasetBundle, ImageTensorDataset
from delete.errors import InvalidClassError, InvalidRepairSetError
from delete.repair import check_repair_fraction
from tasks.applications import CLASSIFICATION, model_task
from tasks.dataset import DATASET_NAME, dataset_dir, resolve_forget_classes
from tasks.image_dataset import TAG_CLASS_NAMES, TAG_DATASET_PATH
from tasks.inbox import Inbox
from tasks.registry import TAG_COMPLETE, ModelNotFoundError, ModelRegistry
from tasks.requests import DeletionRequest, RequestError
from tasks.settings import PipelineSettings

__all__ = ["check_submission", "model_class_names"]


def check_submission(settings: PipelineSettings, request: DeletionRequest) -> None:
    """Refuse ``request`` when it cannot be applied as written (one-line reason).

    Checks that the model is registered and has the alias (or version) the request names,
    that the version is complete and of the request's task, that the forget classes exist in
    that model, and that the request id has not been applied already (``requests/done/`` or
    a registered version). Whether the id is queued or being processed is checked by
    :meth:`tasks.inbox.Inbox.submit` itself, under the inbox lock.

    Raises:
        RequestError: The request would be rejected.
    """
    _check_id_not_done(settings, request)
    tags = _version_tags(settings, request)
    task, _ = model_task(tags)
    if request.task != task:
        raise RequestError(
            f"model '{request.model}' is a {task} model but the request is a {request.task} "
            f"request; set task: {task} or name a {request.task} model"
        )
    names = model_class_names(settings, tags)
    if names is not None:
        _check_classes(names, tags.get(TAG_DATASET_PATH) or DATASET_NAME, request)
    _check_repair_set(task, request)


def _check_repair_set(task: str, request: DeletionRequest) -> None:
    """What a repair set's task tells without the data: whether it takes one, and how much
    of the training split it may be (files are matched against the data by the flow)."""
    declared = request.repair_set
    if declared is None:
        return
    spec = get_task(task)
    if spec.repair_step is None:
        raise RequestError(f"task {task} takes no repair set; remove repair_set")
    if declared.fraction is not None:
        try:
            check_repair_fraction(declared.fraction, spec.max_repair_fraction)
        except InvalidRepairSetError as exc:
            raise RequestError(str(exc)) from None


def _check_id_not_done(settings: PipelineSettings, request: DeletionRequest) -> None:
    done = [s for s in Inbox(settings).status(request.request_id) if s.state == "done"]
    if done:
        version = f" (version {done[-1].version})" if done[-1].version is not None else ""
        raise RequestError(
            f"request_id '{request.request_id}' is already done{version}; a new request needs "
            "a new id"
        )
    name = request.model_ref().name
    if not _no_store_yet(settings) and ModelRegistry.of(settings).registered_model_exists(name):
        applied = ModelRegistry.of(settings).find_version_for_request(name, request.request_id)
        if applied is not None:
            raise RequestError(
                f"request_id '{request.request_id}' is already applied as {name} version "
                f"{applied}; a new request needs a new id"
            )


def _no_store_yet(settings: PipelineSettings) -> bool:
    """The embedded SQLite store does not exist: nothing is registered (and looking would
    create an empty store as a side effect of a refused submit)."""
    prefix = "sqlite:///"
    uri = settings.mlflow_tracking_uri
    return uri.startswith(prefix) and not Path(uri[len(prefix) :]).exists()


def _version_tags(settings: PipelineSettings, request: DeletionRequest) -> dict[str, str]:
    ref = request.model_ref()
    if _no_store_yet(settings):
        raise RequestError(
            f"unknown model '{ref.name}': no model is registered under {settings.root} yet "
            "(unlearn bootstrap or unlearn register first)"
        )
    if not ModelRegistry.of(settings).registered_model_exists(ref.name):
        known = ", ".join(ModelRegistry.of(settings).model_names()) or "none"
        raise RequestError(
            f"unknown model '{ref.name}': it is not registered (registered: {known})"
        )
    try:
        # the registry's own resolution, so submit and the flow agree on what a ref names
        version, _ = ModelRegistry.of(settings).resolve_version(ref)
    except ModelNotFoundError as exc:
        raise RequestError(str(exc)) from None
    tags = ModelRegistry.of(settings).version_tags(ref.name, version)
    if tags.get(TAG_COMPLETE) != "true":
        raise RequestError(f"model {ref.name} version {version} is incomplete")
    return tags


def model_class_names(settings: PipelineSettings, tags: dict[str, str]) -> list[str] | None:
    """The class names of a model version, when they are known without reading its data.

    A registered team model records them (tag ``class_names``); the built-in MNIST
    classifier has the dataset's (``data/mnist5k/dataset.json``). ``None`` for task models
    (their classes are built from the data) and when the dataset is not checked out.
    """
    recorded = tags.get(TAG_CLASS_NAMES)
    if recorded:
        return [str(n) for n in json.loads(recorded)]
    task, _ = model_task(tags)
    if task != CLASSIFICATION:
        return None
    info = dataset_dir(settings) / "dataset.json"
    try:
        names = json.loads(info.read_text())["class_names"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [str(n) for n in names]


def _check_classes(names: list[str], dataset: str, request: DeletionRequest) -> None:
    # the flow's resolver on an empty bundle: same rules, same messages, no images read
    empty = ImageTensorDataset(torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long))
    try:
        resolve_forget_classes(DatasetBundle(dataset, empty, empty, names), request.forget_classes)
    except InvalidClassError as exc:
        raise RequestError(f"model '{request.model}': {exc}") from None
