"""Where the pipeline keeps things, set by environment or arguments, never at import time.

Embedded defaults need no server: an MLflow SQLite store under ``mlflow/``, a DVC remote in a
local folder, Prefect's ephemeral API. A team points the same code at its servers with
environment variables alone (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``, ``UNLEARN_DVC_REMOTE``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEMO_MARKER", "PipelineSettings", "SettingsError", "demo_mode_from"]

#: A file ``make demo`` leaves in the project root it ran in: the root is a demo, whose audit
#: log is signed with the public demo key. Commands run later on that root (``unlearn audit
#: verify``) then find the same key without being told. ``UNLEARN_AUDIT_KEY`` always wins.
DEMO_MARKER = ".unlearn-demo"
_TRUE = {"1", "true", "yes"}
_DEFAULT_MODEL = "mnist5k-classifier"
#: Variables whose value an error message must not repeat.
_SECRETS = {"UNLEARN_AUDIT_KEY"}


class SettingsError(ValueError):
    """An environment variable holds a value the pipeline cannot use (one line, names it)."""


class _Environment(BaseSettings):
    """The environment variables an installation is configured by, under their own names.

    Unset and empty mean the same: the default (``None``: derived from the project root).
    Only these exact (case-sensitive) names are read; no ``.env`` file.
    """

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True, env_ignore_empty=True)

    home: Path | None = Field(default=None, validation_alias="UNLEARN_HOME")
    model_name: str = Field(default=_DEFAULT_MODEL, validation_alias="UNLEARN_MODEL_NAME")
    mlflow_tracking_uri: str | None = Field(default=None, validation_alias="MLFLOW_TRACKING_URI")
    mlflow_artifacts: Path | None = Field(default=None, validation_alias="UNLEARN_MLFLOW_ARTIFACTS")
    dvc_remote: str | None = Field(default=None, validation_alias="UNLEARN_DVC_REMOTE")
    audit_key: str | None = Field(default=None, validation_alias="UNLEARN_AUDIT_KEY")
    audit_uri: str | None = Field(default=None, validation_alias="UNLEARN_AUDIT_URI")
    # a string, not a bool: only 1/true/yes turn it on, and any other value turns it off
    demo_mode: str | None = Field(default=None, validation_alias="UNLEARN_DEMO_MODE")
    onnx_atol: float = Field(default=1e-4, validation_alias="UNLEARN_ONNX_ATOL")
    onnx_rtol: float = Field(default=1e-3, validation_alias="UNLEARN_ONNX_RTOL")


def _read_environment() -> _Environment:
    """The current environment, a bad value as one :class:`SettingsError` line naming it."""
    try:
        return _Environment()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        name = ".".join(str(part) for part in first["loc"])
        value = "" if name in _SECRETS else f"={str(first['input'])[:80]!r}"
        message = str(first["msg"])
        raise SettingsError(f"{name}{value}: {message[:1].lower()}{message[1:]}") from None


def _demo_flag(flag: str | None, root: Path) -> bool:
    """``UNLEARN_DEMO_MODE`` when set (``0`` turns a demo root off), else the root's marker."""
    flag = (flag or "").strip().lower()
    if flag:
        return flag in _TRUE
    return (root / DEMO_MARKER).is_file()


def demo_mode_from(root: Path) -> bool:
    """``UNLEARN_DEMO_MODE`` when set (``0`` turns a demo root off), else the root's marker."""
    return _demo_flag(_read_environment().demo_mode, root)


class PipelineSettings(BaseModel):
    """Paths and endpoints of one pipeline installation (a project root).

    Attributes:
        root: The project root (git + DVC repository).
        registered_model: Default MLflow registered-model name of the demo model.
        mlflow_tracking_uri: MLflow backend; SQLite under ``mlflow/`` by default.
        mlflow_artifact_root: Where the embedded store writes artifacts.
        dvc_remote: DVC default remote URL: a local folder by default, ``s3://...`` for teams.
        audit_key: HMAC key of the audit log (``UNLEARN_AUDIT_KEY``).
        audit_uri: fsspec URL of the one audit chain all hosts share (``UNLEARN_AUDIT_URI``,
            e.g. ``file:///shared/audit`` or ``s3://bucket/audit``); ``None``: ``audit/``.
        demo_mode: Allow a fixed, public audit key (``UNLEARN_DEMO_MODE=1``, or the root's
            :data:`DEMO_MARKER` file written by ``make demo``); never in production.
        onnx_atol: Absolute tolerance of the ONNX-vs-PyTorch parity check
            (``UNLEARN_ONNX_ATOL``).
        onnx_rtol: Relative tolerance of that check (``UNLEARN_ONNX_RTOL``).
    """

    model_config = ConfigDict(frozen=True)

    root: Path
    registered_model: str = _DEFAULT_MODEL
    mlflow_tracking_uri: str
    mlflow_artifact_root: Path
    dvc_remote: str
    audit_key: str | None = None
    audit_uri: str | None = None
    demo_mode: bool = False
    onnx_atol: float = 1e-4
    onnx_rtol: float = 1e-3

    @classmethod
    def from_env(cls, root: str | os.PathLike[str] | None = None) -> PipelineSettings:
        """The settings of ``root`` (default: ``UNLEARN_HOME``, else the working directory),
        each overridden by its environment variable when that is set and not empty.

        Raises:
            SettingsError: A variable holds an unusable value (e.g. a tolerance that is not a
                number); the one-line message names the variable.

        Example:
            >>> import tempfile
            >>> s = PipelineSettings.from_env(tempfile.mkdtemp())
            >>> s.dvc_remote == str(s.root / "dvc-remote")
            True
        """
        env = _read_environment()
        base = Path(root if root is not None else env.home or ".").resolve()
        return cls(
            root=base,
            registered_model=env.model_name,
            mlflow_tracking_uri=env.mlflow_tracking_uri
            or f"sqlite:///{base / 'mlflow' / 'mlflow.db'}",
            mlflow_artifact_root=env.mlflow_artifacts or base / "mlflow" / "artifacts",
            dvc_remote=env.dvc_remote or str(base / "dvc-remote"),
            audit_key=env.audit_key,
            audit_uri=env.audit_uri,
            demo_mode=_demo_flag(env.demo_mode, base),
            onnx_atol=env.onnx_atol,
            onnx_rtol=env.onnx_rtol,
        )

    # Derived locations: one place decides the layout of the project root.
    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def requests_dir(self) -> Path:
        return self.root / "requests"

    @property
    def inbox_dir(self) -> Path:
        return self.requests_dir / "inbox"

    @property
    def processing_dir(self) -> Path:
        return self.requests_dir / "processing"

    @property
    def done_dir(self) -> Path:
        return self.requests_dir / "done"

    @property
    def failed_dir(self) -> Path:
        return self.requests_dir / "failed"

    @property
    def audit_dir(self) -> Path:
        return self.root / "audit"

    @property
    def audit_log(self) -> Path:
        return self.audit_dir / "audit.jsonl"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def locks_dir(self) -> Path:
        return self.requests_dir / ".locks"

    @property
    def gates_file(self) -> Path:
        return self.root / "gates.yaml"
