"""Where the pipeline keeps things, set by environment or arguments, never at import time.

Embedded defaults need no server: an MLflow SQLite store under ``mlflow/``, a DVC remote in a
local folder, Prefect's ephemeral API. A team points the same code at its servers with
environment variables alone (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``, ``UNLEARN_DVC_REMOTE``).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

__all__ = ["DEMO_MARKER", "PipelineSettings", "demo_mode_from"]

#: A file ``make demo`` leaves in the project root it ran in: the root is a demo, whose audit
#: log is signed with the public demo key. Commands run later on that root (``unlearn audit
#: verify``) then find the same key without being told. ``UNLEARN_AUDIT_KEY`` always wins.
DEMO_MARKER = ".unlearn-demo"
_TRUE = {"1", "true", "yes"}


def demo_mode_from(root: Path) -> bool:
    """``UNLEARN_DEMO_MODE`` when set (``0`` turns a demo root off), else the root's marker."""
    flag = os.environ.get("UNLEARN_DEMO_MODE", "").strip().lower()
    if flag:
        return flag in _TRUE
    return (root / DEMO_MARKER).is_file()


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
    registered_model: str = "mnist5k-classifier"
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
        base = Path(root if root is not None else os.environ.get("UNLEARN_HOME", ".")).resolve()
        return cls(
            root=base,
            registered_model=os.environ.get("UNLEARN_MODEL_NAME", "mnist5k-classifier"),
            mlflow_tracking_uri=os.environ.get(
                "MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow' / 'mlflow.db'}"
            ),
            mlflow_artifact_root=Path(
                os.environ.get("UNLEARN_MLFLOW_ARTIFACTS", str(base / "mlflow" / "artifacts"))
            ),
            dvc_remote=os.environ.get("UNLEARN_DVC_REMOTE", str(base / "dvc-remote")),
            audit_key=os.environ.get("UNLEARN_AUDIT_KEY") or None,
            audit_uri=os.environ.get("UNLEARN_AUDIT_URI") or None,
            demo_mode=demo_mode_from(base),
            onnx_atol=float(os.environ.get("UNLEARN_ONNX_ATOL") or 1e-4),
            onnx_rtol=float(os.environ.get("UNLEARN_ONNX_RTOL") or 1e-3),
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
