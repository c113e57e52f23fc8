"""Real Prefect, MLflow and DVC for the flow tests, all in temporary directories.

One Prefect test harness (a real API server on a temporary SQLite database) serves the whole
session. Bootstrapping a project root (git + DVC repository with a local-folder remote, MLflow
SQLite store, a small MNIST subset and a briefly trained model) takes a while, so it is done
once per session into a *golden* root, and every test gets a private copy of it
(:func:`clone_root`): no test sees another test's versions, requests or audit records, and the
tests pass in any order. ``first_request`` does the same for a root in which one request has
been processed.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
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
#: Gates the test roots' requests are judged by: lenient where the tiny model is weak, but each
#: one can reject (``max_mia_gap`` 0.25: AUC outside [0.25, 0.75]; the tiny model's gap is
#: about 0.17-0.19). ``test_each_gate_alone_can_reject`` shows each gate rejecting on its own.
LENIENT_GATES = (
    "classification:\n  max_acc_forget: 5.0\n  max_drop_acc_retain: 50.0\n  max_mia_gap: 0.25\n"
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


def rebase(value: Any, old: Path, new: Path) -> Any:
    """``value`` with every string that names a path under ``old`` moved under ``new``.

    Example:
        >>> rebase({"a": ["/g/x", "file:///g/y", "/gx"]}, Path("/g"), Path("/n"))
        {'a': ['/n/x', 'file:///n/y', '/gx']}
    """
    if isinstance(value, str):
        return value.replace(f"{old}/", f"{new}/")
    if isinstance(value, dict):
        return {k: rebase(v, old, new) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(rebase(v, old, new) for v in value)
    if isinstance(value, Path):
        return Path(rebase(str(value), old, new))
    return value


def _rebase_mlflow_store(database: Path, old: Path, new: Path) -> None:
    """Point every absolute location in a copied MLflow SQLite store at the copy.

    The store records absolute ``file://`` URIs (experiment artifact location, run artifact
    URIs, model version sources and storage locations, logged models): left alone, a copy
    would read and write the golden root's artifacts. Every text cell of every table is
    rewritten, so a column MLflow adds later is covered too.
    """
    with sqlite3.connect(database) as db:
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith("sqlite_")
        ]
        for table in tables:
            for column in [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')]:
                db.execute(
                    f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                    f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0',
                    (f"{old}/", f"{new}/", f"{old}/"),
                )
    db.close()


def clone_root(source: Path, target: Path) -> Path:
    """A private, working copy of the project root ``source`` at ``target``.

    git and DVC need nothing (DVC's default remote is stored relative to the root); MLflow's
    store and its logged models' ``MLmodel`` files name absolute paths, which are moved to the
    copy.
    """
    shutil.copytree(source, target, symlinks=True)
    database = target / "mlflow" / "mlflow.db"
    if database.exists():
        _rebase_mlflow_store(database, source, target)
    # A logged model's MLmodel names its own artifact URI; the rest of the logged artifacts
    # (and the audit log, whose hash chain must stay intact) are records of what happened.
    for mlmodel in (target / "mlflow" / "artifacts").glob("models/*/artifacts/MLmodel"):
        mlmodel.write_text(rebase(mlmodel.read_text(), source, target))
    return target


def forget_mlflow_store() -> None:
    """Undo ``mlflow.set_tracking_uri``/``set_registry_uri``: process-wide, and exported to the
    environment, they would send the next test's default client to this test's store."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    registry_utils._registry_uri = None
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture(autouse=True)
def _no_leftover_mlflow_store() -> Iterator[None]:
    forget_mlflow_store()
    yield
    forget_mlflow_store()


@dataclass(frozen=True)
class Golden:
    """A project root built once per test run, only ever copied (never used) by tests.

    Attributes:
        root: The root's directory.
        bootstrap: What the bootstrap flow returned for it.
        results: What ``process_inbox`` returned for the root's request, if one was made.
        source: The request file of that request.
        versions_before: The model's versions before that request.
    """

    root: Path
    bootstrap: dict[str, Any]
    results: list[dict[str, Any]] | None = None
    source: Path | None = None
    versions_before: tuple[int, ...] = ()

    def clone(self, target: Path) -> dict[str, Any]:
        """A private copy at ``target``: root, settings and the golden results rebased to it."""
        from tasks.settings import PipelineSettings

        root = clone_root(self.root, target)
        return {
            "root": root,
            "settings": PipelineSettings.from_env(root),
            "bootstrap": rebase(self.bootstrap, self.root, root),
            "results": rebase(self.results, self.root, root),
            "source": rebase(self.source, self.root, root),
            "versions_before": list(self.versions_before),
        }


@pytest.fixture(scope="package")
def golden_project(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None, pipeline_env: None
) -> Golden:
    """The bootstrapped root every ``project`` copies: version 1 @champion, nothing else."""
    from flows.bootstrap import bootstrap_flow

    root = init_project_root(tmp_path_factory.mktemp("golden-project"), LENIENT_GATES)
    result = bootstrap_flow(root=str(root), epochs=TRAIN_EPOCHS, max_per_class=MAX_PER_CLASS)
    forget_mlflow_store()
    return Golden(root, result)


@pytest.fixture(scope="package")
def golden_first_request(
    golden_project: Golden, tmp_path_factory: pytest.TempPathFactory
) -> Golden:
    """A copy of the golden root in which one request (forget class 7) was processed."""
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox
    from tasks.registry import ModelRegistry
    from tasks.settings import PipelineSettings

    root = golden_project.clone(tmp_path_factory.mktemp("golden-request") / "root")["root"]
    settings = PipelineSettings.from_env(root)
    before = tuple(v["version"] for v in ModelRegistry.of(settings).list_versions(MODEL))
    source = write_request(root / "forget-7.yaml", "gdpr-0001")
    Inbox(settings).submit(source)
    results = process_inbox_flow(root=str(root))
    forget_mlflow_store()
    return Golden(
        root, rebase(golden_project.bootstrap, golden_project.root, root), results, source, before
    )


@pytest.fixture
def project(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """This test's own project root, a copy of the golden bootstrapped one: its settings, the
    bootstrap flow's result (``bootstrap``). A test that also asks for ``first_request`` gets
    the copy in which that request was processed (both fixtures then describe one root)."""
    wanted = "golden_first_request" if "first_request" in request.fixturenames else "golden_project"
    golden: Golden = request.getfixturevalue(wanted)
    return golden.clone(tmp_path / "project")


@pytest.fixture
def first_request(project: dict[str, Any]) -> dict[str, Any]:
    """One request (forget class 7, ``gdpr-0001``) processed end to end in this test's root:
    its request file (``source``), ``process_inbox``'s ``results``, and the model's versions
    before it (``versions_before``)."""
    return project
