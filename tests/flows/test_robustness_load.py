"""Load: 50 tiny requests drained by two ``process_inbox`` workers running at the same time.

Both workers are real processes on the same project root: the same inbox (claims by atomic
rename), the same MLflow SQLite store, the same DVC repository and the same audit log. The
requests alternate between two models, so the two workers really do run side by side (a
model's requests are serialised by its lock). Afterwards every request is in ``done/`` or
``failed/`` exactly once, was processed by exactly one worker, has at most one model version,
and neither worker saw SQLite's "database is locked".

Run with ``-s`` to see the figures (requests, workers, wall time, lost, duplicated).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.flows._robust import (
    assert_alias_history_matches_registry,
    bootstrap_model,
    start_worker,
)
from tests.flows.conftest import write_request

N_REQUESTS = 50
MODELS = ("robust-load-a", "robust-load-b")
OUTCOMES = ("request.completed", "request.skipped", "request.rejected", "request.failed")


pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture
def load_models(project: dict[str, Any]) -> tuple[str, ...]:
    """The two models, version 1 each, in this test's own root."""
    for name in MODELS:
        assert bootstrap_model(project["settings"], name)["version"] == 1
    return MODELS


def test_two_workers_drain_50_requests_once_each(
    load_models: tuple[str, ...], project: dict[str, Any], tmp_path: Path
) -> None:
    from tasks.audit import open_audit_log
    from tasks.inbox import Inbox
    from tasks.registry import ModelRegistry

    settings = project["settings"]
    inbox = Inbox(settings)
    ids = [f"load-{i:03d}" for i in range(N_REQUESTS)]
    model_of = {rid: load_models[i % 2] for i, rid in enumerate(ids)}
    for i, rid in enumerate(ids):
        source = write_request(
            tmp_path / f"{rid}.yaml",
            rid,
            model=f"{model_of[rid]}@champion",
            forget_classes=f"[{i % 10}]",
            hparams="{epochs: 1}",  # tiny: one pass over 50 images
        )
        inbox.submit(source)
    assert len(inbox.list_queued()) == N_REQUESTS

    started = time.perf_counter()
    workers = [start_worker(settings.root, tmp_path / f"worker-{n}.log") for n in (1, 2)]
    finished = [w.wait(timeout=1800) for w in workers]
    wall = time.perf_counter() - started

    for code, output, _ in finished:
        assert code == 0, output[-4000:]
        assert "database is locked" not in output.lower(), "MLflow/SQLite lock contention"
    processed = [
        int(line.split()[1])
        for _, output, _ in finished
        for line in output.splitlines()
        if line.startswith("WORKER-RESULTS")
    ]
    assert len(processed) == 2 and all(n > 0 for n in processed), processed  # both worked

    states = inbox.status()
    assert not [s for s in states if s.state in ("queued", "processing")]
    per_request = Counter(s.request_id for s in states if s.request_id in model_of)
    lost = [rid for rid in ids if per_request[rid] == 0]
    twice = [rid for rid, n in per_request.items() if n > 1]
    done = {s.request_id for s in states if s.state == "done" and s.request_id in model_of}
    failed = [s for s in states if s.state == "failed" and s.request_id in model_of]

    audit = open_audit_log(settings)
    outcomes = Counter(
        r["payload"]["request_id"]
        for r in audit.records()
        if r["event"] in OUTCOMES and r["payload"].get("request_id") in model_of
    )
    duplicated_versions = {
        rid: len(found)
        for rid in ids
        if len(found := ModelRegistry.of(settings).versions_for_request(model_of[rid], rid))
        != (rid in done)
    }
    print(
        f"\nLOAD: requests={N_REQUESTS} workers=2 wall_s={wall:.1f} "
        f"per_worker={processed} done={len(done)} failed={len(failed)} lost={len(lost)} "
        f"processed_twice={len(twice)} duplicated_versions={len(duplicated_versions)}"
    )
    assert sum(processed) == N_REQUESTS  # every request processed by exactly one worker
    assert not lost and not twice
    assert not failed, [(s.request_id, s.reason) for s in failed]
    assert all(outcomes[rid] == 1 for rid in ids), outcomes  # one outcome record each
    assert not duplicated_versions
    for name in load_models:
        rows = ModelRegistry.of(settings).list_versions(name)
        assert all(r["complete"] for r in rows)
        assert len(rows) == 1 + sum(model_of[rid] == name for rid in done)
        assert assert_alias_history_matches_registry(settings, name) >= 1
    assert audit.verify().ok
