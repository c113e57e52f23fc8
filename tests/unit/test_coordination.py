"""The shared audit chain at an fsspec URL, and the choice between server and local locks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tasks.audit import (
    AuditLog,
    SharedAuditLog,
    open_audit_log,
    read_request_record,
    write_request_record,
)
from tasks.coordination import coordination_mode, limit_name
from tasks.settings import PipelineSettings

KEY = "unit-audit-key-0123456789abcdef"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipelineSettings:
    monkeypatch.setenv("UNLEARN_AUDIT_KEY", KEY)
    monkeypatch.setenv("UNLEARN_AUDIT_URI", (tmp_path / "shared" / "audit").as_uri())
    monkeypatch.setenv("UNLEARN_COORDINATION", "embedded")
    return PipelineSettings.from_env(tmp_path / "host-a")


def test_shared_chain_is_one_chain_for_every_host(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    other = settings.model_copy(update={"root": tmp_path / "host-b"})
    a, b = open_audit_log(settings), open_audit_log(other)
    assert isinstance(a, SharedAuditLog)
    # appends from two "hosts" (threads, each its own log object) never fork the chain
    threads = [
        threading.Thread(target=lambda log=log, i=i: log.append("request.completed", {"i": i}))
        for i, log in enumerate([a, b] * 10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = b.verify()
    assert result.ok and result.n_records == 20, result
    # the same bytes as the local log format: the local verifier accepts the shared file
    shared = tmp_path / "shared" / "audit" / "audit.jsonl"
    assert AuditLog(shared, KEY.encode()).verify().ok
    assert not (tmp_path / "host-a" / "audit").exists()


def test_shared_chain_detects_tampering(settings: PipelineSettings, tmp_path: Path) -> None:
    log = open_audit_log(settings)
    for i in range(3):
        log.append("request.completed", {"request_id": f"r{i}"})
    path = tmp_path / "shared" / "audit" / "audit.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[1])
    record["payload"]["request_id"] = "forged"
    lines[1] = json.dumps(record, sort_keys=True, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n")
    result = open_audit_log(settings).verify()
    assert not result.ok and result.first_bad == 2
    path.write_text("\n".join(lines[:1]) + "\n")  # records cut from the end
    assert not open_audit_log(settings).verify().ok


def test_request_records_are_read_from_shared_storage(
    settings: PipelineSettings, tmp_path: Path
) -> None:
    write_request_record(settings, "r1", {"request_id": "r1", "status": "completed"})
    other = settings.model_copy(update={"root": tmp_path / "host-b"})
    assert read_request_record(other, "r1")["status"] == "completed"
    write_request_record(settings, "r1", {"request_id": "r1", "status": "failed"})
    history = list((tmp_path / "shared" / "audit" / "records" / "history").iterdir())
    assert len(history) == 1  # the earlier record is kept


def test_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("UNLEARN_COORDINATION", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://prefect:4200/api"}):
        assert coordination_mode(PipelineSettings.from_env(tmp_path)) == "server"
    with temporary_settings({PREFECT_API_URL: None}):
        assert coordination_mode(PipelineSettings.from_env(tmp_path)) == "embedded"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the local SQLite registry: one host
    with temporary_settings({PREFECT_API_URL: "http://prefect:4200/api"}):
        assert coordination_mode(PipelineSettings.from_env(tmp_path)) == "embedded"
    assert limit_name("model", "a b") == "unlearn-model-a-b"
