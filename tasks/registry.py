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

Everything that talks to MLflow goes through :class:`ModelRegistry`: one ``MlflowClient`` per
registry object, on the tracking and registry URIs of its
:class:`~tasks.settings.PipelineSettings` (``MLFLOW_TRACKING_URI`` or SQLite under
``mlflow/``), passed explicitly; MLflow's process-wide URI is never set, except around the
two calls of a registration that read it whatever the client says (see
:meth:`ModelRegistry.register_version`). Every
idempotent call retries transient I/O (:func:`tasks._retry.io_retrying`: a locked SQLite file,
a dropped connection), never a "not found" or a bad argument; the two calls that create
something (a run, a model version) look up what an earlier attempt created before trying again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

import delete.applications  # noqa: F401 - registers the task architectures load_model rebuilds
from delete.checkpoint import file_sha256, load_model
from delete.errors import CheckpointError
from delete.models import ModelSpec
from tasks._common import PipelineError, one_line
from tasks._retry import IO_RETRY_DELAYS_S, IO_RETRY_POLICY, io_retrying
from tasks.locks import registry_write_lock
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
    "ModelRegistry",
    "iso_to_millis",
    "display_round",
    "onnx_signature",
    "describe_version",
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
#: Run tag written at creation, so a retried ``create_run`` finds the run an attempt made.
TAG_CREATE_TOKEN = "pipeline.create_token"
_WEIGHTS_FILE = "model.safetensors"
_SPEC_FILE = "spec.json"
_MODEL_ARTIFACT = "model"
_MAX_TAG_CHARS = 4000
_NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"

_P = ParamSpec("_P")
_T = TypeVar("_T")


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


# --- helpers without MLflow state -----------------------------------------------------------


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


