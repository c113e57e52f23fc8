"""The MLflow model registry: versions, aliases, tags, and loading weights without unpickling.

A registered version is an MLflow ``onnx``-flavor model (``model.onnx``, served by
onnxruntime) whose ``extra_files`` are the PyTorch weights (``model.safetensors``) and the
architecture spec (``spec.json``). Nothing on any load path unpickles: unlearning reloads a
version by downloading the safetensors file and rebuilding the architecture from the spec
(:func:`delete.checkpoint.load_model`), after checking the file's SHA-256 against the tag
written at registration.

Versions are found by tags, not by names or stages (MLflow aliases ``@champion`` and
``@challenger`` replace stages). A version becomes visible to the pipeline only once it carries
``pipeline.complete = true``, the last tag written; a version without it is debris of a crashed
run and is deleted by the next run for the same request (it can never hold an alias, because
aliases are moved only after the completion tag).

The tracking URI is set inside the functions, never at import, from
:class:`~tasks.settings.PipelineSettings` (``MLFLOW_TRACKING_URI`` or SQLite under ``mlflow/``).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

import delete.applications  # noqa: F401 - registers the task architectures load_model rebuilds
from delete.checkpoint import file_sha256, load_model
from delete.errors import CheckpointError
from delete.models import ModelSpec
from tasks._common import PipelineError, one_line
from tasks._retry import IO_RETRY_POLICY
from tasks.settings import PipelineSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "LOCAL_MLFLOW_UI",
    "mlflow_page",
    "EXPERIMENT_NAME",
    "CHAMPION",
    "CHALLENGER",
    "TAG_REQUEST_ID",
    "TAG_COMPLETE",
    "TAG_ALIAS_APPLIED",
    "TAG_VERDICT",
    "TAG_WEIGHTS_SHA256",
    "RegistryError",
    "ModelNotFoundError",
    "ResolvedModel",
    "mlflow_client",
    "ensure_experiment",
    "create_run",
    "finish_run",
    "iso_to_millis",
    "display_round",
    "log_dataset_input",
    "onnx_signature",
    "describe_version",
    "set_version_description",
    "close_stale_runs",
    "log_to_run",
    "register_version",
    "find_version_for_request",
    "versions_for_request",
    "delete_incomplete_versions",
    "version_tags",
    "set_version_tags",
    "mark_complete",
    "set_alias",
    "get_alias",
    "resolve_model",
    "list_versions",
    "registered_model_exists",
    "registry_write_lock",
    "log_to_run_task",
    "register_version_task",
    "resolve_model_task",
]

EXPERIMENT_NAME = "compliance-unlearning"
CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_REQUEST_ID = "request_id"
TAG_CONTENT_HASH = "request.content_sha256"
TAG_COMPLETE = "pipeline.complete"
TAG_ALIAS_APPLIED = "pipeline.alias_applied"
TAG_VERDICT = "gate.verdict"
TAG_WEIGHTS_SHA256 = "weights_sha256"
_WEIGHTS_FILE = "model.safetensors"
_SPEC_FILE = "spec.json"
_MODEL_ARTIFACT = "model"
_MAX_TAG_CHARS = 4000


class RegistryError(PipelineError):
    """The registry cannot answer or was asked for something it does not hold."""


class ModelNotFoundError(RegistryError):
    """No such registered model, alias or version."""


@dataclass
class ResolvedModel:
    """A registered version loaded for unlearning (weights only, never unpickled).

    Attributes:
        name: Registered model name.
        version: Version number.
        model: The rebuilt PyTorch model, in eval mode.
        spec: Its architecture.
        weights_path: Local copy of ``model.safetensors``.
        weights_sha256: SHA-256 of that file (equal to the registered tag).
        run_id: MLflow run that produced the version.
        tags: The version's tags.
        aliases: Aliases pointing at it.
    """

    name: str
    version: int
    model: nn.Module
    spec: ModelSpec
    weights_path: Path
    weights_sha256: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)


# --- connection -----------------------------------------------------------------------------


def _is_embedded(settings: PipelineSettings) -> bool:
    return settings.mlflow_tracking_uri.startswith("sqlite:")


def mlflow_client(settings: PipelineSettings) -> MlflowClient:
    """An ``MlflowClient`` on the settings' tracking + registry URI (also set process-wide)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient

    if _is_embedded(settings):
        (settings.root / "mlflow").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


