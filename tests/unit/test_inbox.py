"""The request inbox: submission, race-free claims between processes, states, recovery, locks."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.inbox import Claim, Inbox, InboxError, LockTimeoutError, model_lock
from tasks.locks import LockError
from tasks.requests import RequestError
from tasks.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[2]


def _request_text(request_id: str, model: str = "m@champion", classes: str = "[3]") -> str:
    return (
        f"request_id: {request_id}\nmodel: {model}\nforget_classes: {classes}\n"
        "requested_by: dpo@example.com\nreason: GDPR Art. 17\n"
        "received_at: 2025-01-31T09:00:00Z\n"
    )


def _write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def inbox(tmp_path: Path) -> Inbox:
    return Inbox(PipelineSettings.from_env(tmp_path / "root"))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- submit ----------------------------------------------------------------------------------


def test_submit_queues_an_exact_copy_named_by_arrival(inbox: Inbox, tmp_path: Path) -> None:
    source = _write(tmp_path, "req.yaml", _request_text("gdpr-1"))
    queued = inbox.submit(source)
    assert queued.parent == inbox.settings.inbox_dir
    assert re.fullmatch(r"\d{20}__gdpr-1\.yaml", queued.name)
    assert queued.read_bytes() == source.read_bytes()
    assert source.exists()  # submit copies; the sender keeps the original
    [status] = inbox.status()
    assert (status.request_id, status.state, status.model) == ("gdpr-1", "queued", "m@champion")


def test_submit_keeps_arrival_order_even_in_the_same_nanosecond(
    inbox: Inbox, tmp_path: Path
) -> None:
    ids = [f"r{i}" for i in range(5)]
    for rid in ids:
        inbox.submit(_write(tmp_path, f"{rid}.yaml", _request_text(rid)))
    assert [p.name.split("__")[1] for p in inbox.list_queued()] == [f"{r}.yaml" for r in ids]


def test_submit_invalid_is_recorded_in_failed_and_not_queued(inbox: Inbox, tmp_path: Path) -> None:
    source = _write(tmp_path, "bad.yaml", _request_text("gdpr-1", classes="[]"))
    with pytest.raises(RequestError) as info:
        inbox.submit(source)
    assert str(info.value) == "bad.yaml: field 'forget_classes': list should have at least 1 item"
    assert inbox.list_queued() == []
    recorded = info.value.recorded
    assert recorded is not None and recorded.parent == inbox.settings.failed_dir
    assert recorded.read_bytes() == source.read_bytes()
    reason = Path(f"{recorded}.reason.txt").read_text()
    assert reason == f"{info.value}\n"
    [status] = inbox.status()
    assert (status.request_id, status.state, status.reason) == (None, "failed", str(info.value))


def test_submit_rejects_a_second_queued_request_with_the_same_id(
    inbox: Inbox, tmp_path: Path
) -> None:
    inbox.submit(_write(tmp_path, "a.yaml", _request_text("dup")))
    with pytest.raises(RequestError, match="request_id 'dup' is already queued"):
        inbox.submit(_write(tmp_path, "b.yaml", _request_text("dup", classes="[4]")))
    claim = inbox.claim_next()
    assert claim is not None
    with pytest.raises(RequestError, match="already queued or being processed"):
        inbox.submit(_write(tmp_path, "c.yaml", _request_text("dup")))
    assert [s.state for s in inbox.status("dup")] == ["processing", "failed", "failed"]


def test_submit_of_an_oversized_file_records_only_the_reason(inbox: Inbox, tmp_path: Path) -> None:
    source = _write(tmp_path, "huge.yaml", "x: " + "y" * 100_000)
    with pytest.raises(RequestError, match="too large") as info:
        inbox.submit(source)
    assert info.value.recorded is not None and info.value.recorded.read_bytes() == b""
    assert "content not kept" in Path(f"{info.value.recorded}.reason.txt").read_text()


def test_submit_of_a_missing_file_records_nothing(inbox: Inbox, tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="^nope.yaml: file not found$"):
        inbox.submit(tmp_path / "nope.yaml")
    assert inbox.status() == []


# --- claims ----------------------------------------------------------------------------------


def test_claims_are_oldest_first_and_filter_by_model(inbox: Inbox, tmp_path: Path) -> None:
    for rid, model in [("a", "m1"), ("b", "m2"), ("c", "m1")]:
        inbox.submit(_write(tmp_path, f"{rid}.yaml", _request_text(rid, model=model)))
    first = inbox.claim_next(model="m2")
    assert first is not None and first.request_id == "b" and first.ok
    assert first.path.parent == inbox.settings.processing_dir
    assert first.name.endswith("__b.yaml") and first.path.name.startswith(first.name + "~")
    assert inbox.claim_next(model="m2") is None
    assert [c.request_id for c in (inbox.claim_next(), inbox.claim_next())] == ["a", "c"]
    assert inbox.claim_next() is None


def test_hand_dropped_files_are_claimed_by_mtime_and_hidden_files_ignored(inbox: Inbox) -> None:
    d = inbox.settings.inbox_dir
    late = _write(d, "zz-first-by-name.yaml", _request_text("late"))
    early = _write(d, "later-by-name.json", '{"request_id": "x"}')
    os.utime(early, ns=(1_000_000_000, 1_000_000_000))
    os.utime(late, ns=(2_000_000_000, 2_000_000_000))
    _write(d, ".partial.yaml.tmp", "request_id: half-writ")
    assert [p.name for p in inbox.list_queued()] == [early.name, late.name]


def test_invalid_file_is_claimed_and_must_go_to_failed(inbox: Inbox) -> None:
    _write(inbox.settings.inbox_dir, "broken.yaml", "request_id: [unclosed\n")
    _write(inbox.settings.inbox_dir, "0-other-model.yaml", _request_text("ok", model="other"))
    os.utime(inbox.settings.inbox_dir / "0-other-model.yaml", ns=(1, 1))
    claim = inbox.claim_next(model="m")  # the invalid file is claimed whatever the model
    assert claim is not None and not claim.ok and claim.request is None
    assert claim.error is not None and claim.error.startswith("broken.yaml: malformed or truncated")
    failed = inbox.mark_failed(claim, claim.error)
    assert failed == inbox.settings.failed_dir / "broken.yaml"
    assert Path(f"{failed}.reason.txt").read_text().strip() == claim.error
    states = {(s.state, s.request_id) for s in inbox.status()}
    assert states == {("failed", None), ("queued", "ok")}


def test_odd_file_names_in_the_inbox_are_claimed_not_ignored(inbox: Inbox) -> None:
    d = inbox.settings.inbox_dir
    _write(d, "x" * 240 + ".yaml", _request_text("long"))  # too long for name + claim suffix
    _write(d, "looks-like.reason.txt", "request_id: r\n")  # a sidecar name, but in the inbox
    outcomes = {}
    while (claim := inbox.claim_next()) is not None:
        if claim.ok:
            outcomes[claim.request_id] = inbox.mark_done(claim, {}).name
        else:
            outcomes[claim.error] = inbox.mark_failed(claim, claim.error or "").name
    long_name = outcomes.pop("long")
    assert long_name.startswith("x" * 100) and long_name.endswith("x....yaml")
    assert len(long_name) <= 180
    [(error, name)] = outcomes.items()
    assert name == "looks-like.reason.txt" and "unsupported file type '.txt'" in error
    assert {s.state for s in inbox.status()} == {"done", "failed"}


def test_mark_done_writes_the_summary_and_status_reports_the_version(
    inbox: Inbox, tmp_path: Path
) -> None:
    inbox.submit(_write(tmp_path, "r.yaml", _request_text("r1")))
    claim = inbox.claim_next()
    assert claim is not None and claim.request is not None
    done = inbox.mark_done(claim, {"version": 4, "alias": "champion"})
    assert done.parent == inbox.settings.done_dir and done.name == claim.name
    [status] = inbox.status("r1")
    assert (status.state, status.version) == ("done", 4)
    assert status.summary is not None
    assert status.summary["content_hash"] == claim.request.content_hash()
    assert not any(inbox.settings.processing_dir.iterdir())
    with pytest.raises(InboxError, match="no longer held"):
        inbox.mark_done(claim, {})


def test_mark_failed_accepts_a_path_and_keeps_names_unique(inbox: Inbox) -> None:
    d = inbox.settings.inbox_dir
    first = inbox.mark_failed(_write(d, "same.yaml", "a: 1\n"), "first")
    second = inbox.mark_failed(_write(d, "same.yaml", "a: 2\n"), "second\nline")
    assert (first.name, second.name) == ("same.yaml", "same.1.yaml")
    assert Path(f"{second}.reason.txt").read_text() == "second line\n"
    with pytest.raises(InboxError, match="no longer at"):
        inbox.mark_failed(d / "same.yaml", "gone")
    assert not (inbox.settings.failed_dir / "same.2.yaml.reason.txt").exists()


def test_release_puts_the_claim_back_under_its_original_name(inbox: Inbox, tmp_path: Path) -> None:
    queued = inbox.submit(_write(tmp_path, "r.yaml", _request_text("r1")))
    claim = inbox.claim_next()
    assert claim is not None
    assert inbox.release(claim) == queued
    again = inbox.claim_next()
    assert again is not None and again.request_id == "r1"
    with pytest.raises(InboxError):
        inbox.release(claim)


def _processing_file(inbox: Inbox, name: str, host: str, pid: int, claimed_ns: int) -> Path:
    return _write(
        inbox.settings.processing_dir, f"{name}~{host}~{pid}~{claimed_ns}", _request_text("x")
    )


def test_recover_stale_returns_claims_of_dead_processes(inbox: Inbox) -> None:
    from tasks.inbox import _host_token

    host, now = _host_token(), time.time_ns()
    _processing_file(inbox, "dead.yaml", host, _dead_pid(), now)
    _processing_file(inbox, "alive.yaml", host, os.getpid(), now - 10**13)  # alive, however old
    _processing_file(inbox, "far-old.yaml", "other-host", 1, now - 7200 * 10**9)
    _processing_file(inbox, "far-new.yaml", "other-host", 1, now)
    recovered = inbox.recover_stale(max_age_s=3600)
    assert sorted(p.name for p in recovered) == ["dead.yaml", "far-old.yaml"]
    assert {p.parent for p in recovered} == {inbox.settings.inbox_dir}
    left = sorted(p.name.split("~")[0] for p in inbox.settings.processing_dir.iterdir())
    assert left == ["alive.yaml", "far-new.yaml"]


def test_recover_stale_after_kill_9_of_the_claimer(inbox: Inbox, tmp_path: Path) -> None:
    inbox.submit(_write(tmp_path, "r.yaml", _request_text("r1")))
    code = (
        "import sys, time\n"
        "from tasks.inbox import Inbox\nfrom tasks.settings import PipelineSettings\n"
        f"c = Inbox(PipelineSettings.from_env({str(inbox.settings.root)!r})).claim_next()\n"
        "print(c.request_id, flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"r1"
        assert inbox.recover_stale() == []  # owner still alive
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    [back] = inbox.recover_stale()
    assert back.parent == inbox.settings.inbox_dir
    claim = inbox.claim_next()
    assert claim is not None and claim.request_id == "r1"


# --- races between processes ---------------------------------------------------------------


def _mp_context() -> mp.context.BaseContext:
    # fork starts workers in milliseconds; they only touch files, never torch's thread pools
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def _claim_worker(root: str, start: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    inbox = Inbox(PipelineSettings.from_env(root))
    start.wait()
    names = []
    while (claim := inbox.claim_next()) is not None:
        names.append(claim.name)
        inbox.mark_done(claim, {"pid": os.getpid()})
    out.put(names)


@pytest.mark.parametrize("n_workers", [2, 4])
def test_concurrent_claims_take_each_file_exactly_once(tmp_path: Path, n_workers: int) -> None:
    settings = PipelineSettings.from_env(tmp_path / "root")
    inbox = Inbox(settings)
    for i in range(30):
        inbox.submit(_write(tmp_path, f"r{i}.yaml", _request_text(f"r{i:02d}")))
    ctx = _mp_context()
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_claim_worker, args=(str(settings.root), start, out))
        for _ in range(n_workers)
    ]
    for p in procs:
        p.start()
    time.sleep(0.2)
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = [name for names in results for name in names]
    assert len(claimed) == 30 and len(set(claimed)) == 30
    assert sorted(s.request_id for s in inbox.status() if s.state == "done") == [
        f"r{i:02d}" for i in range(30)
    ]
    assert inbox.list_queued() == [] and not any(settings.processing_dir.iterdir())


# --- model lock ----------------------------------------------------------------------------


def test_model_lock_excludes_a_second_holder(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(tmp_path)
    with model_lock(settings, "m", timeout_s=1):
        t0 = time.monotonic()
        with (
            pytest.raises(LockTimeoutError, match="model 'm' is locked by another process"),
            model_lock(settings, "m", timeout_s=0.2),
        ):
            pass
        assert time.monotonic() - t0 >= 0.2
        with model_lock(settings, "other", timeout_s=0):  # per model
            pass
    with model_lock(settings, "m", timeout_s=0):
        pass
    assert (settings.locks_dir / "m.lock").exists()


def test_model_lock_is_released_when_the_holder_is_killed(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(tmp_path)
    code = (
        "import time\nfrom tasks.inbox import model_lock\n"
        "from tasks.settings import PipelineSettings\n"
        f"with model_lock(PipelineSettings.from_env({str(tmp_path)!r}), 'm', timeout_s=5):\n"
        "    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
        with pytest.raises(LockTimeoutError), model_lock(settings, "m", timeout_s=0.1):
            pass
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    with model_lock(settings, "m", timeout_s=5):
        pass


def test_model_lock_refuses_path_like_names(tmp_path: Path) -> None:
    with pytest.raises(LockError, match="not a valid model name"):
        model_lock(PipelineSettings.from_env(tmp_path), "../etc/passwd")


def test_claim_is_a_frozen_record(inbox: Inbox, tmp_path: Path) -> None:
    inbox.submit(_write(tmp_path, "r.yaml", _request_text("r1")))
    claim = inbox.claim_next()
    assert isinstance(claim, Claim)
    with pytest.raises(AttributeError):
        claim.name = "x"  # type: ignore[misc]