def _not_found(exc: BaseException) -> bool:
    """Whether ``exc`` is MLflow saying the model, version or alias does not exist."""
    return getattr(exc, "error_code", None) == _NOT_FOUND


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for the block, then put back what was there
    (mlflow's ``_use_tracking_uri`` would drop an ``MLFLOW_TRACKING_URI`` set by the user)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved_uri, saved_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # None is what mlflow holds before any set_tracking_uri: "unset" (its type says str)
        mlflow.set_tracking_uri(saved_uri)  # type: ignore[arg-type]
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def _retried(method: Callable[_P, _T]) -> Callable[_P, _T]:
    """Run an idempotent :class:`ModelRegistry` method under the registry's retry policy."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        registry = args[0]
        assert isinstance(registry, ModelRegistry)
        return registry._retrying(lambda: method(*args, **kwargs))

    return wrapper


class ModelRegistry:
    """The pipeline's MLflow tracking store and model registry, behind one cached client.

    Idempotent methods retry transient I/O with :func:`tasks._retry.io_retrying` (a call made
    inside another retried call is not retried again: the outer one repeats it). A "not found"
    is never retried; it raises :class:`ModelNotFoundError` with one line, or answers
    ``None``/``False`` where the question is "is there one".

    Args:
        settings: The installation (its ``mlflow_tracking_uri`` serves tracking and registry).
        retry_delays_s: Seconds before each retry (default :data:`~tasks._retry.IO_RETRY_DELAYS_S`).

    Example:
        >>> import tempfile
        >>> registry = ModelRegistry(PipelineSettings.from_env(tempfile.mkdtemp()))
        >>> registry.client is registry.client, registry.get_alias("nothing", CHAMPION)
        (True, None)
    """

    def __init__(
        self, settings: PipelineSettings, *, retry_delays_s: Sequence[float] = IO_RETRY_DELAYS_S
    ) -> None:
        self.settings = settings
        self.retry_delays_s = tuple(retry_delays_s)
        self._local = threading.local()  # per thread: inside a retried call or not

    @classmethod
    def of(cls, settings: PipelineSettings) -> ModelRegistry:
        """The process's registry for ``settings`` (one object, hence one client, per store)."""
        return _registry_of(settings)

    @functools.cached_property
    def client(self) -> MlflowClient:
        """The one ``MlflowClient``, on explicit tracking and registry URIs."""
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        if self.embedded:
            (self.settings.root / "mlflow").mkdir(parents=True, exist_ok=True)
        uri = self.settings.mlflow_tracking_uri
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    @property
    def embedded(self) -> bool:
        """Whether the store is the embedded SQLite one (else a tracking server)."""
        return self.settings.mlflow_tracking_uri.startswith("sqlite:")

    def _retrying(self, call: Callable[[], _T]) -> _T:
        if getattr(self._local, "inside", False):
            return call()
        self._local.inside = True
        try:
            result: _T = io_retrying(self.retry_delays_s)(call)
            return result
        finally:
            self._local.inside = False

    # --- runs -------------------------------------------------------------------------------

    @_retried
    def ensure_experiment(self) -> str:
        """Id of the pipeline's experiment; created with the embedded artifact root when needed.

        Idempotent by look-up: a retry finds the experiment an earlier attempt created.
        """
        experiment = self.client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is not None:
            return str(experiment.experiment_id)
        location = None
        if self.embedded:
            self.settings.mlflow_artifact_root.mkdir(parents=True, exist_ok=True)
            location = self.settings.mlflow_artifact_root.resolve().as_uri()
        with registry_write_lock(self.settings):
            experiment = self.client.get_experiment_by_name(EXPERIMENT_NAME)
            if experiment is not None:
                return str(experiment.experiment_id)
            return str(self.client.create_experiment(EXPERIMENT_NAME, artifact_location=location))

    def create_run(
        self, run_name: str, tags: Mapping[str, Any], *, start_time_ms: int | None = None
    ) -> str:
        """Start an MLflow run in the pipeline experiment and return its id.

        ``start_time_ms`` back-dates the run to when the work began: the flow opens its run
        only once there is something to log, and without it the UI shows the run lasting under
        a second for minutes of work.

        Creating a run is not idempotent, so a blind retry could leave two runs: the run is
        tagged with a fresh token, and a retry first looks for a run carrying it.
        """
        experiment_id = self.ensure_experiment()
        token = uuid.uuid4().hex
        run_tags = {k: _tag_value(v) for k, v in tags.items()} | {TAG_CREATE_TOKEN: token}
        attempts = 0

        def attempt() -> str:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                made = self.client.search_runs(
                    [experiment_id], filter_string=f"tags.`{TAG_CREATE_TOKEN}` = '{token}'"
                )
                if made:
                    return str(made[0].info.run_id)
            run = self.client.create_run(
                experiment_id, start_time=start_time_ms, run_name=run_name, tags=run_tags
            )
            return str(run.info.run_id)

        return self._retrying(attempt)

    @_retried
    def finish_run(
        self, run_id: str, status: str = "FINISHED", *, end_time_ms: int | None = None
    ) -> None:
        """Mark a run ``FINISHED`` or ``FAILED`` (at ``end_time_ms``, default now)."""
        self.client.set_terminated(run_id, status, end_time=end_time_ms)

    @_retried
    def close_stale_runs(self, request_id: str, finish: str | None = None) -> list[str]:
        """End the runs of ``request_id`` still RUNNING: ``finish`` as FINISHED, others KILLED.

        Call it only while holding the model's lock: then no live process is working on the
        same request, and a RUNNING run is what a killed process left behind.

        Returns:
            The ids of the runs that were ended.
        """
        experiment = self.client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is None:
            return []
        runs = self.client.search_runs(
            [experiment.experiment_id],
            filter_string=(
                f"tags.{TAG_REQUEST_ID} = '{request_id}' and attributes.status = 'RUNNING'"
            ),
        )
        ended = []
        for run in runs:
            run_id = run.info.run_id
            self.client.set_terminated(run_id, "FINISHED" if run_id == finish else "KILLED")
            ended.append(str(run_id))
        return ended

    def log_to_run(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, Any] | None = None,
        artifacts: Sequence[tuple[str | os.PathLike[str], str | None]] = (),
        dicts: Mapping[str, Any] | None = None,
        metric_decimals: int | None = 4,
    ) -> None:
        """Log params, metrics, tags, files (``(local_path, artifact_dir)``) and JSON dicts.

        Metrics are rounded with :func:`display_round` to ``metric_decimals`` (``None``: as
        given): the MLflow UI prints every stored digit, and 93.55555555555556 % says nothing
        93.5556 does not. The exact values stay in the audit record and the JSON artifacts.

        Safe to repeat (and retried): params are re-logged with the same values, metrics with
        the same timestamp, files overwrite themselves.
        """
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.time import get_current_time_millis

        def shown(value: float) -> float:
            number = float(value)
            return number if metric_decimals is None else display_round(number, metric_decimals)

        now = get_current_time_millis()
        metric_rows = [Metric(k, shown(v), now, 0) for k, v in (metrics or {}).items()]
        param_rows = [Param(k, _tag_value(v)[:6000]) for k, v in (params or {}).items()]
        tag_rows = [RunTag(k, _tag_value(v)) for k, v in (tags or {}).items()]
        self._retrying(
            lambda: self.client.log_batch(
                run_id, metrics=metric_rows, params=param_rows, tags=tag_rows
            )
        )
        for local, artifact_dir in artifacts:
            path = Path(local)
            log = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
            self._retrying(functools.partial(log, run_id, str(path), artifact_dir))
        for artifact_file, payload in (dicts or {}).items():
            self._retrying(functools.partial(self.client.log_dict, run_id, payload, artifact_file))

    @_retried
    def log_dataset_input(
        self,
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
            run_id: The run.
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
        if location.is_absolute() and location.is_relative_to(self.settings.root):
            location = location.relative_to(self.settings.root)
        source = _dvc_source(
            {
                "path": str(location),
                "md5": digest,
                **{k: str(v) for k, v in (details or {}).items()},
            }
        )
        # The full md5 stays in the source; the digest column is capped by MLflow's store.
        # (mypy reads MetaDataset's `profile` as abstract; it is a concrete class at run time)
        dataset = MetaDataset(  # type: ignore[abstract]
            source, name=name, digest=digest[:MAX_DATASET_DIGEST_SIZE]
        )
        entity = DatasetInput(
            dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)]
        )
        self.client.log_inputs(run_id, [entity])

    # --- versions ---------------------------------------------------------------------------

    @_retried
    def registered_model_exists(self, name: str) -> bool:
        """Whether ``name`` is a registered model."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException as exc:
            if _not_found(exc):
                return False
            raise
        return True

    @_retried
    def model_names(self) -> list[str]:
        """The names of every registered model, sorted."""
        return sorted(m.name for m in self.client.search_registered_models())

    @_retried
    def versions_for_request(self, name: str, request_id: str) -> list[tuple[int, dict[str, str]]]:
        """Every version tagged with ``request_id`` (complete or not), oldest first."""
        found = self.client.search_model_versions(
            f"name='{name}' and tags.{TAG_REQUEST_ID}='{request_id}'"
        )
        return sorted((int(v.version), dict(v.tags)) for v in found)

    def find_version_for_request(self, name: str, request_id: str) -> int | None:
        """The complete version registered for ``request_id``, if any (the idempotency check)."""
        for version, tags in self.versions_for_request(name, request_id):
            if tags.get(TAG_COMPLETE) == "true":
                return version
        return None

    @_retried
    def delete_incomplete_versions(self, name: str, request_id: str) -> list[int]:
        """Delete versions of ``request_id`` that never got the completion tag (crash debris)."""
        with registry_write_lock(self.settings):
            return self._delete_incomplete(name, request_id)

    def _delete_incomplete(self, name: str, request_id: str) -> list[int]:
        deleted: list[int] = []
        for version, tags in self.versions_for_request(name, request_id):
            if tags.get(TAG_COMPLETE) != "true":
                self.client.delete_model_version(name, str(version))
                deleted.append(version)
        return deleted

    def register_version(
        self,
        *,
        name: str,
        run_id: str,
        model_dir: str | os.PathLike[str],
        tags: Mapping[str, Any],
    ) -> int:
        """Log ``model_dir`` (``model.onnx``, ``model.safetensors``, ``spec.json``), register it.

        The version gets every tag in ``tags`` plus the weights' SHA-256, but *not* the
        completion tag: the caller adds it with :meth:`mark_complete` once everything else is
        recorded. When a complete version already exists for the same ``request_id`` (a
        retried task), that version is returned instead of a new one.

        The registry calls retry transient I/O; logging the model (several uploads) does not,
        and is retried as a whole by :data:`register_version_task`, which comes back here and
        replaces what the failed attempt left.

        Returns:
            The version number.
        """
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
        request_id = tags.get(TAG_REQUEST_ID)
        with registry_write_lock(self.settings):
            if request_id is not None:
                done = self.find_version_for_request(name, str(request_id))
                if done is not None:
                    return done
                # an earlier, failed attempt
                self._retrying(lambda: self._delete_incomplete(name, str(request_id)))
            all_tags = {k: _tag_value(v) for k, v in tags.items()}
            all_tags[TAG_WEIGHTS_SHA256] = file_sha256(weights)
            all_tags[TAG_COMPLETE] = "false"
            model_uri, model_id = self._log_onnx_model(run_id, directory)
            return self._create_version(name, run_id, model_uri, model_id, all_tags)

    def _log_onnx_model(self, run_id: str, directory: Path) -> tuple[str, str | None]:
        import mlflow
        import numpy as np
        import onnx
        import onnxruntime

        spec = ModelSpec.from_dict(json.loads((directory / _SPEC_FILE).read_text()))
        available = onnxruntime.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        onnx_model = onnx.load(str(directory / "model.onnx"))
        # MLflow's fluent API is unavoidable here: log_model has no MlflowClient form (it
        # builds the MLmodel, creates the LoggedModel and links it to the run through the
        # active run), so the process-wide URI points at this store for the call only.
        with (
            _fluent_tracking_uri(self.settings.mlflow_tracking_uri),
            mlflow.start_run(run_id=run_id),
        ):
            info = mlflow.onnx.log_model(
                onnx_model,
                name=_MODEL_ARTIFACT,
                # MLflow infers no signature from an ONNX input example (the UI then shows
                # "Inputs (0)"), so it is read from the graph itself.
                signature=onnx_signature(onnx_model),
                extra_files=[str(directory / _WEIGHTS_FILE), str(directory / _SPEC_FILE)],
                input_example=np.zeros((1, spec.in_channels, *spec.input_hw), dtype=np.float32),
                pip_requirements=[
                    f"onnxruntime=={onnxruntime.__version__}",
                    f"numpy=={np.__version__}",
                ],
                onnx_execution_providers=providers,
                save_as_external_data=False,
            )
        return str(info.model_uri), info.model_id

    def _create_version(
        self,
        name: str,
        run_id: str,
        model_uri: str,
        model_id: str | None,
        tags: Mapping[str, str],
    ) -> int:
        """Register ``model_uri`` as a new version of ``name`` (the model created if missing).

        Creating a version is not idempotent, so a retry first looks for the version an
        earlier attempt may have created from the same run and source.
        """
        attempts = 0

        def attempt() -> int:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                for v in self.client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
                    if v.source == model_uri:
                        return int(v.version)
            if not self.registered_model_exists(name):
                self.client.create_registered_model(
                    name, description="Image classifier; versions made by the unlearning pipeline."
                )
            # MLflow's SQL registry resolves a ``models:/<model id>`` source through the
            # process-wide tracking store, not the client's, hence the scoped URI here too.
            with _fluent_tracking_uri(self.settings.mlflow_tracking_uri):
                version = self.client.create_model_version(
                    name, source=model_uri, run_id=run_id, tags=dict(tags), model_id=model_id
                )
            return int(version.version)

        return self._retrying(attempt)

    @_retried
    def set_version_description(self, name: str, version: int, description: str) -> None:
        """Replace a version's description (rendered as Markdown on its MLflow page)."""
        with registry_write_lock(self.settings):
            self._model_version_call(
                name, version, self.client.update_model_version, description=description
            )

    @_retried
    def version_tags(self, name: str, version: int) -> dict[str, str]:
        """The tags of ``name`` version ``version``.

        Raises:
            ModelNotFoundError: No such model or version.
        """
        return dict(self._model_version_call(name, version, self.client.get_model_version).tags)

    @_retried
    def set_version_tags(self, name: str, version: int, tags: Mapping[str, Any]) -> None:
        """Set (overwrite) tags of a version.

        Raises:
            ModelNotFoundError: No such model or version.
        """
        with registry_write_lock(self.settings):
            for key, value in tags.items():
                self._model_version_call(
                    name, version, self.client.set_model_version_tag, key, _tag_value(value)
                )

    def mark_complete(self, name: str, version: int) -> None:
        """Write the completion tag: from now on the version exists for the pipeline."""
        self.set_version_tags(name, version, {TAG_COMPLETE: "true"})

    def _model_version_call(
        self, name: str, version: int, call: Callable[..., _T], *args: Any, **kwargs: Any
    ) -> _T:
        from mlflow.exceptions import MlflowException

        try:
            return call(name, str(version), *args, **kwargs)
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelNotFoundError(f"model {name!r} has no version {version}") from None
            raise

    # --- aliases ----------------------------------------------------------------------------

    @_retried
    def aliases(self, name: str) -> dict[str, int]:
        """``{alias: version}`` of ``name``.

        Raises:
            ModelNotFoundError: ``name`` is not registered.
        """
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if _not_found(exc):
                raise ModelNotFoundError(f"unknown model {name!r}: it is not registered") from None
            raise
        return {alias: int(version) for alias, version in (model.aliases or {}).items()}

    @_retried
    def get_alias(self, name: str, alias: str) -> int | None:
        """The version ``name@alias`` points at, or ``None`` (also when ``name`` is unknown)."""
        try:
            return self.aliases(name).get(alias)
        except ModelNotFoundError:
            return None

    def set_alias(self, name: str, alias: str, version: int) -> int | None:
        """Point ``name@alias`` at ``version``; returns the version it pointed at before.

        Each step retries on its own, so a retried move still reports the version before it.
        """
        with registry_write_lock(self.settings):
            previous = self.aliases(name).get(alias)
            self._retrying(
                lambda: self.client.set_registered_model_alias(name, alias, str(version))
            )
        return previous

    # --- loading ----------------------------------------------------------------------------

    @_retried
    def resolve_version(self, ref: Any) -> tuple[int, dict[str, int]]:
        """The version ``ref`` (``ModelRef(name, alias, version)``) names, and ``{alias: version}``.

        No alias and no version means ``@champion``.

        Raises:
            ModelNotFoundError: Unknown model, alias or version.
        """
        aliases = self.aliases(ref.name)
        if getattr(ref, "version", None) is not None:
            self._model_version_call(ref.name, int(ref.version), self.client.get_model_version)
            return int(ref.version), aliases
        alias = getattr(ref, "alias", None) or CHAMPION
        if alias not in aliases:
            known = ", ".join(f"@{a}" for a in sorted(aliases)) or "none"
            raise ModelNotFoundError(f"model {ref.name!r} has no alias @{alias} (aliases: {known})")
        return aliases[alias], aliases

    @_retried
    def resolve_model(
        self, ref: Any, workdir: str | os.PathLike[str] | None = None
    ) -> ResolvedModel:
        """Download a version's weights and rebuild it (``ref``: ``ModelRef(name, alias, ...)``).

        No alias and no version means ``@champion``. Retried whole on transient I/O (a failed
        download included); the weights land in a fresh staging folder each time.

        Raises:
            ModelNotFoundError: Unknown model, alias or version.
            RegistryError: The version is incomplete (a crashed run's debris).
            CheckpointError: The weights are corrupt, do not match their registered SHA-256,
                or do not fit the architecture.
        """
        version, aliases = self.resolve_version(ref)
        details = self._model_version_call(ref.name, version, self.client.get_model_version)
        tags = dict(details.tags)
        if tags.get(TAG_COMPLETE) != "true":
            raise RegistryError(
                f"model {ref.name} version {version} is incomplete; refusing to use it"
            )
        default = self.settings.artifacts_dir / "models" / ref.name / str(version)
        target = Path(workdir) if workdir else default
        weights = self._download_weights(ref.name, version, target)
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

    def _download_weights(self, name: str, version: int, target: Path) -> Path:
        import mlflow

        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
        try:
            try:
                # the version's own artifact location: a ``models:/`` URI would be resolved
                # through MLflow's process-wide registry URI, whatever is passed here
                source = self.client.get_model_version_download_uri(name, str(version))
                local = mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{source.rstrip('/')}/extra_files",
                    dst_path=str(staging),
                    tracking_uri=self.settings.mlflow_tracking_uri,
                )
            except Exception as exc:  # noqa: BLE001 - any store failure means the weights are gone
                raise CheckpointError(
                    f"weights of {name} version {version} cannot be downloaded: {one_line(exc)}"
                ) from exc
            found = list(Path(local).rglob(_WEIGHTS_FILE))
            if not found:
                raise CheckpointError(f"{name} version {version} has no {_WEIGHTS_FILE}")
            weights = target / _WEIGHTS_FILE
            shutil.copyfile(found[0], weights)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return weights

    @_retried
    def list_versions(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every version of ``name`` (or of every registered model), newest first.

        Each row: ``name, version, aliases, verdict, request_id, forget_classes,
        forget_class_names, complete, created, run_id``.
        """
        names = [name] if name else self.model_names()
        rows: list[dict[str, Any]] = []
        for model_name in names:
            try:
                aliases = self.aliases(model_name)
            except ModelNotFoundError:
                continue
            for v in self.client.search_model_versions(f"name='{model_name}'"):
                rows.append(_version_row(model_name, v, aliases))
        rows.sort(key=lambda r: (r["name"], -r["version"]))
        return rows


def _version_row(name: str, v: Any, aliases: Mapping[str, int]) -> dict[str, Any]:
    tags = dict(v.tags)
    return {
        "name": name,
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


@functools.lru_cache(maxsize=16)
def _registry_of(settings: PipelineSettings) -> ModelRegistry:
    return ModelRegistry(settings)


# --- Prefect tasks: thin calls into the registry; retries only on the store's I/O -----------
# The registry already retries each MLflow call; the task retries the whole step (a model
# upload included) when a failure outlasts those, under the same policy.


def _log_to_run(settings: PipelineSettings, run_id: str, **kwargs: Any) -> None:
    ModelRegistry.of(settings).log_to_run(run_id, **kwargs)


def _register_version(
    settings: PipelineSettings,
    *,
    name: str,
    run_id: str,
    model_dir: str | os.PathLike[str],
    tags: Mapping[str, Any],
) -> int:
    return ModelRegistry.of(settings).register_version(
        name=name, run_id=run_id, model_dir=model_dir, tags=tags
    )


def _resolve_model(
    settings: PipelineSettings, ref: Any, workdir: str | os.PathLike[str] | None = None
) -> ResolvedModel:
    return ModelRegistry.of(settings).resolve_model(ref, workdir)


log_to_run_task = task(name="mlflow-log-run", cache_policy=NO_CACHE, **IO_RETRY_POLICY)(_log_to_run)
register_version_task = task(
    name="mlflow-register-version", cache_policy=NO_CACHE, **IO_RETRY_POLICY
)(_register_version)
resolve_model_task = task(name="load-model-version", cache_policy=NO_CACHE)(_resolve_model)


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