@contextmanager
def registry_write_lock(settings: PipelineSettings) -> Iterator[None]:
    """Serialise registry writes between processes (SQLite allows one writer at a time)."""
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.locks_dir / "mlflow-registry.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(settings: PipelineSettings, client: MlflowClient | None = None) -> str:
    """Id of the pipeline's experiment; created with the embedded artifact root when needed."""
    client = client or mlflow_client(settings)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if _is_embedded(settings):
        settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
        location = settings.mlflow_artifact_root.resolve().as_uri()
    with registry_write_lock(settings):
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(client.create_experiment(EXPERIMENT_NAME, artifact_location=location))


# --- runs -----------------------------------------------------------------------------------


def iso_to_millis(timestamp: str) -> int:
    """An ISO-8601 time (``utc_now()``'s format; naive means UTC) as epoch milliseconds.

    Example:
        >>> iso_to_millis("2026-11-26T02:26:53+00:00")
        1795660013000
        >>> iso_to_millis("2026-11-26T02:26:53Z") == iso_to_millis("2026-11-26T02:26:53")
        True
    """
    import datetime as dt

    moment = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


def create_run(
    settings: PipelineSettings,
    run_name: str,
    tags: Mapping[str, Any],
    *,
    start_time_ms: int | None = None,
) -> str:
    """Start an MLflow run in the pipeline experiment and return its id.

    ``start_time_ms`` back-dates the run to when the work began: the flow opens its run only
    once there is something to log, and without it the UI shows the run lasting under a second
    for minutes of work.
    """
    client = mlflow_client(settings)
    experiment_id = ensure_experiment(settings, client)
    run = client.create_run(
        experiment_id,
        start_time=start_time_ms,
        run_name=run_name,
        tags={k: _tag_value(v) for k, v in tags.items()},
    )
    return str(run.info.run_id)


def finish_run(
    settings: PipelineSettings,
    run_id: str,
    status: str = "FINISHED",
    *,
    end_time_ms: int | None = None,
) -> None:
    """Mark a run ``FINISHED`` or ``FAILED`` (at ``end_time_ms``, default now)."""
    mlflow_client(settings).set_terminated(run_id, status, end_time=end_time_ms)


def close_stale_runs(
    settings: PipelineSettings, request_id: str, finish: str | None = None
) -> list[str]:
    """End the runs of ``request_id`` still marked RUNNING: ``finish`` as FINISHED, others KILLED.

    Call it only while holding the model's lock: then no live process is working on the same
    request, and a RUNNING run is what a killed process left behind.

    Returns:
        The ids of the runs that were ended.
    """
    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.{TAG_REQUEST_ID} = '{request_id}' and attributes.status = 'RUNNING'",
    )
    ended = []
    for run in runs:
        run_id = run.info.run_id
        client.set_terminated(run_id, "FINISHED" if run_id == finish else "KILLED")
        ended.append(str(run_id))
    return ended


def _tag_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _MAX_TAG_CHARS else text[: _MAX_TAG_CHARS - 3] + "..."


def display_round(value: float, decimals: int = 4) -> float:
    """``value`` with ``decimals`` decimals, but never rounded to zero: small values keep
    ``decimals`` significant digits (an ONNX parity error of 3e-6 must not read 0).

    Example:
        >>> display_round(93.55555555555556)
        93.5556
        >>> display_round(3.814697265625e-06)
        3.815e-06
        >>> display_round(0.0), display_round(float("nan")) != display_round(float("nan"))
        (0.0, True)
    """
    import math

    if value == 0 or not math.isfinite(value):
        return value
    magnitude = math.floor(math.log10(abs(value)))
    return round(value, max(decimals, decimals - 1 - magnitude))


