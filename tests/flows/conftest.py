"""Real Prefect, MLflow and DVC for the flow tests, all in temporary directories.

One Prefect test harness (a real API server on a temporary SQLite database) serves the whole
session, and one bootstrapped project root (git + DVC repo with a local-folder remote, MLflow
SQLite store, a small MNIST subset and a briefly trained model) is shared by the tests, which
run in file order against it.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Before prefect or mlflow is imported anywhere: private Prefect home, no telemetry, defaults.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"

import pytest  # noqa: E402

#: Small but real: 50 training and 13 test images per class, two training epochs.
MAX_PER_CLASS = 50
TRAIN_EPOCHS = 2
#: Gates every request of the shared root is judged by (lenient: the tiny model is weak).
LENIENT_GATES = (
    "classification:\n  max_acc_forget: 5.0\n  max_drop_acc_retain: 50.0\n  max_mia_gap: 0.5\n"
)
MODEL = "mnist5k-classifier"


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="package", autouse=True)
def pipeline_env() -> Iterator[None]:
    """Embedded defaults and a real audit key for these tests only (restored afterwards)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "MLFLOW_TRACKING_URI",
            "UNLEARN_HOME",
            "UNLEARN_DVC_REMOTE",
            "UNLEARN_MLFLOW_ARTIFACTS",
            "UNLEARN_MODEL_NAME",
            "UNLEARN_DEMO_MODE",
        ):
            patch.delenv(name, raising=False)
        patch.setenv("UNLEARN_AUDIT_KEY", "flow-tests-audit-key-0123456789abcdef")
        import torch

        threads = torch.get_num_threads()
        # Two intra-op threads on two shared cores are ~10x slower per step than one thread
        # whenever anything else runs (threads wait on each other at every op).
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=tests", "-c", "user.email=tests@example.com", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def write_request(path: Path, request_id: str, **fields: Any) -> Path:
    """A request file with sensible defaults; ``fields`` override or add YAML lines."""
    values: dict[str, Any] = {
        "request_id": request_id,
        "model": f"{MODEL}@champion",
        "forget_classes": "[7]",
        "requested_by": "dpo@example.com",
        "reason": "GDPR Art. 17 erasure request",
        "received_at": "2025-01-31T09:00:00Z",
        "hparams": "{epochs: 3}",
        **fields,
    }
    path.write_text("".join(f"{k}: {v}\n" for k, v in values.items() if v is not None))
    return path


def init_project_root(root: Path, gates: str) -> Path:
    """A git repository with the pipeline's ignores and ``gates`` as its ``gates.yaml``."""
    _git(root, "init", "-q")
    (root / ".gitignore").write_text("/mlflow/\n/dvc-remote/\n/requests/\n/audit/\n/artifacts/\n")
    (root / "gates.yaml").write_text(gates)
    _git(root, "add", ".gitignore", "gates.yaml")
    _git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture(scope="package")
def project(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None, pipeline_env: None
) -> dict[str, Any]:
    """A bootstrapped project root: its settings and the bootstrap flow's result."""
    from flows.bootstrap import bootstrap_flow
    from tasks.settings import PipelineSettings

    root = init_project_root(tmp_path_factory.mktemp("project"), LENIENT_GATES)
    result = bootstrap_flow(root=str(root), epochs=TRAIN_EPOCHS, max_per_class=MAX_PER_CLASS)
    return {"root": root, "settings": PipelineSettings.from_env(root), "bootstrap": result}


@pytest.fixture(scope="package")
def first_request(project: dict[str, Any]) -> dict[str, Any]:
    """One request (forget class 7) submitted and processed end to end."""
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox

    settings = project["settings"]
    source = write_request(settings.root / "forget-7.yaml", "gdpr-0001")
    Inbox(settings).submit(source)
    results = process_inbox_flow(root=str(settings.root))
    return {"source": source, "results": results}
