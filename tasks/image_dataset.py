"""A team's own ImageFolder dataset under DVC: track it, and read it back at a recorded version.

``unlearn register`` tracks the card's dataset folder with ``dvc add`` (when it is not tracked
yet) and records on the model version where it is (``dataset.path``, relative to the project
root), its DVC md5 (``dataset.dvc_md5``), the preprocessing (``preprocess``, JSON) and the class
names (``class_names``, JSON). A deletion request against that model, or against any version
unlearned from it (:func:`lineage_tags` carries the tags down), rebuilds the same lazily-read
dataset from those tags alone (:func:`load_model_dataset`). Versions without the tags are the
MNIST demo's and read ``data/`` as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from delete.data import DatasetBundle, load_image_folder
from delete.errors import DatasetError as CoreDatasetError
from tasks._common import git_revision, one_line
from tasks.dataset import (
    DatasetError,
    DataVersion,
    DataVersionMismatchError,
    _git_file_committed,
    _normalise_md5,
    _read_dvc_file,
    _with_repo,
    ensure_dvc_repo,
    load_dataset_at_version,
)
from tasks.locks import dvc_repo_lock
from tasks.model_card import Preprocess
from tasks.settings import PipelineSettings

__all__ = [
    "TAG_DATASET_PATH",
    "TAG_DATASET_MD5",
    "TAG_PREPROCESS",
    "TAG_CLASS_NAMES",
    "LINEAGE_TAGS",
    "dvc_file_for",
    "tracked_version",
    "check_tracked_clean",
    "track_image_folder",
    "read_image_folder",
    "load_image_folder_at_version",
    "load_model_dataset",
    "lineage_tags",
    "track_image_folder_task",
    "load_model_dataset_task",
]

TAG_DATASET_PATH = "dataset.path"
TAG_DATASET_MD5 = "dataset.dvc_md5"
TAG_PREPROCESS = "preprocess"
TAG_CLASS_NAMES = "class_names"
#: Tags an unlearned version inherits from its parent, so that the next request against it
#: rebuilds the same architecture and data.
LINEAGE_TAGS: tuple[str, ...] = (
    TAG_DATASET_PATH,
    TAG_DATASET_MD5,
    TAG_PREPROCESS,
    TAG_CLASS_NAMES,
    "architecture",
    "architecture.kwargs",
    "origin.name",
)


def dvc_file_for(settings: PipelineSettings, rel: str) -> Path:
    """``<root>/<rel>.dvc``: the pointer ``dvc add <rel>`` writes."""
    return settings.root / f"{rel}.dvc"


def tracked_version(settings: PipelineSettings, rel: str) -> DataVersion:
    """The version ``<rel>.dvc`` records (the workspace is not checked)."""
    dvc_file = dvc_file_for(settings, rel)
    out = _read_dvc_file(dvc_file)
    return DataVersion(
        md5=out["md5"],
        git_rev=git_revision(settings.root),
        dvc_file_committed=_git_file_committed(settings.root, f"{rel}.dvc"),
        path=str(dvc_file),
        nfiles=out["nfiles"],
        size=out["size"],
    )


def _clean(settings: PipelineSettings, rel: str) -> bool:
    target = str(dvc_file_for(settings, rel))  # the API resolves paths against the cwd
    return _with_repo(settings, f"dvc status {rel}", lambda r: r.status(targets=[target])) == {}


def check_tracked_clean(settings: PipelineSettings, rel: str) -> None:
    """Refuse a tracked folder whose files differ from its ``.dvc`` pointer (read only)."""
    if dvc_file_for(settings, rel).exists() and not _clean(settings, rel):
        raise DatasetError(
            f"dataset {rel} differs from {rel}.dvc; version the change first (dvc add {rel})"
        )


def track_image_folder(settings: PipelineSettings, rel: str) -> DataVersion:
    """``dvc add`` the folder unless ``<rel>.dvc`` already tracks it; its version."""
    ensure_dvc_repo(settings)
    if not dvc_file_for(settings, rel).exists():
        with dvc_repo_lock(settings):
            _with_repo(settings, f"dvc add {rel}", lambda r: r.add([str(settings.root / rel)]))
    return tracked_version(settings, rel)


def read_image_folder(directory: Path, preprocess: Preprocess, name: str) -> DatasetBundle:
    """The lazily-decoded ``train/`` + ``test/`` bundle, preprocessed as the model expects."""
    try:
        return load_image_folder(
            directory / "train",
            preprocess.hw,
            test_root=directory / "test",
            augment=False,
            grayscale=preprocess.channels == 1,
            mean=preprocess.mean,
            std=preprocess.std,
            name=name,
        )
    except CoreDatasetError as exc:
        raise DatasetError(one_line(exc)) from None


def _sync(settings: PipelineSettings, rel: str, version: DataVersion) -> None:
    """Make the workspace folder match its ``.dvc`` pointer: checkout, else pull from the remote."""
    target = str(dvc_file_for(settings, rel))
    with dvc_repo_lock(settings):
        if (settings.root / rel).is_dir() and _clean(settings, rel):
            return
        try:
            _with_repo(settings, "dvc checkout", lambda r: r.checkout(targets=[target], force=True))
        except DatasetError:
            try:
                _with_repo(settings, "dvc pull", lambda r: r.pull(targets=[target], force=True))
            except DatasetError as exc:
                raise DatasetError(
                    f"dataset {rel} at {version.md5} is in neither the workspace, the DVC cache "
                    f"nor remote {settings.dvc_remote}"
                ) from exc
        if not _clean(settings, rel):
            raise DatasetError(f"{rel} does not match {rel}.dvc ({version.md5}) after checkout")


def load_image_folder_at_version(
    settings: PipelineSettings,
    rel: str,
    md5: str,
    preprocess: Preprocess,
    expected_md5: str | None = None,
) -> tuple[DatasetBundle, DataVersion]:
    """A registered dataset exactly at the DVC md5 its model version records.

    Raises:
        DataVersionMismatchError: ``<rel>.dvc`` (or the request) names another version.
        DatasetError: The version cannot be restored, or the folder is not an ImageFolder.
    """
    if not dvc_file_for(settings, rel).exists():
        raise DatasetError(f"dataset {rel} is not tracked by DVC here (no {rel}.dvc)")
    version = tracked_version(settings, rel)
    if _normalise_md5(version.md5) != _normalise_md5(md5):
        raise DataVersionMismatchError(
            f"the model was registered on {rel} at {md5} but {rel}.dvc now pins {version.md5}; "
            "register the new data as a new model instead"
        )
    if expected_md5 is not None and _normalise_md5(expected_md5) != _normalise_md5(md5):
        raise DataVersionMismatchError(
            f"request expects dataset version {expected_md5} but the model's data is {rel} at {md5}"
        )
    _sync(settings, rel, version)
    return read_image_folder(settings.root / rel, preprocess, f"imagefolder:{rel}"), version


def load_model_dataset(
    settings: PipelineSettings, tags: Mapping[str, str], expected_md5: str | None = None
) -> tuple[DatasetBundle, DataVersion]:
    """The dataset a model version was trained on, rebuilt from its registry tags.

    A version registered by ``unlearn register`` (or unlearned from one) reads its own
    ImageFolder at the recorded md5 with the recorded preprocessing; any other version reads
    the project's ``data/`` pinned by ``data.dvc``.
    """
    rel = tags.get(TAG_DATASET_PATH)
    if rel is None:
        return load_dataset_at_version(settings, expected_md5)
    try:
        preprocess = Preprocess.model_validate(json.loads(tags[TAG_PREPROCESS]))
        md5 = tags[TAG_DATASET_MD5]
    except (KeyError, ValueError) as exc:
        raise DatasetError(
            f"model version tags do not describe its dataset: {one_line(exc)}"
        ) from None
    bundle, version = load_image_folder_at_version(settings, rel, md5, preprocess, expected_md5)
    recorded = tags.get(TAG_CLASS_NAMES)
    if recorded is not None and json.loads(recorded) != list(bundle.class_names):
        raise DatasetError(
            f"dataset {rel} has classes {bundle.class_names} but the model was registered with "
            f"{recorded}"
        )
    return bundle, version


def lineage_tags(tags: Mapping[str, str]) -> dict[str, Any]:
    """The parent's tags a new version must carry on (see :data:`LINEAGE_TAGS`).

    Example:
        >>> lineage_tags({"dataset.path": "datasets/faces", "request_id": "r1"})
        {'dataset.path': 'datasets/faces'}
    """
    return {key: tags[key] for key in LINEAGE_TAGS if key in tags}


track_image_folder_task = task(name="dvc-add-dataset", cache_policy=NO_CACHE)(track_image_folder)
load_model_dataset_task = task(name="load-dataset", cache_policy=NO_CACHE)(load_model_dataset)
