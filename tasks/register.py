"""``unlearn register``'s checks: everything a card names is validated before any write.

:func:`validate_card` resolves the card's paths, reads the dataset layout, builds the
architecture, loads the weights (safetensors or a weights-only state_dict: nothing is ever
unpickled) and runs one preprocessed test image through the model. Only when all of that
holds, and the name is free, does the register flow touch DVC or MLflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.applications import UnknownTaskError, get_task
from delete.checkpoint import file_sha256, load_model
from delete.data import DatasetBundle
from delete.errors import CheckpointError, UnknownModelError
from delete.models import ModelSpec, build_model
from tasks._common import one_line
from tasks.applications import DEFAULT_TASK_OPTIONS, evaluate_original
from tasks.dataset import DatasetError
from tasks.image_dataset import (
    TAG_CLASS_NAMES,
    TAG_DATASET_MD5,
    TAG_DATASET_PATH,
    TAG_PREPROCESS,
    check_tracked_clean,
    dvc_file_for,
    read_image_folder,
)
from tasks.model_card import CardError, ModelCard, load_card
from tasks.registry import ModelRegistry
from tasks.settings import PipelineSettings

__all__ = [
    "REGISTER_REQUEST_ID",
    "WEIGHT_SUFFIXES",
    "ValidatedCard",
    "resolve_path",
    "model_spec_for",
    "validate_card",
    "card_tags",
    "validate_card_task",
]

#: The ``request_id`` tag of a registered version (as ``bootstrap`` is for the demo model).
REGISTER_REQUEST_ID = "register"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
# Builders that take these as explicit arguments (built-in names and torchvision:<name>);
# the card's values must agree with the dataset and the preprocessing.
_SPEC_ARGS = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ValidatedCard:
    """A card whose every claim was checked, with what the checks produced.

    Attributes:
        card: The parsed card.
        card_path: The card file.
        weights_path: The weights file (resolved).
        weights_sha256: SHA-256 of that file, as received.
        dataset_dir: The dataset folder (resolved, inside the project root).
        dataset_rel: Its path relative to the project root (what DVC tracks).
        spec: The architecture spec stored with the weights.
        model: The model with the weights loaded, in eval mode.
        bundle: The preprocessed, lazily-read train/test dataset.
        task_options: The task's data options (its defaults, then the card's).
        metrics: The task's evaluation of the model on the test split.
    """

    card: ModelCard
    card_path: Path
    weights_path: Path
    weights_sha256: str
    dataset_dir: Path
    dataset_rel: str
    spec: ModelSpec
    model: nn.Module
    bundle: DatasetBundle
    task_options: dict[str, Any]
    metrics: dict[str, float]


def resolve_path(value: str, card_dir: Path, root: Path, what: str) -> Path:
    """``value`` as written (absolute), else relative to the card's folder, then to the root.

    Raises:
        CardError: Found in neither place.
    """
    path = Path(value).expanduser()
    candidates = [path] if path.is_absolute() else [card_dir / path, root / path]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    where = " or ".join(str(c) for c in candidates)
    raise CardError(f"{what} {value!r} not found (looked for {where})")


def model_spec_for(card: ModelCard, num_classes: int) -> ModelSpec:
    """The architecture spec of a card for a dataset of ``num_classes`` class folders.

    Built-in and torchvision builders get ``num_classes`` and ``in_channels`` from the dataset
    and the preprocessing; the card's ``architecture_kwargs`` may repeat them but must agree.
    A ``package.module:callable`` gets exactly the card's kwargs.

    Raises:
        CardError: The kwargs contradict the dataset or the preprocessing.
    """
    kwargs = dict(card.architecture_kwargs)
    size = card.preprocess.size if isinstance(card.preprocess.size, int) else card.preprocess.hw
    imported = ":" in card.architecture and not card.architecture.startswith("torchvision:")
    if not imported:
        wanted = {"num_classes": num_classes, "in_channels": card.preprocess.channels}
        for key in _SPEC_ARGS:
            if key in kwargs and kwargs.pop(key) != wanted[key]:
                source = "class folders" if key == "num_classes" else "preprocess.channels"
                raise CardError(
                    f"architecture_kwargs.{key} is {card.architecture_kwargs[key]!r} but the "
                    f"dataset gives {wanted[key]} ({source})"
                )
    return ModelSpec(
        card.architecture,
        num_classes=num_classes,
        in_channels=card.preprocess.channels,
        image_size=size,
        kwargs=kwargs,
    )


def _inside_root(dataset_dir: Path, root: Path, value: str) -> str:
    try:
        rel = dataset_dir.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise CardError(
            f"dataset {value!r} ({dataset_dir}) is outside the project root {root}; DVC can only "
            "version folders inside it: move or copy it under the root"
        ) from None
    if rel in ("", "."):
        raise CardError("dataset must be a folder inside the project root, not the root itself")
    for parent in Path(rel).parents:
        if parent != Path(".") and (root / f"{parent.as_posix()}.dvc").exists():
            raise CardError(f"dataset {rel} lies inside {parent}, which DVC tracks as a whole")
    return rel


def _check_layout(dataset_dir: Path, rel: str) -> None:
    for split in ("train", "test"):
        if not (dataset_dir / split).is_dir():
            raise CardError(
                f"dataset {rel} has no {split}/ folder (expected {rel}/train/<class>/* and "
                f"{rel}/test/<class>/*)"
            )


def _load_weights(card: ModelCard, weights: Path, spec: ModelSpec) -> nn.Module:
    if weights.suffix.lower() not in WEIGHT_SUFFIXES:
        raise CardError(
            f"weights {weights.name}: unsupported file type {weights.suffix!r}; use "
            f"{', '.join(WEIGHT_SUFFIXES)} (a safetensors file or a PyTorch state_dict)"
        )
    try:
        # load_model reads .pt/.pth with torch.load(weights_only=True): a pickle payload is
        # refused before any of its code can run; safetensors cannot carry code at all.
        model, _ = load_model(weights, spec)
    except CheckpointError as exc:
        raise CardError(f"weights do not load into {card.architecture}: {one_line(exc)}") from None
    return model


def _check_forward(model: nn.Module, bundle: DatasetBundle, card: ModelCard) -> None:
    image = bundle.test[0][0].unsqueeze(0)
    try:
        with torch.no_grad():
            out = model(image)
    except Exception as exc:  # noqa: BLE001 - any failure means the input does not fit
        raise CardError(
            f"model {card.architecture} cannot take the preprocessed input "
            f"{tuple(image.shape[1:])}: {one_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != bundle.num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CardError(
            f"model {card.architecture} outputs {shape} for one image; a classifier of the "
            f"dataset's {bundle.num_classes} classes must output (1, {bundle.num_classes})"
        )


def _name_taken(settings: PipelineSettings, name: str) -> bool:
    """A registered model with at least one complete version. An interrupted ``register`` of
    the same name leaves at most incomplete debris, which the next one replaces."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return False  # no store yet; opening one would create it (and log about it) on refusal
    if not ModelRegistry.of(settings).registered_model_exists(name):
        return False
    return any(row["complete"] for row in ModelRegistry.of(settings).list_versions(name))


