"""Tamper-evident audit log: append-only JSON Lines, SHA-256 hash chain, HMAC signatures.

Each line of ``audit/audit.jsonl`` is one record in canonical JSON (sorted keys, no spaces,
ASCII) with the fields:

``seq``
    1, 2, 3, ... (1-based; equal to the line number in an intact log).
``ts``
    UTC time of the append, ISO 8601.
``event``, ``payload``
    What happened (``request.completed``, ``request.rejected``, ``request.failed``,
    ``alias.moved``, ...) and its details.
``prev_hash``
    SHA-256 of the previous line (the previous record's canonical JSON, signature included);
    ``"0" * 64`` for the first record.
``hash``
    SHA-256 of the canonical JSON of ``{seq, ts, event, payload, prev_hash}``.
``signature``
    HMAC-SHA256 of ``hash`` with the key from ``UNLEARN_AUDIT_KEY``.

A signed *head* file next to the log (``audit.jsonl.head``) records the number of records and
the hash of the last line, so removing whole records from the end is detected too.
:meth:`AuditLog.verify` reports the first bad record by its 1-based line number. Appends hold
an exclusive ``flock`` on the log, so processes never interleave or fork the chain.

What this does and does not protect: without the key nobody can edit, insert, delete, reorder
or forge records undetected. Whoever holds the key can rewrite the whole log, so keep the key
in a secret store and ship copies of the log (or its head hash) somewhere append-only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import fcntl
import hashlib
import hmac
import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks._fs import atomic_write_text, fsync_dir
from tasks.requests import canonical_json, validate_request_id
from tasks.settings import PipelineSettings

__all__ = [
    "AuditError",
    "AuditLog",
    "AuditVerification",
    "SharedAuditLog",
    "GENESIS_HASH",
    "DEMO_AUDIT_KEY",
    "MIN_KEY_BYTES",
    "audit_key",
    "open_audit_log",
    "to_jsonable",
    "record_digest",
    "request_record_path",
    "write_request_record",
    "read_request_record",
]

GENESIS_HASH = "0" * 64
DEMO_AUDIT_KEY = b"unlearn-demo-mode-PUBLIC-audit-key-not-a-secret"
MIN_KEY_BYTES = 16
_FIELDS = frozenset({"seq", "ts", "event", "payload", "prev_hash", "hash", "signature"})
_EVENT_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class AuditError(ValueError):
    """The audit log or a request record cannot be written or read; one-line message."""


@dataclass(frozen=True)
class AuditVerification:
    """Result of :meth:`AuditLog.verify`.

    Attributes:
        ok: The whole log verifies.
        n_records: Lines read (complete or not).
        first_bad: 1-based line number (= expected ``seq``) of the first bad record, or
            ``None`` when the log is good or the problem is not one record (head file missing).
        reason: One line saying what is wrong, ``None`` when ``ok``.
    """

    ok: bool
    n_records: int
    first_bad: int | None
    reason: str | None

    def __str__(self) -> str:
        if self.ok:
            return f"audit log OK: {self.n_records} records, hash chain and signatures verified"
        where = f"record {self.first_bad}: " if self.first_bad is not None else ""
        return f"audit log INVALID at {where}{self.reason}"


def to_jsonable(obj: Any, _depth: int = 0) -> Any:
    """Plain JSON types for a payload; non-finite floats become the strings ``"NaN"`` etc.

    Example:
        >>> to_jsonable({"p": __import__("pathlib").Path("/a"), "x": float("nan"), "s": {2, 1}})
        {'p': '/a', 'x': 'NaN', 's': [1, 2]}
    """
    if _depth > 64:
        raise AuditError("payload is nested too deeply (over 64 levels)")
    d = _depth + 1
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v, d) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v, d) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted((to_jsonable(v, d) for v in obj), key=canonical_json)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, d)
    if isinstance(obj, bytes):
        return obj.hex()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), d)
    if hasattr(obj, "model_dump"):  # pydantic
        return to_jsonable(obj.model_dump(mode="json"), d)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist(), d)
    if hasattr(obj, "item"):
        return to_jsonable(obj.item(), d)
    raise AuditError(f"payload value of type {type(obj).__name__} is not JSON-serialisable")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _next_link(last: bytes | None) -> tuple[int, str]:
    """The sequence number and previous-record hash of the record after ``last`` (the log's
    last line; ``None`` for an empty log), for the local and the shared writer alike."""
    if last is None:
        return 1, GENESIS_HASH
    try:
        seq = int(json.loads(last)["seq"]) + 1
    except (ValueError, KeyError, TypeError):
        raise AuditError(
            "cannot append: the last audit record is corrupt (run `unlearn audit verify`)"
        ) from None
    return seq, _sha256(last)


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a request record's canonical JSON; put it in the audit event that cites it."""
    return _sha256(canonical_json(to_jsonable(record)).encode("ascii"))


