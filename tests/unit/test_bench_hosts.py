"""The several-hosts benchmark's figures and request files (nothing is started here)."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.team import _spawn, stop_all, write_request
from flows.bench_hosts import comparison, phase_figures, requests_per_minute, write_outputs
from tasks.requests import load_request

T0 = "2025-01-01T00:00:00+00:00"


def _record(finished: str, total: float, unlearn: float, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": extra.pop("request_id", "r"),
        "status": extra.pop("status", "completed"),
        "finished_at": finished,
        "pipeline_overhead": {
            "total_seconds": total,
            "unlearn_seconds": unlearn,
            "overhead_seconds": total - unlearn,
        },
        **extra,
    }


def _t0() -> float:
    from datetime import datetime

    return datetime.fromisoformat(T0).timestamp()


def test_requests_per_minute() -> None:
    assert requests_per_minute(10, 300.0) == 2.0
    assert requests_per_minute(3, 90.0) == 2.0
    with pytest.raises(ValueError):
        requests_per_minute(10, 0.0)


def test_wall_time_runs_to_the_last_completion_whatever_the_order() -> None:
    records = [
        _record("2025-01-01T00:04:00+00:00", 40.0, 10.0),
        _record("2025-01-01T00:05:00Z", 30.0, 10.0),  # the last one, written with a Z
        _record("2025-01-01T00:02:30+00:00", 20.0, 10.0),
    ]
    f = phase_figures("2 workers", _t0(), records, 2)
    assert f["wall_seconds"] == 300.0
    assert f["requests_per_minute"] == 0.6
    assert f["overhead_mean_seconds"] == 20.0
    assert f["overhead_median_seconds"] == 20.0
    assert f["total_mean_seconds"] == 30.0
    assert f["unlearn_median_seconds"] == 10.0
    assert (f["workers"], f["requests"]) == (2, 3)
    assert "outside_flow_seconds" not in f  # requests overlap: no such figure


def test_outside_the_flow_is_the_wall_time_the_flows_do_not_account_for() -> None:
    records = [
        _record("2025-01-01T00:01:00+00:00", 25.0, 5.0),
        _record("2025-01-01T00:02:00+00:00", 35.0, 5.0),
    ]
    f = phase_figures("1 worker", _t0(), records, 1)
    assert f["outside_flow_seconds"] == 30.0  # (120 - 60) / 2


def test_a_phase_with_a_request_not_completed_is_refused() -> None:
    records = [
        _record("2025-01-01T00:01:00+00:00", 30.0, 10.0),
        _record("2025-01-01T00:02:00+00:00", 30.0, 10.0, request_id="bad", status="failed"),
    ]
    with pytest.raises(ValueError, match="bad"):
        phase_figures("1 worker", _t0(), records, 1)
    with pytest.raises(ValueError):
        phase_figures("1 worker", _t0(), [], 1)


def test_comparison_speedup_and_server_overhead() -> None:
    rows = [
        {"phase": "1 worker", "requests_per_minute": 1.2, "overhead_mean_seconds": 14.0},
        {"phase": "2 workers", "requests_per_minute": 2.1, "overhead_mean_seconds": 19.0},
        {"phase": "embedded", "requests_per_minute": 1.5, "overhead_mean_seconds": 11.5},
    ]
    assert comparison(rows) == {"speedup_2_vs_1": 1.75, "server_overhead_extra_seconds": 2.5}
    rows[0]["outside_flow_seconds"], rows[2]["outside_flow_seconds"] = 12.0, 4.5
    assert comparison(rows)["server_outside_flow_extra_seconds"] == 7.5
    assert comparison(rows[:1]) == {}


def test_outputs_hold_every_row_and_extra_columns(tmp_path: Path) -> None:
    records = [_record("2025-01-01T00:01:00+00:00", 30.0, 10.0)]
    one = {**phase_figures("1 worker", _t0(), records, 1), "requests_on_w1": 1}
    emb = phase_figures("embedded", _t0(), records, 1)
    text = write_outputs(tmp_path, [one, emb], {"how": "test", "machine": "2 CPU cores"})
    assert "| 1 worker | 1 | 1 | 60.0 | 1.0 |" in text and "2 CPU cores" in text
    assert "overhead on the servers (1 worker) minus embedded: +0.00 s inside" in text
    with open(tmp_path / "hosts.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["phase"] for r in rows] == ["1 worker", "embedded"]
    assert rows[0]["requests_on_w1"] == "1" and rows[1]["requests_on_w1"] == ""
    assert (tmp_path / "hosts.md").read_text() == text


def test_the_benchmark_request_is_a_valid_pinned_request(tmp_path: Path) -> None:
    path = write_request(tmp_path / "r.yaml", "h1-003", "bench-a", 3, epochs=2, ref="/1")
    request = load_request(path)
    assert request.model == "bench-a/1"
    assert request.forget_classes == [3]
    assert request.hparams == {"epochs": 2}


@pytest.mark.subprocess
def test_stop_all_ends_the_groups_at_once_and_does_not_wait_on_its_own_zombies(
    tmp_path: Path,
) -> None:
    # a leader that exits at SIGTERM stays a zombie child of this process until reaped
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    procs = [
        _spawn([sys.executable, "-c", code], tmp_path, {}, tmp_path / f"{i}.log") for i in range(2)
    ]
    time.sleep(0.5)
    began = time.monotonic()
    stop_all([p.pid for p in procs], timeout_s=20.0)
    assert time.monotonic() - began < 10.0
    assert all(p.poll() is not None for p in procs)
