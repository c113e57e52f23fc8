"""Kill -9 at every stage of a request, then run it again; idempotency; what may retry.

Each kill test starts a real pipeline worker (``process_inbox`` in a subprocess, on the shared
Prefect test server, MLflow SQLite store and DVC repository) with ``UNLEARN_CRASH_AT`` set, so
:func:`tasks._faults.crash_point` sends it ``SIGKILL`` at that point: no ``finally``, no
Prefect hook, no atexit runs. The test checks what the crash left behind, then runs
``process_inbox`` again (as the next scheduled run would) and checks that the request was
completed exactly once: in ``done/``, one complete version, nothing half-registered,
``@champion`` on a version that passed its gates, every alias move audited once, a log that
verifies, and a deletion certificate. The kill during unlearning must resume from the
engine's per-epoch checkpoint.

Each test runs in its own copy of a root holding its own model (``robust-crash``, version 1
@champion), bootstrapped once for the module: the tests pass alone and in any order.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from tasks._faults import CRASH_POINTS
from tests.flows._robust import (
    assert_alias_history_matches_registry,
    bootstrap_model,
    registry_snapshot,
    start_worker,
    worker_env,
)
from tests.flows.conftest import Golden, forget_mlflow_store, write_request

CRASH_MODEL = "robust-crash"
EPOCHS = 6


@pytest.fixture(scope="module")
def crash_golden(golden_project: Golden, tmp_path_factory: pytest.TempPathFactory) -> Golden:
    """The golden root plus ``robust-crash`` version 1 @champion (built once, only copied)."""
    clone = golden_project.clone(tmp_path_factory.mktemp("crash-golden") / "root")
    result = bootstrap_model(clone["settings"], CRASH_MODEL)
    assert result["version"] == 1
    forget_mlflow_store()
    return Golden(clone["root"], result)


@pytest.fixture
def project(crash_golden: Golden, tmp_path: Path) -> dict[str, Any]:
    """This test's own copy of the crash root (overrides the package's ``project``)."""
    return crash_golden.clone(tmp_path / "project")


@pytest.fixture
def crash_model(project: dict[str, Any]) -> str:
    return CRASH_MODEL


def _request_id(point: str) -> str:
    return "kill-" + point.replace(".", "-").replace("_", "-")


def _running_runs(settings: Any, request_id: str) -> list[str]:
    from tasks.registry import EXPERIMENT_NAME, ModelRegistry

    client = ModelRegistry.of(settings).client
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.request_id = '{request_id}' and attributes.status = 'RUNNING'",
    )
    return [r.info.run_id for r in runs]


def _certificate(settings: Any, request_id: str) -> str:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(
        app, ["--root", str(settings.root), "audit", "certificate", request_id]
    )
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _checkpoint_epoch(settings: Any, request_id: str) -> int:
    import torch

    (checkpoint,) = (settings.artifacts_dir / "checkpoints" / request_id).glob("*/*.pt")
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"])


#: The crash point of ``make test-fast``: a version half-registered when the worker died.
SMOKE_POINT = "registry.after_create_version"


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "point",
    [pytest.param(p, marks=() if p == SMOKE_POINT else pytest.mark.slow) for p in CRASH_POINTS],
)
def test_kill_9_then_the_same_request_completes_once(
    point: str, crash_model: str, project: dict[str, Any], tmp_path: Path
) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import open_audit_log, read_request_record
    from tasks.inbox import Inbox
    from tasks.registry import CHALLENGER, CHAMPION, ModelRegistry

    settings = project["settings"]
    inbox, audit = Inbox(settings), open_audit_log(settings)
    request_id = _request_id(point)
    forget = CRASH_POINTS.index(point) % 10
    source = write_request(
        tmp_path / "request.yaml",
        request_id,
        model=f"{crash_model}@champion",
        forget_classes=f"[{forget}]",
        # every hyper-parameter pinned: a resumed run must have the same configuration
        hparams=f"{{epochs: {EPOCHS}, batch_size: 8, lr: 0.002}}",
    )
    inbox.submit(source)
    champion_before = ModelRegistry.of(settings).get_alias(crash_model, CHAMPION)

    # --- the killed run -----------------------------------------------------------------------
    worker = start_worker(
        settings.root,
        tmp_path / "killed.log",
        model=crash_model,
        env=worker_env(UNLEARN_CRASH_AT=point),
    )
    code, output, _ = worker.wait(timeout=500)
    assert code == -signal.SIGKILL, output[-4000:]
    assert f"SIGKILL at {point}" in output
    (state,) = inbox.status(request_id)
    assert state.state == "processing"  # claimed by a process that no longer exists
    left = ModelRegistry.of(settings).versions_for_request(crash_model, request_id)
    epoch_killed = None
    if point == "unlearn.epoch":
        epoch_killed = _checkpoint_epoch(settings, request_id)
        assert 1 <= epoch_killed < EPOCHS, "the kill did not land during unlearning"
        assert left == []
    if point in ("export.after_onnx", "registry.after_run"):
        assert left == []
    if point == "registry.after_create_version":
        assert [tags["pipeline.complete"] for _, tags in left] == ["false"]  # half-registered
    if point == "registry.after_complete":
        assert [tags["pipeline.complete"] for _, tags in left] == ["true"]
        assert ModelRegistry.of(settings).get_alias(crash_model, CHAMPION) == champion_before
    if point == "alias.after_move":
        assert audit.find(event="alias.moved", request_id=request_id) == []  # move not audited
    assert audit.verify().ok

    # --- the same request again ---------------------------------------------------------------
    (result,) = process_inbox_flow(root=str(settings.root), model=crash_model)
    assert result["state"] == "done", result
    expected = "already_applied" if point == "inbox.before_done" else "completed"
    assert result["status"] == expected, result

    (state,) = inbox.status(request_id)
    assert state.state == "done"
    assert not any(settings.processing_dir.iterdir()) and not any(settings.inbox_dir.iterdir())
    # exactly one version for the request, complete; nothing half-registered anywhere
    ((version, tags),) = ModelRegistry.of(settings).versions_for_request(crash_model, request_id)
    assert tags["pipeline.complete"] == "true" and tags["pipeline.alias_applied"] == "true"
    assert all(row["complete"] for row in ModelRegistry.of(settings).list_versions(crash_model))
    # The root's gates (LENIENT_GATES) pass this request: the new version is @champion, the
    # parent kept nothing else, and no challenger was named.
    assert tags["gate.verdict"] == "passed", tags["gate.reasons"]
    # version 2 unless the killed run left a half-registered 2 behind (removed, never reused)
    assert champion_before == 1
    assert version == (3 if point == "registry.after_create_version" else 2)
    assert ModelRegistry.of(settings).get_alias(crash_model, CHAMPION) == version
    assert ModelRegistry.of(settings).get_alias(crash_model, CHALLENGER) is None
    assert ModelRegistry.of(settings).version_tags(crash_model, version)["gate.verdict"] == "passed"
    # every alias move audited exactly once, with its true from-version; one completion record
    assert audit.verify().ok
    (moved,) = audit.find(event="alias.moved", request_id=request_id)
    assert moved["payload"]["to_version"] == version
    assert moved["payload"]["from_version"] == champion_before
    assert_alias_history_matches_registry(settings, crash_model)
    (completed,) = audit.find(event="request.completed", request_id=request_id)
    assert completed["payload"]["version"] == version
    record = read_request_record(settings, request_id)
    assert record["status"] == "completed" and record["version"] == version
    assert "not a cryptographic" in _certificate(settings, request_id)
    # no MLflow run left RUNNING, no resumption data left behind
    assert _running_runs(settings, request_id) == []
    assert not (settings.artifacts_dir / "checkpoints" / request_id).exists()
    if point == "unlearn.epoch":
        assert record["engine"]["resumed_from_epoch"] == epoch_killed
        run = ModelRegistry.of(settings).client.get_run(record["mlflow_run_id"])
        assert run.data.params["engine.resumed_from_epoch"] == str(epoch_killed)
        assert len(record["engine"]["epoch_losses"]) == EPOCHS


# --- idempotency ------------------------------------------------------------------------------


def _submit_and_process(settings: Any, path: Path) -> dict[str, Any]:
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox

    Inbox(settings).submit(path)
    (result,) = process_inbox_flow(root=str(settings.root), model=CRASH_MODEL)
    return result


@pytest.mark.slow
def test_same_request_twice_yields_one_version(
    crash_model: str, project: dict[str, Any], tmp_path: Path
) -> None:
    from tasks.registry import ModelRegistry

    settings = project["settings"]
    source = write_request(
        tmp_path / "twice.yaml", "idem-twice", model=crash_model, hparams="{epochs: 2}"
    )
    first = _submit_and_process(settings, source)
    assert first["state"] == "done" and first["status"] == "completed"
    snapshot = registry_snapshot(settings)
    again = _submit_and_process(settings, source)
    assert again["state"] == "done" and again["status"] == "already_applied"
    assert again["version"] == first["version"]
    assert len(ModelRegistry.of(settings).versions_for_request(crash_model, "idem-twice")) == 1
    assert registry_snapshot(settings) == snapshot


@pytest.mark.slow
def test_same_id_different_content_is_rejected(
    crash_model: str, project: dict[str, Any], tmp_path: Path
) -> None:
    """After a completion: rejected, naming the hash mismatch; the original record is kept."""
    from tasks.audit import open_audit_log, read_request_record

    settings = project["settings"]
    source = write_request(
        tmp_path / "twice.yaml", "idem-twice", model=crash_model, hparams="{epochs: 2}"
    )
    assert _submit_and_process(settings, source)["status"] == "completed"
    original = read_request_record(settings, "idem-twice")
    snapshot = registry_snapshot(settings)
    changed = write_request(
        tmp_path / "changed.yaml",
        "idem-twice",
        model=crash_model,
        forget_classes="[9]",
        hparams="{epochs: 2}",
    )
    result = _submit_and_process(settings, changed)
    assert result["state"] == "failed" and result["status"] == "rejected"
    assert "already used with different content" in result["reason"]
    assert "content sha256" in result["reason"] and "\n" not in result["reason"]
    assert registry_snapshot(settings) == snapshot
    assert read_request_record(settings, "idem-twice") == original
    (rejected,) = open_audit_log(settings).find(event="request.rejected", request_id="idem-twice")
    assert rejected["payload"]["request_content_sha256"] != original["request_content_sha256"]
    assert "not a cryptographic" in _certificate(settings, "idem-twice")


@pytest.mark.slow
def test_a_rejection_as_written_leaves_the_id_free_for_the_fixed_request(
    crash_model: str, project: dict[str, Any], tmp_path: Path
) -> None:
    """A request refused before anything ran (a class the model lacks) does not burn its id:
    the corrected file under the same id is applied, once; the rejection stays on record."""
    from tasks.audit import open_audit_log, request_record_path
    from tasks.registry import ModelRegistry

    settings = project["settings"]
    first = write_request(
        tmp_path / "typo.yaml", "idem-typo", model=crash_model, forget_classes="[cat]"
    )
    assert _submit_and_process(settings, first)["status"] == "rejected"
    fixed = write_request(
        tmp_path / "fixed.yaml",
        "idem-typo",
        model=crash_model,
        forget_classes="[3]",
        hparams="{epochs: 2}",
    )
    result = _submit_and_process(settings, fixed)
    assert result["state"] == "done" and result["status"] == "completed", result
    assert len(ModelRegistry.of(settings).versions_for_request(crash_model, "idem-typo")) == 1
    audit = open_audit_log(settings)
    assert len(audit.find(event="request.rejected", request_id="idem-typo")) == 1
    assert len(audit.find(event="request.completed", request_id="idem-typo")) == 1
    history = request_record_path(settings, "idem-typo").parent / "history"
    assert any(h.name.startswith("idem-typo.") for h in history.iterdir())  # rejection kept
    # Once applied, the id is burnt: other content under it is refused.
    other = write_request(
        tmp_path / "other.yaml", "idem-typo", model=crash_model, forget_classes="[5]"
    )
    again = _submit_and_process(settings, other)
    assert again["status"] == "rejected" and "different content" in again["reason"]


# --- retries: transient I/O of the MLflow store and the DVC remote only -----------------------


def _pipeline_tasks() -> dict[str, Any]:
    import importlib
    import pkgutil

    from prefect import Task

    import flows
    import tasks

    found: dict[str, Any] = {}
    for package in (tasks, flows):
        for info in pkgutil.iter_modules(package.__path__):
            if info.name in {"cli", "demo"}:
                continue
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for value in vars(module).values():
                if isinstance(value, Task):
                    found[value.name] = value
    return found


def test_only_mlflow_and_dvc_remote_io_is_retried() -> None:
    from tasks._retry import retry_on_transient_io

    found = _pipeline_tasks()
    assert {"unlearn", "export-onnx", "evaluate-task-model", "move-alias"} <= set(found)
    retried = {name for name, t in found.items() if t.retries}
    assert retried == {"mlflow-log-run", "mlflow-register-version", "dvc-push"}
    assert all(found[name].retry_condition_fn is retry_on_transient_io for name in retried)
    assert found["unlearn"].retries == 0


def test_retry_condition_retries_transient_io_only_in_a_real_flow() -> None:
    import sqlite3

    from prefect import flow, task

    from tasks._retry import retry_on_transient_io
    from tasks.registry import RegistryError

    attempts: dict[str, int] = {"locked": 0, "missing": 0}

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_on_transient_io)
    def flaky_store() -> str:
        attempts["locked"] += 1
        if attempts["locked"] < 3:
            raise sqlite3.OperationalError("database is locked")
        return "stored"

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_on_transient_io)
    def broken_input() -> str:
        attempts["missing"] += 1
        raise RegistryError("cannot register m: model.onnx is missing in /x")

    @flow
    def uses_the_store() -> tuple[str, str]:
        state = broken_input(return_state=True)
        return flaky_store(), type(state.result(raise_on_failure=False)).__name__

    assert uses_the_store() == ("stored", "RegistryError")
    assert attempts == {"locked": 3, "missing": 1}
