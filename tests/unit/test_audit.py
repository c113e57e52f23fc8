"""Audit log: hash chain + HMAC; every kind of tampering is found at the first bad record."""

from __future__ import annotations

import hashlib
import hmac
import json
import multiprocessing as mp
from pathlib import Path

import pytest

from tasks.audit import (
    DEMO_AUDIT_KEY,
    GENESIS_HASH,
    AuditError,
    AuditLog,
    audit_key,
    open_audit_log,
    read_request_record,
    record_digest,
    to_jsonable,
    write_request_record,
)
from tasks.requests import canonical_json
from tasks.settings import PipelineSettings

KEY = b"test-audit-key-0123456789abcdef"


def _log(tmp_path: Path, n: int = 3) -> AuditLog:
    log = AuditLog(tmp_path / "audit" / "audit.jsonl", KEY)
    for i in range(n):
        log.append("request.completed", {"request_id": f"r{i}", "version": i + 1})
    return log


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def _bad(log: AuditLog) -> tuple[int | None, str]:
    result = log.verify()
    assert not result.ok and result.reason is not None
    return result.first_bad, result.reason


def test_records_are_chained_hashed_and_signed(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    records = log.records()
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["prev_hash"] == GENESIS_HASH
    lines = log.path.read_bytes().splitlines()
    for prev_line, rec in zip(lines, records[1:], strict=False):
        assert rec["prev_hash"] == hashlib.sha256(prev_line).hexdigest()
    for line, rec in zip(lines, records, strict=True):
        body = {k: rec[k] for k in ("seq", "ts", "event", "payload", "prev_hash")}
        assert rec["hash"] == hashlib.sha256(canonical_json(body).encode()).hexdigest()
        expected = hmac.new(KEY, rec["hash"].encode(), hashlib.sha256).hexdigest()
        assert rec["signature"] == expected
        assert line == canonical_json(rec).encode()
        assert rec["ts"].endswith("+00:00")
    result = log.verify()
    assert (result.ok, result.n_records, result.first_bad, result.reason) == (True, 3, None, None)
    assert str(result).startswith("audit log OK: 3 records")


def test_empty_or_missing_log_verifies(tmp_path: Path) -> None:
    result = AuditLog(tmp_path / "none.jsonl", KEY).verify()
    assert result.ok and result.n_records == 0


def test_every_edited_byte_is_found_at_its_record(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)  # first, middle-of-chain and last-line rules all apply
    original = log.path.read_bytes()
    line_of = []
    for i, line in enumerate(original.splitlines(keepends=True), start=1):
        line_of += [i] * len(line)
    for pos in range(len(original)):
        edited = bytearray(original)
        edited[pos] ^= 0x01
        log.path.write_bytes(bytes(edited))
        result = log.verify()
        assert not result.ok, f"edit at byte {pos} went unnoticed"
        assert result.first_bad == line_of[pos], (pos, result)
    log.path.write_bytes(original)
    assert log.verify().ok


def test_semantically_equal_reformatting_is_still_an_edit(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    lines = _lines(log)
    lines[1] = json.dumps(json.loads(lines[1]), indent=None).encode() + b"\n"  # spaces added
    log.path.write_bytes(b"".join(lines))
    assert _bad(log) == (2, "not in canonical form (edited)")


def test_deleted_record_in_the_middle(tmp_path: Path) -> None:
    log = _log(tmp_path, 5)
    lines = _lines(log)
    del lines[2]
    log.path.write_bytes(b"".join(lines))
    first_bad, reason = _bad(log)
    assert first_bad == 3 and "seq is 4, expected 3" in reason


def test_deleted_first_record(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    log.path.write_bytes(b"".join(_lines(log)[1:]))
    assert _bad(log)[0] == 1


def test_deleted_last_record_is_caught_by_the_signed_head(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    log.path.write_bytes(b"".join(_lines(log)[:-1]))
    first_bad, reason = _bad(log)
    assert first_bad == 4 and "head records 4" in reason


def test_everything_deleted_is_caught(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    log.path.write_bytes(b"")
    assert _bad(log)[0] == 1


def test_reordered_records(tmp_path: Path) -> None:
    log = _log(tmp_path, 4)
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    log.path.write_bytes(b"".join(lines))
    first_bad, reason = _bad(log)
    assert first_bad == 2 and "reordered" in reason


def test_truncated_file_partial_last_line(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-40])
    first_bad, reason = _bad(log)
    assert first_bad == 3 and reason.startswith("truncated")
    with pytest.raises(AuditError, match="ends with an incomplete record"):
        log.append("request.failed", {})


def test_forged_record_with_a_wrong_signature(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    forger = AuditLog(log.path, b"not-the-real-key-but-long-enough")
    forger.append("alias.moved", {"alias": "champion", "version": 99})  # chain is consistent
    first_bad, reason = _bad(log)
    assert first_bad == 4 and "signature is invalid" in reason


def test_edit_with_recomputed_hashes_still_needs_the_key(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    lines = _lines(log)
    rec = json.loads(lines[1])
    rec["payload"]["version"] = 42
    body = {k: rec[k] for k in ("seq", "ts", "event", "payload", "prev_hash")}
    rec["hash"] = hashlib.sha256(canonical_json(body).encode()).hexdigest()
    lines[1] = canonical_json(rec).encode() + b"\n"
    log.path.write_bytes(b"".join(lines))
    first_bad, reason = _bad(log)
    assert first_bad == 2 and "signature" in reason


def test_wrong_key_fails_at_the_first_record(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    assert _bad(AuditLog(log.path, b"another-key-another-key-another"))[0] == 1


def test_tampered_or_missing_head(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    head = json.loads(log.head_path.read_text())
    head["n_records"] = 1
    log.head_path.write_text(json.dumps(head))
    assert _bad(log) == (None, "head file signature is invalid")
    log.head_path.unlink()
    assert "head file audit.jsonl.head is missing" in _bad(log)[1]


def test_append_after_a_crash_before_the_head_update_still_verifies(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    stale_head = log.head_path.read_bytes()
    log.append("request.completed", {"request_id": "r9"})
    log.head_path.write_bytes(stale_head)  # as if killed between the line and the head
    assert log.verify().ok
    log.append("request.completed", {"request_id": "r10"})
    assert log.verify().ok and log.verify().n_records == 4


def _append_worker(path: str, n: int, worker: int) -> None:
    log = AuditLog(path, KEY)
    for i in range(n):
        log.append("request.completed", {"worker": worker, "i": i})


def test_concurrent_appends_from_two_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    methods = mp.get_all_start_methods()
    ctx = mp.get_context("fork" if "fork" in methods else "spawn")
    procs = [ctx.Process(target=_append_worker, args=(str(path), 50, w)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    log = AuditLog(path, KEY)
    result = log.verify()
    assert result.ok and result.n_records == 100, result
    records = log.records()
    assert [r["seq"] for r in records] == list(range(1, 101))
    for w in range(2):
        assert [r["payload"]["i"] for r in records if r["payload"]["worker"] == w] == list(
            range(50)
        )


def test_payloads_are_normalised_or_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl", KEY)
    rec = log.append("request.completed", {"path": tmp_path, "nan": float("nan"), "t": (1, 2)})
    assert rec["payload"] == {"path": str(tmp_path), "nan": "NaN", "t": [1, 2]}
    with pytest.raises(AuditError, match="not JSON-serialisable"):
        log.append("request.completed", {"x": object()})
    with pytest.raises(AuditError, match="invalid audit event name"):
        log.append("Bad Event!", {})
    with pytest.raises(AuditError, match="must be a dict"):
        log.append("request.completed", [1])  # type: ignore[arg-type]
    assert log.verify().ok and log.verify().n_records == 1
    assert to_jsonable({1: {2, 1}}) == {"1": [1, 2]}


def test_find_by_event_and_request(tmp_path: Path) -> None:
    log = _log(tmp_path, 3)
    log.append("alias.moved", {"request_id": "r1", "alias": "champion"})
    assert [r["seq"] for r in log.find(request_id="r1")] == [2, 4]
    assert [r["seq"] for r in log.find(event="alias.moved")] == [4]


# --- key and request records -----------------------------------------------------------------


def _settings(tmp_path: Path, key: str | None, demo: bool = False) -> PipelineSettings:
    base = PipelineSettings.from_env(tmp_path)
    return base.model_copy(update={"audit_key": key, "demo_mode": demo})


def test_audit_key_rules(tmp_path: Path) -> None:
    assert audit_key(_settings(tmp_path, "k" * 16)) == b"k" * 16
    assert audit_key(_settings(tmp_path, None, demo=True)) == DEMO_AUDIT_KEY
    assert audit_key(_settings(tmp_path, "k" * 20, demo=True)) == b"k" * 20
    with pytest.raises(AuditError, match=r"^UNLEARN_AUDIT_KEY is not set"):
        audit_key(_settings(tmp_path, None))
    with pytest.raises(AuditError, match="too short"):
        audit_key(_settings(tmp_path, "short"))
    log = open_audit_log(_settings(tmp_path, "k" * 16))
    assert log.path == tmp_path.resolve() / "audit" / "audit.jsonl"


def test_request_records_are_written_atomically_and_history_kept(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "k" * 16)
    path = write_request_record(settings, "r1", {"status": "failed", "n": float("inf")})
    assert path == settings.audit_dir / "records" / "r1.json"
    assert read_request_record(settings, "r1") == {"status": "failed", "n": "Infinity"}
    assert write_request_record(settings, "r1", {"status": "failed", "n": float("inf")}) == path
    assert not (path.parent / "history").exists()  # identical: nothing to keep
    write_request_record(settings, "r1", {"status": "completed"})
    [old] = (path.parent / "history").iterdir()
    assert json.loads(old.read_text())["status"] == "failed"
    assert read_request_record(settings, "r1") == {"status": "completed"}
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_request_record_ids_are_checked(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "k" * 16)
    with pytest.raises(AuditError, match="not a valid request id"):
        write_request_record(settings, "../../etc/x", {})
    with pytest.raises(AuditError, match="no audit record for request 'nope'"):
        read_request_record(settings, "nope")


def test_record_digest_survives_a_json_round_trip(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "k" * 16)
    record = {"metrics": {"after": {"acc": 0.1 + 0.2}}, "name": "é", "p": tmp_path}
    write_request_record(settings, "r1", record)
    assert record_digest(read_request_record(settings, "r1")) == record_digest(record)