def log_to_run(
    settings: PipelineSettings,
    run_id: str,
    *,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, Any] | None = None,
    artifacts: Sequence[tuple[str | os.PathLike[str], str | None]] = (),
    dicts: Mapping[str, Any] | None = None,
    metric_decimals: int | None = 4,
) -> None:
    """Log params, metrics, tags, files (``(local_path, artifact_dir)``) and JSON dicts to a run.

    Metrics are rounded with :func:`display_round` to ``metric_decimals`` (``None``: as given):
    the MLflow UI prints every stored digit, and 93.55555555555556 % says nothing 93.5556 does
    not. The exact values stay in the audit record and the JSON artifacts.

    Safe to repeat: params are re-logged with the same values, files overwrite themselves.
    """
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.time import get_current_time_millis

    def shown(value: float) -> float:
        number = float(value)
        return number if metric_decimals is None else display_round(number, metric_decimals)

    client = mlflow_client(settings)
    now = get_current_time_millis()
    client.log_batch(
        run_id,
        metrics=[Metric(k, shown(v), now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, _tag_value(v)[:6000]) for k, v in (params or {}).items()],
        tags=[RunTag(k, _tag_value(v)) for k, v in (tags or {}).items()],
    )
    for local, artifact_dir in artifacts:
        path = Path(local)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_dir)
        else:
            client.log_artifact(run_id, str(path), artifact_dir)
    for artifact_file, payload in (dicts or {}).items():
        client.log_dict(run_id, payload, artifact_file)


def _dvc_source(details: Mapping[str, Any]) -> Any:
    """An ``mlflow.data`` source that points at a DVC-tracked path (shown as type ``dvc``).

    MLflow ships sources for files, HTTP and cloud stores, none of which says "this is the DVC
    pointer, fetch it with ``dvc pull`` at this md5"; the UI shows ``to_dict()`` as the source.
    """
    from mlflow.data.dataset_source import DatasetSource

    class DvcDatasetSource(DatasetSource):
        def __init__(self, payload: Mapping[str, Any]) -> None:
            self._payload = dict(payload)

        @staticmethod
        def _get_source_type() -> str:
            return "dvc"

        def load(self, **kwargs: Any) -> str:
            raise NotImplementedError("fetch the data with `dvc pull` at the recorded md5")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> DvcDatasetSource:
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return dict(self._payload)

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DvcDatasetSource:
            return cls(source_dict)

    return DvcDatasetSource(details)


