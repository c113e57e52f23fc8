"""The request inbox: ``requests/{inbox,processing,done,failed}/`` on one filesystem.

A request's state is the directory its file is in, and every state change is one atomic
``os.rename``, so a request is never in two states or in none, and a crash at any point leaves
it somewhere :meth:`Inbox.status` can see. Claims are race-free between processes: the rename
from ``inbox/`` to ``processing/`` succeeds for exactly one claimer; the losers get
``FileNotFoundError`` and try the next file.

Layout:
    ``inbox/<UTC ns, 20 digits>__<request_id>.<ext>``
        written by :meth:`Inbox.submit` (the prefix keeps arrival order). Files dropped by hand
        may have any name; they are ordered by modification time. Names starting with ``.`` are
        ignored, so ``cp req.yaml inbox/.req.tmp && mv inbox/.req.tmp inbox/req.yaml`` is the
        way to drop a file without it being claimed half-written.
    ``processing/<name>~<host>~<pid>~<claim ns>``
        the claimer is in the name, so ownership is taken by the same atomic rename.
    ``done/<name>`` + ``done/<name>.result.json``
        the summary passed to :meth:`Inbox.mark_done`.
    ``failed/<name>`` + ``failed/<name>.reason.txt``
        one line saying why. A request that fails validation ends here, never silently dropped.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks._common import one_line
from tasks._fs import atomic_write_bytes, atomic_write_text, fsync_dir, rename_no_clobber
from tasks.locks import LockTimeoutError, inbox_lock, model_lock
from tasks.requests import (
    DeletionRequest,
    RequestError,
    parse_request_bytes,
    read_capped,
)
from tasks.settings import PipelineSettings

__all__ = [
    "Inbox",
    "InboxError",
    "LockTimeoutError",
    "Claim",
    "RequestStatus",
    "RequestState",
    "model_lock",
]

RequestState = Literal["queued", "processing", "done", "failed"]

_PREFIX = re.compile(r"^(\d{20})__([A-Za-z0-9][A-Za-z0-9._-]{0,127})\.(yaml|yml|json)$")
_SIDECARS = (".reason.txt", ".result.json")


class InboxError(RuntimeError):
    """An inbox operation cannot be done (e.g. the claim is no longer held); one-line message."""


@dataclass(frozen=True)
class Claim:
    """A request file this process has moved into ``processing/`` and now owns.

    Attributes:
        path: The file in ``processing/``.
        name: Its name in the inbox (and later in ``done/`` or ``failed/``).
        request: The validated request, or ``None`` when the file is invalid.
        error: Why the file is invalid (one line), else ``None``. Invalid claims must be passed
            to :meth:`Inbox.mark_failed`.
        claimed_at: When the claim was taken (UTC).
    """

    path: Path
    name: str
    request: DeletionRequest | None
    error: str | None
    claimed_at: dt.datetime

    @property
    def ok(self) -> bool:
        return self.request is not None

    @property
    def request_id(self) -> str | None:
        return self.request.request_id if self.request is not None else None


@dataclass(frozen=True)
class RequestStatus:
    """Where one request file is. ``request_id`` is ``None`` for a file that does not parse."""

    request_id: str | None
    state: RequestState
    file: Path
    reason: str | None = None
    version: int | str | None = None
    model: str | None = None
    summary: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Owner:
    name: str
    host: str | None
    pid: int | None
    claimed_ns: int | None


def _host_token() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:32] or "host"


_MAX_NAME_BYTES = 180  # leaves room for the claim suffix within the usual 255-byte limit


def _shorten(name: str) -> str:
    """``name`` cut to fit a claim suffix, extension kept (arrival prefixes are at the front)."""
    if len(name.encode()) <= _MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    ext = f".{ext}" if dot and stem and len(ext) <= 10 else ""
    keep = _MAX_NAME_BYTES - len(ext.encode()) - 3
    head = (stem if ext else name).encode()[:keep].decode("utf-8", errors="ignore")
    return f"{head}...{ext}"


def _parse_processing_name(name: str) -> _Owner:
    parts = name.rsplit("~", 3)
    if len(parts) == 4 and parts[2].isdigit() and parts[3].isdigit():
        return _Owner(parts[0], parts[1], int(parts[2]), int(parts[3]))
    return _Owner(name, None, None, None)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _unique_name(directory: Path, name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    candidate, n = name, 0
    while (directory / candidate).exists() or any(
        (directory / f"{candidate}{s}").exists() for s in _SIDECARS
    ):
        n += 1
        candidate = f"{stem}.{n}.{ext}" if ext else f"{name}.{n}"
    return candidate


def _safe_filename(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100]
    return cleaned or "request"


class Inbox:
    """Queue of deletion requests kept as files under ``settings.requests_dir``.

    Args:
        settings: The pipeline installation.
        max_bytes: Largest request file accepted.
    """

    def __init__(self, settings: PipelineSettings, max_bytes: int = 65536) -> None:
        self.settings = settings
        self.max_bytes = max_bytes

    # --- helpers ---------------------------------------------------------------------------

    def ensure_dirs(self) -> None:
        """Create the four state directories and the lock directory."""
        for d in (
            self.settings.inbox_dir,
            self.settings.processing_dir,
            self.settings.done_dir,
            self.settings.failed_dir,
            self.settings.locks_dir,
        ):
            d.mkdir(parents=True, exist_ok=True)

    def _entries(self, directory: Path) -> list[os.DirEntry[str]]:
        """Request files of a state directory: no hidden/temp files, no folders, and in
        ``done/`` and ``failed/`` no sidecars (in ``inbox/`` every file is a request)."""
        try:
            with os.scandir(directory) as it:
                entries = [
                    e
                    for e in it
                    if not e.name.startswith(".") and not e.is_dir(follow_symlinks=False)
                ]
        except FileNotFoundError:
            return []
        if directory not in (self.settings.done_dir, self.settings.failed_dir):
            return entries
        names = {e.name for e in entries}
        # a sidecar is `<request file><suffix>`; a request that merely ends so is kept
        return [
            e
            for e in entries
            if not any(e.name.endswith(x) and e.name[: -len(x)] in names for x in _SIDECARS)
        ]

    @staticmethod
    def _arrival_key(entry: os.DirEntry[str], name: str) -> tuple[int, str]:
        match = _PREFIX.match(name)
        if match:
            return int(match.group(1)), name
        try:
            return entry.stat(follow_symlinks=False).st_mtime_ns, name
        except FileNotFoundError:
            return 0, name

    def list_queued(self) -> list[Path]:
        """Files waiting in ``inbox/``, oldest first."""
        entries = self._entries(self.settings.inbox_dir)
        entries.sort(key=lambda e: self._arrival_key(e, e.name))
        return [Path(e.path) for e in entries]

    def _read(self, path: Path, name: str) -> DeletionRequest:
        if path.is_symlink():
            raise RequestError(f"{name}: is a symbolic link, not a regular file")
        return parse_request_bytes(read_capped(path, self.max_bytes, name), name)

    def _request_id_of(self, path: Path, name: str) -> tuple[str | None, DeletionRequest | None]:
        match = _PREFIX.match(name)
        if match:
            return match.group(2), None
        try:
            request = self._read(path, name)
        except RequestError:
            return None, None
        return request.request_id, request

    def _active_ids(self) -> set[str]:
        ids: set[str] = set()
        # inbox twice: a file moving between the two directories mid-scan is still seen once
        for directory, processing in (
            (self.settings.inbox_dir, False),
            (self.settings.processing_dir, True),
            (self.settings.inbox_dir, False),
        ):
            for e in self._entries(directory):
                name = _parse_processing_name(e.name).name if processing else e.name
                rid, _ = self._request_id_of(Path(e.path), name)
                if rid is not None:
                    ids.add(rid)
        return ids

    # --- submit ----------------------------------------------------------------------------

    def submit(
        self,
        path: str | os.PathLike[str],
        check: Callable[[DeletionRequest], None] | None = None,
    ) -> Path:
        """Validate a request file and queue a copy of it in ``inbox/``.

        The source file is left in place. An invalid file, one that ``check`` refuses (e.g.
        :func:`tasks.submission.check_submission`: unknown model, bad class, id already
        done), or one whose ``request_id`` is already queued or being processed, is copied to
        ``failed/`` with a ``.reason.txt`` (so a rejection is on record too; it is never
        queued nor claimed) and :class:`RequestError` is raised.

        Returns:
            The queued file, ``inbox/<UTC ns>__<request_id>.<ext>``.

        Raises:
            RequestError: The request is invalid, refused, or its id is already queued.
        """
        source = Path(path)
        if not source.is_file():
            what = "not a regular file" if source.exists() else "file not found"
            raise RequestError(f"{source.name or source}: {what}")
        self.ensure_dirs()
        raw: bytes | None = None
        request: DeletionRequest | None = None
        refused: RequestError | None = None
        try:
            raw = read_capped(source, self.max_bytes)
            request = parse_request_bytes(raw, source.name)
            if check is not None:
                # before the inbox lock: a registry look-up takes seconds, other submits wait
                _run_check(check, request, source.name)
        except RequestError as exc:
            refused = exc
        with inbox_lock(self.settings):
            try:
                if refused is not None:
                    raise refused
                assert request is not None and raw is not None
                if request.request_id in self._active_ids():
                    raise RequestError(
                        f"{source.name}: request_id '{request.request_id}' is already queued "
                        "or being processed"
                    )
            except RequestError as exc:
                exc.recorded = self._record_rejected_submission(source, raw, str(exc))
                raise
            suffix = source.suffix.lower()
            ts = time.time_ns()
            for e in self._entries(self.settings.inbox_dir):
                match = _PREFIX.match(e.name)
                if match and int(match.group(1)) >= ts:
                    ts = int(match.group(1)) + 1  # clocks can step back; order must not
            target = self.settings.inbox_dir / f"{ts:020d}__{request.request_id}{suffix}"
            # temp file (hidden, so never claimed) + fsync + rename: claimers see all or nothing
            return atomic_write_bytes(target, raw)

    def _record_rejected_submission(self, source: Path, raw: bytes | None, reason: str) -> Path:
        failed = self.settings.failed_dir
        # not the `<ns>__<id>` pattern: the id inside may be invalid or a duplicate
        name = _unique_name(failed, f"{time.time_ns():020d}-rejected-{_safe_filename(source.name)}")
        note = "" if raw is not None else " (content not kept: unreadable or too large)"
        atomic_write_text(
            failed / f"{name}.reason.txt", one_line(reason + note, 500, first_line=False) + "\n"
        )
        return atomic_write_bytes(failed / name, raw if raw is not None else b"")

    # --- claims ----------------------------------------------------------------------------

    def claim_next(self, model: str | None = None) -> Claim | None:
        """Claim the oldest queued request (for ``model`` only, when given), or return ``None``.

        The claim is an atomic rename into ``processing/``; when another process wins the race
        for a file, this one moves on to the next. A file that does not parse is claimed
        whatever ``model`` is (it cannot be attributed to a model), returned with ``request``
        ``None`` and ``error`` set; the caller must :meth:`mark_failed` it.
        """
        self.ensure_dirs()
        host, pid = _host_token(), os.getpid()
        for path in self.list_queued():
            if model is not None:
                try:
                    if self._read(path, path.name).model_ref().name != model:
                        continue
                except RequestError:
                    pass  # invalid: claim it so it reaches failed/
            claimed = f"{_shorten(path.name)}~{host}~{pid}~{time.time_ns()}"
            target = self.settings.processing_dir / claimed
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another worker claimed it first
            fsync_dir(self.settings.processing_dir)
            return self._load_claim(target)
        return None

    def _load_claim(self, target: Path) -> Claim:
        owner = _parse_processing_name(target.name)
        claimed = dt.datetime.fromtimestamp((owner.claimed_ns or time.time_ns()) / 1e9, dt.UTC)
        try:
            request: DeletionRequest | None = self._read(target, owner.name)
            error = None
        except RequestError as exc:
            request, error = None, str(exc)
        return Claim(path=target, name=owner.name, request=request, error=error, claimed_at=claimed)

    def _held(self, claim: Claim) -> Path:
        if not claim.path.exists() and not claim.path.is_symlink():
            raise InboxError(
                f"claim on {claim.name} is no longer held (moved out of processing/ by another "
                "process)"
            )
        return claim.path

    def mark_done(self, claim: Claim, summary: dict[str, Any]) -> Path:
        """Move a claimed request to ``done/`` with ``<name>.result.json`` (the summary).

        Returns:
            The file in ``done/``.
        """
        src = self._held(claim)
        done = self.settings.done_dir
        done.mkdir(parents=True, exist_ok=True)
        name = _unique_name(done, claim.name)
        record = {
            "request_id": claim.request_id,
            "content_hash": claim.request.content_hash() if claim.request else None,
            "completed_at": dt.datetime.now(dt.UTC).isoformat(),
            **summary,
        }
        # summary first: after a crash the request is still in processing/ and gets retried
        # (idempotently); never a done/ file without its summary
        text = json.dumps(record, indent=2, sort_keys=True, default=str, allow_nan=True)
        atomic_write_text(done / f"{name}.result.json", text + "\n")
        try:
            os.rename(src, done / name)
        except FileNotFoundError:
            (done / f"{name}.result.json").unlink(missing_ok=True)
            raise InboxError(f"claim on {claim.name} is no longer held") from None
        fsync_dir(done)
        return done / name

    def mark_failed(self, claim_or_path: Claim | str | os.PathLike[str], reason: str) -> Path:
        """Move a request (a claim, or a file in ``inbox/`` or ``processing/``) to ``failed/``.

        Writes ``failed/<name>.reason.txt`` with ``reason`` on one line.

        Returns:
            The file in ``failed/``.

        Raises:
            InboxError: The file is no longer where it was (someone else moved it).
        """
        if isinstance(claim_or_path, Claim):
            src, original = self._held(claim_or_path), claim_or_path.name
        else:
            src = Path(claim_or_path)
            original = (
                _parse_processing_name(src.name).name
                if src.parent.resolve() == self.settings.processing_dir.resolve()
                else src.name
            )
        failed = self.settings.failed_dir
        failed.mkdir(parents=True, exist_ok=True)
        name = _unique_name(failed, original)
        reason_file = failed / f"{name}.reason.txt"
        atomic_write_text(
            reason_file, one_line(reason or "no reason given", 500, first_line=False) + "\n"
        )
        try:
            os.rename(src, failed / name)
        except FileNotFoundError:
            reason_file.unlink(missing_ok=True)
            raise InboxError(f"{original} is no longer at {src}; not marked failed") from None
        fsync_dir(failed)
        return failed / name

    def release(self, claim: Claim) -> Path:
        """Give a claim back: the file returns to ``inbox/`` under its original name."""
        src = self._held(claim)
        try:
            return rename_no_clobber(src, self.settings.inbox_dir, claim.name)
        except FileNotFoundError:
            raise InboxError(f"claim on {claim.name} is no longer held") from None

    def recover_stale(self, max_age_s: float = 3600.0) -> list[Path]:
        """Put back into ``inbox/`` the claims whose owner has died.

        A claim taken on this host is stale as soon as its process is gone (``kill -9``
        included). A claim from another host, or a file in ``processing/`` without an owner
        suffix, is stale once older than ``max_age_s`` seconds. (A recycled pid makes a dead
        owner look alive; such a claim stays until that process ends.)

        Returns:
            The files put back in ``inbox/``.
        """
        host = _host_token()
        now = time.time_ns()
        recovered: list[Path] = []
        for e in self._entries(self.settings.processing_dir):
            owner = _parse_processing_name(e.name)
            if owner.host == host and owner.pid is not None:
                stale = not _pid_alive(owner.pid)
            else:
                try:
                    started = owner.claimed_ns or e.stat(follow_symlinks=False).st_mtime_ns
                except FileNotFoundError:
                    continue
                stale = (now - started) / 1e9 > max_age_s
            if not stale:
                continue
            try:
                recovered.append(
                    rename_no_clobber(Path(e.path), self.settings.inbox_dir, owner.name)
                )
            except FileNotFoundError:
                continue  # another recoverer, or the owner after all
        return recovered

    # --- status ----------------------------------------------------------------------------

    def status(self, request_id: str | None = None) -> list[RequestStatus]:
        """Every request file in every state (oldest first), or only those of ``request_id``."""
        out: list[tuple[tuple[int, str], RequestStatus]] = []
        states: tuple[tuple[RequestState, Path], ...] = (
            ("queued", self.settings.inbox_dir),
            ("processing", self.settings.processing_dir),
            ("done", self.settings.done_dir),
            ("failed", self.settings.failed_dir),
        )
        for state, directory in states:
            for e in self._entries(directory):
                name = _parse_processing_name(e.name).name if state == "processing" else e.name
                rid, request = self._request_id_of(Path(e.path), name)
                if request is None and rid is not None:  # id from the name; read the model too
                    with contextlib.suppress(RequestError):
                        request = self._read(Path(e.path), name)
                if request_id is not None and rid != request_id:
                    continue
                reason, version, summary = None, None, None
                if state == "failed":
                    reason = _read_small_text(directory / f"{e.name}.reason.txt")
                    if reason is None:
                        reason = "reason file missing"
                elif state == "done":
                    summary = _read_small_json(directory / f"{e.name}.result.json")
                    if summary is not None:
                        for key in ("version", "new_version", "model_version"):
                            if summary.get(key) is not None:
                                version = summary[key]
                                break
                model = request.model if request is not None else None
                status = RequestStatus(rid, state, Path(e.path), reason, version, model, summary)
                out.append((self._arrival_key(e, name), status))
        out.sort(key=lambda item: item[0])
        return [s for _, s in out]


def _run_check(
    check: Callable[[DeletionRequest], None], request: DeletionRequest, name: str
) -> None:
    try:
        check(request)
    except RequestError as exc:
        raise RequestError(f"{name}: {exc}") from None


def _read_small_text(path: Path, limit: int = 4096) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_small_json(path: Path, limit: int = 1 << 20) -> dict[str, Any] | None:
    text = _read_small_text(path, limit)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