def validate_card(settings: PipelineSettings, card_path: str | Path) -> ValidatedCard:
    """Check a card completely, reading but writing nothing.

    Raises:
        CardError: The first problem, in one line (missing key, unknown architecture, weights
            that are pickled or do not fit, a dataset without ``test/``, test classes missing
            from ``train/``, a name already registered, ...).
    """
    path = Path(card_path)
    card = load_card(path)
    try:
        task_spec = get_task(card.task)
    except UnknownTaskError as exc:
        raise CardError(f"{path.name}: {one_line(exc)}") from None
    card_dir, root = path.resolve().parent, settings.root
    dataset_dir = resolve_path(card.dataset, card_dir, root, "dataset")
    rel = _inside_root(dataset_dir, root, card.dataset)
    _check_layout(dataset_dir, rel)
    try:
        bundle = read_image_folder(dataset_dir, card.preprocess, f"imagefolder:{rel}")
    except DatasetError as exc:
        raise CardError(f"dataset {rel}: {one_line(exc)}") from None
    if len(bundle.test) == 0 or len(bundle.train) == 0:
        raise CardError(f"dataset {rel} has no images in train/ or test/")
    spec = model_spec_for(card, bundle.num_classes)
    try:
        build_model(spec)
    except UnknownModelError as exc:
        raise CardError(f"architecture {card.architecture!r}: {one_line(exc)}") from None
    weights = resolve_path(card.weights, card_dir, root, "weights")
    model = _load_weights(card, weights, spec)
    _check_forward(model, bundle, card)
    options = {**DEFAULT_TASK_OPTIONS.get(card.task, {}), **card.task_options}
    try:  # the task's own data and evaluation: a model that does not fit its task stops here
        data = task_spec.load_data(bundle=bundle, **options)
        metrics = evaluate_original(card.task, model, data)
    except Exception as exc:  # noqa: BLE001 - any failure is the card's, said in one line
        raise CardError(f"model does not fit task {card.task!r}: {one_line(exc)}") from None
    if dvc_file_for(settings, rel).exists():
        try:
            check_tracked_clean(settings, rel)
        except DatasetError as exc:
            raise CardError(one_line(exc)) from None
    if _name_taken(settings, card.name):
        raise CardError(
            f"model {card.name!r} is already registered; register under a new name "
            "(a new version of it comes only from deletion requests)"
        )
    return ValidatedCard(
        card=card,
        card_path=path.resolve(),
        weights_path=weights,
        weights_sha256=file_sha256(weights),
        dataset_dir=dataset_dir,
        dataset_rel=rel,
        spec=spec,
        model=model,
        bundle=bundle,
        task_options=options,
        metrics=metrics,
    )


def card_tags(validated: ValidatedCard, dataset_md5: str) -> dict[str, Any]:
    """The card's tags on the registered version (what a deletion request rebuilds from)."""
    card = validated.card
    return {
        "architecture": card.architecture,
        "architecture.kwargs": json.dumps(card.architecture_kwargs, sort_keys=True),
        "model.spec": json.dumps(validated.spec.to_dict(), sort_keys=True),
        "weights.source": validated.weights_path.name,
        "weights.source_sha256": validated.weights_sha256,
        TAG_DATASET_PATH: validated.dataset_rel,
        TAG_DATASET_MD5: dataset_md5,
        TAG_PREPROCESS: card.preprocess.to_json(),
        TAG_CLASS_NAMES: json.dumps(list(validated.bundle.class_names)),
        "origin.name": card.name,
    }


validate_card_task = task(name="validate-model-card", cache_policy=NO_CACHE)(validate_card)
