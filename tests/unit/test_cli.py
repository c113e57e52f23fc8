"""The ``unlearn`` CLI: real inbox and audit log under a temporary root, one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.audit import AuditLog, record_digest, write_request_record
from tasks.settings import PipelineSettings

KEY = "cli-test-audit-key-0123456789"
ENV = {"UNLEARN_AUDIT_KEY": KEY, "UNLEARN_DEMO_MODE": "", "UNLEARN_HOME": ""}

REQUEST = """\
request_id: gdpr-7
model: mnist5k-classifier@champion
forget_classes: [3]
requested_by: dpo@example.com
reason: GDPR Art. 17
received_at: 2025-01-31T09:00:00Z
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "project"


def _run(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--root", str(root), *args], env={**ENV, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _settings(root: Path) -> PipelineSettings:
    return PipelineSettings.from_env(root)


def test_submit_valid_request_is_queued(root: Path, tmp_path: Path) -> None:
    (tmp_path / "req.yaml").write_text(REQUEST)
    code, out, err = _run(root, "submit", str(tmp_path / "req.yaml"))
    assert (code, err) == (0, "")
    assert out.startswith("queued gdpr-7 -> requests/inbox/")
    [queued] = _settings(root).inbox_dir.iterdir()
    assert queued.read_text() == REQUEST


def test_submit_invalid_request_exits_1_and_is_recorded_in_failed(
    root: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(REQUEST.replace("[3]", "[]"))
    code, out, err = _run(root, "submit", str(tmp_path / "bad.yaml"))
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert line.startswith(
        "error: bad.yaml: field 'forget_classes': list should have at least 1 item (rejected; "
        "recorded in requests/failed/"
    )
    settings = _settings(root)
    assert not settings.inbox_dir.exists() or not any(settings.inbox_dir.iterdir())
    reasons = list(settings.failed_dir.glob("*.reason.txt"))
    assert len(reasons) == 1 and "list should have at least 1 item" in reasons[0].read_text()


def test_submit_missing_or_hostile_files(root: Path, tmp_path: Path) -> None:
    code, _, err = _run(root, "submit", str(tmp_path / "nope.yaml"))
    assert code == 1 and _one_error_line(err) == "error: nope.yaml: file not found"
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01\x02")
    code, _, err = _run(root, "submit", str(tmp_path / "bin.yaml"))
    assert code == 1 and "binary" in _one_error_line(err)


def test_status_lists_every_state(root: Path, tmp_path: Path) -> None:
    code, out, _ = _run(root, "status")
    assert code == 0 and out.startswith("no requests")
    (tmp_path / "req.yaml").write_text(REQUEST)
    _run(root, "submit", str(tmp_path / "req.yaml"))
    _run(root, "submit", str(tmp_path / "req.yaml"))  # duplicate id: rejected
    code, out, _ = _run(root, "status")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["REQUEST_ID", "STATE", "VERSION", "FILE", "REASON"]
    assert [r.split()[:2] for r in rows] == [["gdpr-7", "queued"], ["gdpr-7", "failed"]]
    assert "already queued" in rows[1]
    code, out, _ = _run(root, "status", "gdpr-7", "--json")
    assert code == 0
    assert [(s["request_id"], s["state"]) for s in json.loads(out)] == [
        ("gdpr-7", "queued"),
        ("gdpr-7", "failed"),
    ]


def test_status_of_unknown_or_invalid_id(root: Path) -> None:
    code, _, err = _run(root, "status", "nope")
    assert code == 1 and "no request 'nope'" in _one_error_line(err)
    code, _, err = _run(root, "status", "../../etc")
    assert code == 1 and "not a valid request id" in _one_error_line(err)


def _log_with_records(root: Path, n: int = 3) -> AuditLog:
    log = AuditLog(_settings(root).audit_log, KEY.encode())
    for i in range(n):
        log.append("request.completed", {"request_id": f"r{i}"})
    return log


def test_audit_verify_ok_and_tampered(root: Path) -> None:
    log = _log_with_records(root)
    code, out, err = _run(root, "audit", "verify")
    assert (code, err) == (0, "") and out.startswith("audit log OK: 3 records")
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"r1"', b'"rX"')
    log.path.write_bytes(b"".join(lines))
    code, out, err = _run(root, "audit", "verify")
    assert code == 1 and out == ""
    assert _one_error_line(err) == (
        "error: audit log INVALID at record 2: hash does not match the record's content (edited)"
    )


def test_audit_verify_without_a_key(root: Path) -> None:
    code, _, err = _run(root, "audit", "verify", env={"UNLEARN_AUDIT_KEY": ""})
    assert code == 1 and _one_error_line(err).startswith("error: UNLEARN_AUDIT_KEY is not set")
    code, out, _ = _run(
        root, "audit", "verify", env={"UNLEARN_AUDIT_KEY": "", "UNLEARN_DEMO_MODE": "1"}
    )
    assert code == 0 and "0 records" in out


def _certified(root: Path, by_file: bool = True) -> dict[str, object]:
    """A record plus the audit entry citing it, by file SHA-256 (as the flow does) or content."""
    record = {
        "request_id": "gdpr-7",
        "status": "completed",
        "forget_classes": [3],
        "method": "delete",
        "hashes": {"parent_weights_sha256": "a" * 64, "new_weights_sha256": "b" * 64},
    }
    settings = _settings(root)
    path = write_request_record(settings, "gdpr-7", record)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if by_file else record_digest(record)
    log = _log_with_records(root, 1)
    log.append("request.completed", {"request_id": "gdpr-7", "record_sha256": digest})
    log.append("alias.moved", {"request_id": "gdpr-7", "alias": "champion"})
    return record


@pytest.mark.parametrize("by_file", [True, False])
def test_audit_certificate_markdown_and_html(root: Path, tmp_path: Path, by_file: bool) -> None:
    _certified(root, by_file)
    code, out, err = _run(root, "audit", "certificate", "gdpr-7")
    assert (code, err) == (0, "")
    assert out.startswith("# Deletion certificate: request gdpr-7")
    assert "a" * 64 in out and "b" * 64 in out and "seq 2 (request.completed)" in out
    target = tmp_path / "cert.html"
    code, out, _ = _run(
        root, "audit", "certificate", "gdpr-7", "--format", "html", "--out", str(target)
    )
    assert code == 0 and out.strip() == f"wrote {target}"
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_audit_certificate_refuses_edited_record_or_log(root: Path) -> None:
    record = _certified(root)
    settings = _settings(root)
    write_request_record(settings, "gdpr-7", {**record, "forget_classes": [4]})
    code, _, err = _run(root, "audit", "certificate", "gdpr-7")
    assert code == 1 and "does not match the digest in audit log entry 2" in _one_error_line(err)
    write_request_record(settings, "gdpr-7", record)
    settings.audit_log.write_bytes(settings.audit_log.read_bytes()[:-5])
    code, _, err = _run(root, "audit", "certificate", "gdpr-7")
    assert code == 1 and "refusing to issue a certificate" in _one_error_line(err)


def test_audit_certificate_of_unknown_request(root: Path) -> None:
    code, _, err = _run(root, "audit", "certificate", "nope")
    assert code == 1 and "no audit record for request 'nope'" in _one_error_line(err)
    code, _, err = _run(root, "audit", "certificate", "nope", "--format", "pdf")
    assert code == 2 and "'pdf' is not one of 'md', 'html'" in _one_error_line(err)


def test_usage_errors_are_one_line(root: Path) -> None:
    code, _, err = _run(root, "frobnicate")
    assert code == 2 and _one_error_line(err) == "error: No such command 'frobnicate'."
    code, _, err = _run(root, "submit")
    assert code == 2 and "Missing argument" in _one_error_line(err)


def test_help_lists_the_commands(root: Path) -> None:
    code, out, _ = _run(root, "--help")
    assert code == 0
    for command in ("submit", "process", "status", "models", "audit", "bench"):
        assert command in out


def test_bench_passes_its_arguments_through(root: Path) -> None:
    code, out, _ = _run(root, "bench", "--help")
    assert code == 0 and "--quick" in out and "delete.bench" in out
    code, _, err = _run(root, "bench", "--no-such-flag")
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err