class AuditLog:
    """Append-only, hash-chained, HMAC-signed JSON Lines log.

    Args:
        path: The ``.jsonl`` file (created on the first append).
        key: HMAC key (see :func:`audit_key`).

    Example:
        >>> import tempfile, pathlib
        >>> log = AuditLog(pathlib.Path(tempfile.mkdtemp()) / "a.jsonl", b"k" * 32)
        >>> log.append("request.completed", {"request_id": "r1"})["seq"]
        1
        >>> log.verify().ok
        True
    """

    def __init__(self, path: str | os.PathLike[str], key: bytes) -> None:
        if not key:
            raise AuditError("audit key is empty")
        self.path = Path(path)
        self._key = bytes(key)

    @property
    def head_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode("ascii"), hashlib.sha256).hexdigest()

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT if exclusive else os.O_RDONLY
        fd = os.open(self.path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield fd
        finally:
            os.close(fd)

    @staticmethod
    def _last_line(fd: int, size: int) -> bytes:
        """The last line (without its newline) of a non-empty file that ends with a newline."""
        if os.pread(fd, 1, size - 1) != b"\n":
            raise AuditError(
                "cannot append: the audit log ends with an incomplete record "
                "(run `unlearn audit verify`)"
            )
        buf, pos = b"", size - 1  # buf holds bytes [pos, size - 1)
        while pos > 0:
            start = max(0, pos - 8192)
            buf = os.pread(fd, pos - start, start) + buf
            pos = start
            cut = buf.rfind(b"\n")
            if cut >= 0:
                return buf[cut + 1 :]
        return buf

    def append(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Append one signed record under an exclusive lock, fsync it, and return it.

        Raises:
            AuditError: Bad event name or payload, or the log's tail is corrupt.
        """
        clean = self._validate(event, payload)
        with self._locked(exclusive=True) as fd:
            size = os.fstat(fd).st_size
            seq, prev_hash = _next_link(self._last_line(fd, size) if size else None)
            record, line = self._build(seq, event, clean, prev_hash)
            data = line + b"\n"
            written = os.write(fd, data)  # O_APPEND: one write lands at the end, whole
            if written != len(data):
                raise AuditError(f"short write to the audit log ({written} of {len(data)} bytes)")
            os.fsync(fd)
            if size == 0:
                fsync_dir(self.path.parent)
            self._write_head(seq, _sha256(line))
        return record

    def _build(
        self, seq: int, event: str, clean: Any, prev_hash: str
    ) -> tuple[dict[str, Any], bytes]:
        """The signed record number ``seq`` and its canonical line (no newline)."""
        body = {
            "seq": seq,
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "event": event,
            "payload": clean,
            "prev_hash": prev_hash,
        }
        digest = _sha256(canonical_json(body).encode("ascii"))
        record = {**body, "hash": digest, "signature": self._sign(digest)}
        return record, canonical_json(record).encode("ascii")

    def _head_text(self, n_records: int, last_line_sha256: str) -> str:
        head = {
            "n_records": n_records,
            "last_line_sha256": last_line_sha256,
            "signature": self._sign(f"{n_records}:{last_line_sha256}"),
        }
        return canonical_json(head) + "\n"

    def _write_head(self, n_records: int, last_line_sha256: str) -> None:
        atomic_write_text(self.head_path, self._head_text(n_records, last_line_sha256))

    @staticmethod
    def _validate(event: str, payload: dict[str, Any]) -> Any:
        if not isinstance(event, str) or not re.fullmatch(_EVENT_PATTERN, event):
            raise AuditError(f"invalid audit event name {event!r}")
        if not isinstance(payload, dict):
            raise AuditError(f"audit payload must be a dict, not {type(payload).__name__}")
        return to_jsonable(payload)

    def _snapshot(self) -> tuple[bytes, bytes | None]:
        """The log's bytes and its head file, read together under a shared lock."""
        if not self.path.exists():
            head = self.head_path.read_bytes() if self.head_path.exists() else None
            return b"", head
        with self._locked(exclusive=False) as fd:
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            head = self.head_path.read_bytes() if self.head_path.exists() else None
        return b"".join(chunks), head

    def records(self) -> list[dict[str, Any]]:
        """Every record, parsed (no verification; use :meth:`verify` for that).

        Raises:
            AuditError: A line is not JSON.
        """
        data, _ = self._snapshot()
        out = []
        for i, line in enumerate(data.splitlines(), start=1):
            try:
                rec = json.loads(line)
            except ValueError:
                raise AuditError(f"audit log line {i} is not valid JSON") from None
            out.append(rec)
        return out

    def find(self, event: str | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        """Records with the given event and/or ``payload.request_id``."""
        return [
            r
            for r in self.records()
            if (event is None or r.get("event") == event)
            and (request_id is None or (r.get("payload") or {}).get("request_id") == request_id)
        ]

    def verify(self) -> AuditVerification:
        """Check every record: canonical form, sequence, chain, hash, signature, and the head.

        Returns:
            An :class:`AuditVerification`; ``first_bad`` is 1-based.
        """
        data, head_raw = self._snapshot()
        if not data:
            if head_raw is not None and self._head_count(head_raw) not in (0, None):
                return AuditVerification(
                    False, 0, 1, "the log is empty but its head records earlier entries"
                )
            return AuditVerification(True, 0, None, None)
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        if complete:
            lines = lines[:-1]
        n = len(lines)
        prev = GENESIS_HASH
        for i, line in enumerate(lines, start=1):
            problem = self._check_line(i, line, prev, last_partial=(i == n and not complete))
            if problem is not None:
                return AuditVerification(False, n, i, problem)
            prev = _sha256(line)
        if head_raw is None:
            return AuditVerification(
                False, n, None, f"head file {self.head_path.name} is missing (log may be cut)"
            )
        try:
            head = json.loads(head_raw)
            count, last_sha = int(head["n_records"]), str(head["last_line_sha256"])
            signature = str(head["signature"])
        except (ValueError, KeyError, TypeError):
            return AuditVerification(False, n, None, "head file is corrupt")
        if not hmac.compare_digest(self._sign(f"{count}:{last_sha}"), signature):
            return AuditVerification(False, n, None, "head file signature is invalid")
        if count > n:
            return AuditVerification(
                False,
                n,
                n + 1,
                f"missing: the log ends after record {n} but its head records {count} "
                "(records deleted from the end)",
            )
        if count >= 1 and _sha256(lines[count - 1]) != last_sha:
            return AuditVerification(False, n, count, "record does not match the signed head")
        return AuditVerification(True, n, None, None)

    @staticmethod
    def _head_count(head_raw: bytes) -> int | None:
        try:
            return int(json.loads(head_raw)["n_records"])
        except (ValueError, KeyError, TypeError):
            return None

    def _check_line(self, i: int, line: bytes, prev: str, last_partial: bool) -> str | None:
        if last_partial:
            return "truncated: the last record is incomplete (no end of line)"
        try:
            text = line.decode("ascii")
            rec = json.loads(text)
        except (UnicodeDecodeError, ValueError):
            return "not valid JSON (edited or truncated)"
        if not isinstance(rec, dict) or set(rec) != _FIELDS:
            return "unexpected structure (fields added or removed)"
        try:
            canonical = canonical_json(rec)
        except ValueError:
            return "not valid JSON (edited)"
        if canonical != text:
            return "not in canonical form (edited)"
        if rec["seq"] != i or isinstance(rec["seq"], bool):
            return f"seq is {rec['seq']!r}, expected {i} (record deleted, inserted or reordered)"
        if rec["prev_hash"] != prev:
            return "prev_hash does not match the previous record (deleted, inserted or reordered)"
        body = {k: rec[k] for k in ("seq", "ts", "event", "payload", "prev_hash")}
        digest = _sha256(canonical_json(body).encode("ascii"))
        if rec["hash"] != digest:
            return "hash does not match the record's content (edited)"
        sig = rec["signature"]
        if not isinstance(sig, str) or not hmac.compare_digest(self._sign(digest), sig):
            return "signature is invalid (forged, or signed with another key)"
        return None


class SharedAuditLog(AuditLog):
    """The same chain at an fsspec URL every host can write (``UNLEARN_AUDIT_URI``).

    Object stores cannot append, so one append rewrites the log (read, add a line, write a
    temporary object, move it over the log) and then its head, under
    :func:`tasks.coordination.audit_writer`: one writer at a time across hosts. A writer killed
    between the log and the head leaves the head one record behind, which :meth:`verify`
    accepts (it detects records cut from the end, not a head that lags).

    Args:
        url: The folder, e.g. ``file:///shared/audit`` or ``s3://bucket/audit``.
        key: HMAC key (see :func:`audit_key`).
        settings: Which lock guards the writer (server or embedded mode).
    """

    def __init__(self, url: str, key: bytes, settings: PipelineSettings) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(self.url)
        super().__init__(Path(root) / "audit.jsonl", key)
        self._settings = settings
        self._log = f"{root}/audit.jsonl"
        self._head = f"{root}/audit.jsonl.head"

    def _lock_file(self) -> Path | None:
        # a shared folder can hold its own lock file; an object store cannot
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return Path(self._log + ".lock") if "file" in protocols else None

    def _read(self, path: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _replace(self, path: str, data: bytes) -> None:
        temporary = f"{path}.{os.getpid()}.{time.time_ns()}.tmp"
        self.fs.pipe_file(temporary, data)
        self.fs.mv(temporary, path)

    def append(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Append one signed record under the shared writer lock and return it."""
        from tasks.coordination import audit_writer

        clean = self._validate(event, payload)
        self.fs.makedirs(str(Path(self._log).parent), exist_ok=True)
        with audit_writer(self._settings, self._lock_file()):
            data = self._read(self._log) or b""
            if data and not data.endswith(b"\n"):
                raise AuditError(
                    "cannot append: the audit log ends with an incomplete record "
                    "(run `unlearn audit verify`)"
                )
            seq, prev_hash = _next_link(data[:-1].rsplit(b"\n", 1)[-1] if data else None)
            record, line = self._build(seq, event, clean, prev_hash)
            self._replace(self._log, data + line + b"\n")
            self._replace(self._head, self._head_text(seq, _sha256(line)).encode("ascii"))
        return record

    def _snapshot(self) -> tuple[bytes, bytes | None]:
        # the head first: a concurrent append can only make the log longer than its head
        head = self._read(self._head)
        return self._read(self._log) or b"", head


def audit_key(settings: PipelineSettings) -> bytes:
    """The HMAC key: ``UNLEARN_AUDIT_KEY``, or a fixed public key in demo mode.

    Raises:
        AuditError: No key is set outside demo mode, or the key is shorter than 16 bytes.
    """
    if settings.audit_key:
        key = settings.audit_key.encode("utf-8")
        if len(key) < MIN_KEY_BYTES:
            raise AuditError(
                f"UNLEARN_AUDIT_KEY is too short ({len(key)} bytes); use at least "
                f"{MIN_KEY_BYTES}, e.g. the output of `python -c 'import secrets; "
                "print(secrets.token_hex(32))'`"
            )
        return key
    if settings.demo_mode:
        return DEMO_AUDIT_KEY
    raise AuditError(
        "UNLEARN_AUDIT_KEY is not set; set it to a secret of at least 16 characters "
        "(or UNLEARN_DEMO_MODE=1 for a demo with a public, insecure key)"
    )


def open_audit_log(settings: PipelineSettings) -> AuditLog:
    """The installation's audit log with its key: the shared one at ``UNLEARN_AUDIT_URI``
    when set (every host writes one chain), else ``settings.audit_log`` on this disk."""
    if settings.audit_uri:
        return SharedAuditLog(settings.audit_uri, audit_key(settings), settings)
    return AuditLog(settings.audit_log, audit_key(settings))


def request_record_path(settings: PipelineSettings, request_id: str) -> Path:
    """``audit/records/<request_id>.json`` (the id is checked, so no path traversal)."""
    try:
        validate_request_id(request_id)
    except ValueError as exc:
        raise AuditError(f"request id: {exc}") from None
    return settings.audit_dir / "records" / f"{request_id}.json"


def write_request_record(
    settings: PipelineSettings, request_id: str, record: dict[str, Any]
) -> Path:
    """Write a request's audit record atomically to ``audit/records/<request_id>.json``.

    An existing, different record is kept as ``audit/records/history/<id>.<UTC ns>.json``
    before it is replaced, so a later rejection never erases an earlier completion.

    Returns:
        The record file.
    """
    path = request_record_path(settings, request_id)
    text = json.dumps(to_jsonable(record), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if path.exists():
        old = path.read_bytes()
        if old == text.encode("utf-8"):
            return path
        previous = path.parent / "history" / f"{request_id}.{time.time_ns()}.json"
        atomic_write_text(previous, old.decode("utf-8", errors="replace"))
    written = atomic_write_text(path, text)
    if settings.audit_uri:
        # every host reads the request's record from the shared store (idempotency, resume)
        _write_shared_record(settings.audit_uri, request_id, text.encode("utf-8"))
    return written


def _shared_record_url(audit_uri: str, request_id: str) -> str:
    return f"{audit_uri.rstrip('/')}/records/{request_id}.json"


def _write_shared_record(audit_uri: str, request_id: str, data: bytes) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(_shared_record_url(audit_uri, request_id))
    fs.makedirs(str(Path(path).parent), exist_ok=True)
    try:
        old = bytes(fs.cat_file(path))
    except FileNotFoundError:
        old = None
    if old == data:
        return
    if old is not None:  # an earlier record is kept, as on the local disk
        history = f"{Path(path).parent}/history"
        fs.makedirs(history, exist_ok=True)
        fs.pipe_file(f"{history}/{request_id}.{time.time_ns()}.json", old)
    temporary = f"{path}.{os.getpid()}.{time.time_ns()}.tmp"
    fs.pipe_file(temporary, data)
    fs.mv(temporary, path)


def _read_shared_record(audit_uri: str, request_id: str, max_bytes: int) -> bytes | None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(_shared_record_url(audit_uri, request_id))
    try:
        if fs.size(path) > max_bytes:
            raise AuditError(f"audit record {request_id}.json is too large")
        return bytes(fs.cat_file(path))
    except FileNotFoundError:
        return None


def read_request_record(
    settings: PipelineSettings, request_id: str, max_bytes: int = 16 << 20
) -> dict[str, Any]:
    """Read the request's record: from ``UNLEARN_AUDIT_URI``'s ``records/`` when it is there
    (written by any host), else ``audit/records/<request_id>.json``.

    Raises:
        AuditError: No such record, too large, or not a JSON object.
    """
    path = request_record_path(settings, request_id)
    shared = (
        _read_shared_record(settings.audit_uri, request_id, max_bytes)
        if settings.audit_uri
        else None
    )
    if shared is None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise AuditError(f"no audit record for request '{request_id}' ({path})") from None
        if size > max_bytes:
            raise AuditError(f"audit record {path.name} is too large ({size} bytes)")
    try:
        text = shared.decode("utf-8") if shared is not None else path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuditError(f"audit record {path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise AuditError(f"audit record {path.name} is not a JSON object")
    return data