def log_dataset_input(
    settings: PipelineSettings,
    run_id: str,
    *,
    name: str,
    path: str | os.PathLike[str],
    digest: str,
    context: str = "training",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record a DVC-tracked dataset as an input of the run (the UI's *Datasets* column).

    Args:
        name: The dataset's name (e.g. ``mnist5k`` or ``forget-set/<request_id>``).
        path: Its ``.dvc`` file (or the tracked path); shown relative to the project root.
        digest: The DVC md5 (MLflow keeps at most 36 characters: exactly an ``md5.dir``).
        context: ``mlflow.data.context`` tag, e.g. ``training`` or ``forget``.
        details: More source fields (``git_rev``, ``remote``...), shown with the source.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.validation import MAX_DATASET_DIGEST_SIZE

    location = Path(path)
    if location.is_absolute() and location.is_relative_to(settings.root):
        location = location.relative_to(settings.root)
    source = _dvc_source(
        {"path": str(location), "md5": digest, **{k: str(v) for k, v in (details or {}).items()}}
    )
    # The full md5 stays in the source; the digest column is capped by MLflow's store.
    # (mypy reads MetaDataset's `profile` as abstract; it is a concrete class at run time)
    dataset = MetaDataset(  # type: ignore[abstract]
        source, name=name, digest=digest[:MAX_DATASET_DIGEST_SIZE]
    )
    entity = DatasetInput(
        dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
    )
    mlflow_client(settings).log_inputs(run_id, [entity])


# --- versions -------------------------------------------------------------------------------


def registered_model_exists(settings: PipelineSettings, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client(settings).get_registered_model(name)
    except MlflowException:
        return False
    return True


def versions_for_request(
    settings: PipelineSettings, name: str, request_id: str
) -> list[tuple[int, dict[str, str]]]:
    """Every version tagged with ``request_id`` (complete or not), oldest first."""
    client = mlflow_client(settings)
    found = client.search_model_versions(f"name='{name}' and tags.{TAG_REQUEST_ID}='{request_id}'")
    return sorted((int(v.version), dict(v.tags)) for v in found)


def find_version_for_request(settings: PipelineSettings, name: str, request_id: str) -> int | None:
    """The complete version registered for ``request_id``, if any (the idempotency check)."""
    for version, tags in versions_for_request(settings, name, request_id):
        if tags.get(TAG_COMPLETE) == "true":
            return version
    return None


def delete_incomplete_versions(settings: PipelineSettings, name: str, request_id: str) -> list[int]:
    """Delete versions of ``request_id`` that never got the completion tag (crash debris)."""
    with registry_write_lock(settings):
        return _delete_incomplete(settings, name, request_id)


def _delete_incomplete(settings: PipelineSettings, name: str, request_id: str) -> list[int]:
    client = mlflow_client(settings)
    deleted: list[int] = []
    for version, tags in versions_for_request(settings, name, request_id):
        if tags.get(TAG_COMPLETE) != "true":
            client.delete_model_version(name, str(version))
            deleted.append(version)
    return deleted


def register_version(
    settings: PipelineSettings,
    *,
    name: str,
    run_id: str,
    model_dir: str | os.PathLike[str],
    tags: Mapping[str, Any],
) -> int:
    """Log ``model_dir`` (``model.onnx``, ``model.safetensors``, ``spec.json``) and register it.

    The version gets every tag in ``tags`` plus the weights' SHA-256, but *not* the completion
    tag: the caller adds it with :func:`mark_complete` once everything else is recorded. When
    the run already registered a complete version for the same ``request_id`` (a retried task),
    that version is returned instead of a new one.

    Returns:
        The version number.
    """
    import mlflow
    import numpy as np
    import onnx
    import onnxruntime

    directory = Path(model_dir)
    weights, spec_file, onnx_file = (
        directory / _WEIGHTS_FILE,
        directory / _SPEC_FILE,
        directory / "model.onnx",
    )
    for required in (weights, spec_file, onnx_file):
        if not required.is_file():
            raise RegistryError(
                f"cannot register {name}: {required.name} is missing in {directory}"
            )
    spec = ModelSpec.from_dict(json.loads(spec_file.read_text()))
    request_id = tags.get(TAG_REQUEST_ID)
    client = mlflow_client(settings)
    with registry_write_lock(settings):
        if request_id is not None:
            done = find_version_for_request(settings, name, str(request_id))
            if done is not None:
                return done
            _delete_incomplete(settings, name, str(request_id))  # an earlier, failed attempt
        all_tags = {k: _tag_value(v) for k, v in tags.items()}
        all_tags[TAG_WEIGHTS_SHA256] = file_sha256(weights)
        all_tags[TAG_COMPLETE] = "false"
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        onnx_model = onnx.load(str(onnx_file))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(
                onnx_model,
                name=_MODEL_ARTIFACT,
                # MLflow infers no signature from an ONNX input example (the UI then shows
                # "Inputs (0)"), so it is read from the graph itself.
                signature=onnx_signature(onnx_model),
                extra_files=[str(weights), str(spec_file)],
                input_example=np.zeros((1, spec.in_channels, *spec.input_hw), dtype=np.float32),
                pip_requirements=[
                    f"onnxruntime=={onnxruntime.__version__}",
                    f"numpy=={np.__version__}",
                ],
                onnx_execution_providers=providers,
                save_as_external_data=False,
            )
        if not registered_model_exists(settings, name):
            client.create_registered_model(
                name, description="Image classifier; versions made by the unlearning pipeline."
            )
        version = client.create_model_version(
            name, source=info.model_uri, run_id=run_id, tags=all_tags, model_id=info.model_id
        )
    return int(version.version)


def onnx_signature(model: Any) -> Any:
    """The MLflow ``ModelSignature`` of an ONNX graph: named tensors, dynamic axes as ``-1``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def specs(values: Any) -> Schema:
        out: list[ColSpec | TensorSpec] = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            dtype = tensor_dtype_to_np_dtype(tensor.elem_type)
            out.append(TensorSpec(dtype, shape, name=value.name))
        return Schema(out)

    initialisers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initialisers]
    return ModelSignature(inputs=specs(inputs), outputs=specs(model.graph.output))


def describe_version(
    *,
    request_id: str,
    forget_class_names: Sequence[str],
    verdict: str,
    alias: str | None = None,
    parent_version: int | None = None,
    method: str | None = None,
    reasons: Sequence[str] = (),
    evidently: str | None = None,
) -> str:
    """A short Markdown description for the version page: what, under which request, verdict.

    Example:
        >>> print(describe_version(request_id="forget-digit-7", forget_class_names=["7"],
        ...     verdict="passed", alias="champion", parent_version=1, method="delete"))
        Forgets class **7** from version 1 under request **forget-digit-7** (method delete).
        <BLANKLINE>
        Verdict: **passed**, alias @champion.
    """
    classes = ", ".join(str(c) for c in forget_class_names) or "none"
    noun = "class" if len(forget_class_names) == 1 else "classes"
    origin = f" from version {parent_version}" if parent_version is not None else ""
    how = f" (method {method})" if method else ""
    lines = [f"Forgets {noun} **{classes}**{origin} under request **{request_id}**{how}.", ""]
    outcome = f"Verdict: **{verdict}**" + (f", alias @{alias}" if alias else "")
    lines.append(outcome + (": " + "; ".join(reasons) if reasons else "") + ".")
    if evidently:
        lines += ["", evidently]
    return "\n".join(lines)


def set_version_description(
    settings: PipelineSettings, name: str, version: int, description: str
) -> None:
    """Replace a version's description (rendered as Markdown on its MLflow page)."""
    client = mlflow_client(settings)
    with registry_write_lock(settings):
        client.update_model_version(name, str(version), description=description)


def version_tags(settings: PipelineSettings, name: str, version: int) -> dict[str, str]:
    return dict(mlflow_client(settings).get_model_version(name, str(version)).tags)


def set_version_tags(
    settings: PipelineSettings, name: str, version: int, tags: Mapping[str, Any]
) -> None:
    client = mlflow_client(settings)
    with registry_write_lock(settings):
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, _tag_value(value))


def mark_complete(settings: PipelineSettings, name: str, version: int) -> None:
    """Write the completion tag: from now on the version exists for the pipeline."""
    set_version_tags(settings, name, version, {TAG_COMPLETE: "true"})


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    model = client.get_registered_model(name)
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def get_alias(settings: PipelineSettings, name: str, alias: str) -> int | None:
    """The version ``name@alias`` points at, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return _aliases(mlflow_client(settings), name).get(alias)
    except MlflowException:
        return None


def set_alias(settings: PipelineSettings, name: str, alias: str, version: int) -> int | None:
    """Point ``name@alias`` at ``version``; returns the version it pointed at before."""
    client = mlflow_client(settings)
    with registry_write_lock(settings):
        previous = _aliases(client, name).get(alias)
        client.set_registered_model_alias(name, alias, str(version))
    return previous


# --- loading --------------------------------------------------------------------------------


def _resolve_version(client: MlflowClient, ref: Any) -> tuple[int, dict[str, int]]:
    from mlflow.exceptions import MlflowException

    try:
        aliases = _aliases(client, ref.name)
    except MlflowException:
        raise ModelNotFoundError(f"unknown model {ref.name!r}: it is not registered") from None
    if getattr(ref, "version", None) is not None:
        try:
            client.get_model_version(ref.name, str(ref.version))
        except MlflowException:
            raise ModelNotFoundError(f"model {ref.name!r} has no version {ref.version}") from None
        return int(ref.version), aliases
    alias = getattr(ref, "alias", None) or CHAMPION
    if alias not in aliases:
        known = ", ".join(f"@{a}" for a in sorted(aliases)) or "none"
        raise ModelNotFoundError(f"model {ref.name!r} has no alias @{alias} (aliases: {known})")
    return aliases[alias], aliases


def resolve_model(
    settings: PipelineSettings, ref: Any, workdir: str | os.PathLike[str] | None = None
) -> ResolvedModel:
    """Download a version's weights and rebuild it (``ref``: ``ModelRef(name, alias, version)``).

    No alias and no version means ``@champion``.

    Raises:
        ModelNotFoundError: Unknown model, alias or version.
        RegistryError: The version is incomplete (a crashed run's debris).
        CheckpointError: The weights are corrupt, do not match their registered SHA-256, or do
            not fit the architecture.
    """
    import mlflow

    client = mlflow_client(settings)
    version, aliases = _resolve_version(client, ref)
    details = client.get_model_version(ref.name, str(version))
    tags = dict(details.tags)
    if tags.get(TAG_COMPLETE) != "true":
        raise RegistryError(f"model {ref.name} version {version} is incomplete; refusing to use it")
    target = (
        Path(workdir) if workdir else settings.artifacts_dir / "models" / ref.name / str(version)
    )
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    try:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{ref.name}/{version}/extra_files", dst_path=str(staging)
            )
        except Exception as exc:  # noqa: BLE001 - any store failure means the weights are gone
            raise CheckpointError(
                f"weights of {ref.name} version {version} cannot be downloaded: {one_line(exc)}"
            ) from exc
        found = list(Path(local).rglob(_WEIGHTS_FILE))
        if not found:
            raise CheckpointError(f"{ref.name} version {version} has no {_WEIGHTS_FILE}")
        weights = target / _WEIGHTS_FILE
        shutil.copyfile(found[0], weights)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    digest = file_sha256(weights)
    expected = tags.get(TAG_WEIGHTS_SHA256)
    if expected and digest != expected:
        raise CheckpointError(
            f"weights of {ref.name} version {version} do not match their registered SHA-256 "
            f"(got {digest[:12]}..., registered {expected[:12]}...): corrupt or tampered"
        )
    model, spec = load_model(weights)
    return ResolvedModel(
        name=ref.name,
        version=version,
        model=model,
        spec=spec,
        weights_path=weights,
        weights_sha256=digest,
        run_id=details.run_id,
        tags=tags,
        aliases=sorted(a for a, v in aliases.items() if v == version),
    )


def _iso_utc(millis: int | None) -> str | None:
    """MLflow's epoch milliseconds as an ISO-8601 UTC time (seconds precision).

    Example:
        >>> _iso_utc(1795660013450)
        '2026-11-26T02:26:53+00:00'
    """
    if millis is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC).isoformat(timespec="seconds")


def list_versions(settings: PipelineSettings, name: str | None = None) -> list[dict[str, Any]]:
    """Every version of ``name`` (or of every registered model), newest first.

    Each row: ``name, version, aliases, verdict, request_id, forget_classes,
    forget_class_names, complete, created, run_id``.
    """
    client = mlflow_client(settings)
    names = [name] if name else [m.name for m in client.search_registered_models()]
    rows: list[dict[str, Any]] = []
    for model_name in names:
        if not registered_model_exists(settings, model_name):
            continue
        aliases = _aliases(client, model_name)
        for v in client.search_model_versions(f"name='{model_name}'"):
            tags = dict(v.tags)
            rows.append(
                {
                    "name": model_name,
                    "version": int(v.version),
                    "aliases": sorted(a for a, n in aliases.items() if n == int(v.version)),
                    "verdict": tags.get(TAG_VERDICT),
                    "request_id": tags.get(TAG_REQUEST_ID),
                    "forget_classes": tags.get("forget_classes"),
                    "forget_class_names": tags.get("forget_class_names"),
                    "complete": tags.get(TAG_COMPLETE) == "true",
                    "created": _iso_utc(v.creation_timestamp),
                    "run_id": v.run_id,
                }
            )
    rows.sort(key=lambda r: (r["name"], -r["version"]))
    return rows


# --- Prefect tasks: retries only on the MLflow store I/O ------------------------------------

log_to_run_task = task(name="mlflow-log-run", cache_policy=NO_CACHE, **IO_RETRY_POLICY)(log_to_run)
register_version_task = task(
    name="mlflow-register-version", cache_policy=NO_CACHE, **IO_RETRY_POLICY
)(register_version)
resolve_model_task = task(name="load-model-version", cache_policy=NO_CACHE)(resolve_model)


#: Where ``unlearn ui`` (``mlflow ui``) serves an embedded store.
LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_page(
    settings: PipelineSettings,
    run_id: str,
    name: str | None = None,
    version: int | str | None = None,
) -> tuple[str, bool]:
    """The MLflow UI page of a model version (else of its run), and whether it needs the local
    UI started first (an embedded store) rather than being served by a tracking server.

    Example:
        >>> from types import SimpleNamespace
        >>> mlflow_page(SimpleNamespace(mlflow_tracking_uri="http://mlflow:5000/"), "r1", "m", 2)
        ('http://mlflow:5000/#/models/m/versions/2', False)
    """
    uri = settings.mlflow_tracking_uri.rstrip("/")
    served = uri.startswith(("http://", "https://"))
    base = uri if served else LOCAL_MLFLOW_UI
    page = f"{base}/#/models/{name}/versions/{version}" if name and version else None
    return page or f"{base}/#/runs/{run_id}", not served
