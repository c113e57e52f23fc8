"""Several hosts benchmark (issue 10): 2 workers against 1, servers against the embedded default.

``python -m flows.bench_hosts --out bench_results`` starts a team in a temporary folder with
the functions of ``deploy/team.py`` (``make team-up``): a real ``prefect server``, a real
``mlflow server``, one folder standing in for S3, and worker processes each in its own git
clone. It bootstraps small models into the server registry, pauses the scheduled deployments
(only the requests take the workers), then submits the same requests
(``--requests``, default 10, round-robin over the models, each pinned to version 1 with
``hparams: {epochs: 2}``) with ``unlearn submit`` from a third clone three times:

1. one worker (``prefect worker start --pool unlearn --limit 1``);
2. two workers, in two clones (per-model serialisation still lets them overlap, as the
   requests alternate between models);
3. embedded, no servers: ``unlearn submit`` into the local inbox of a plain project root
   bootstrapped the same way, then ``unlearn process``.

Throughput is requests per minute from the first submit to the last completion (the request
records' ``finished_at``). The per-request overhead is the record's
``pipeline_overhead.overhead_seconds`` (the whole flow minus the unlearning itself); the
servers' figure comes from the one-worker phase, where no request waits for another. With one
request at a time, the wall time minus the flows' own seconds, per request, is what
submitting, queueing and starting each flow run cost (``outside_flow_seconds``).

Every worker (and the embedded run) gets ``--threads`` torch threads (default 1: one worker
stands in for one host's core). Writes ``hosts.md`` and ``hosts.csv`` under ``--out`` and
prints the table. Every process it starts is stopped on success, failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from deploy import team as T

__all__ = [
    "PhaseFigures",
    "main",
    "phase_figures",
    "render_markdown",
    "requests_per_minute",
    "run_bench",
    "write_outputs",
]

MODELS = ("bench-a", "bench-b", "bench-c")
AUDIT_KEY = "bench-hosts-audit-key-0123456789abcdef0123"
FINAL_STATES = ("Completed", "Failed", "Crashed", "Cancelled")
#: What the server env and a developer's shell may set that an embedded project must not see.
_SERVER_VARS = (
    "PREFECT_API_URL",
    "MLFLOW_TRACKING_URI",
    "UNLEARN_DVC_REMOTE",
    "UNLEARN_AUDIT_URI",
    "UNLEARN_MLFLOW_ARTIFACTS",
    "UNLEARN_COORDINATION",
)
PhaseFigures = dict[str, Any]


# --- the figures (pure) -----------------------------------------------------------------------


def requests_per_minute(requests: int, seconds: float) -> float:
    """Throughput of ``requests`` done in ``seconds``.

    Example:
        >>> requests_per_minute(10, 300.0)
        2.0
    """
    if requests < 0 or seconds <= 0:
        raise ValueError(f"need requests >= 0 and seconds > 0, got {requests}, {seconds}")
    return requests * 60.0 / seconds


def _epoch(iso: str) -> float:
    stamp = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


def phase_figures(
    phase: str, started_at: float, records: Sequence[Mapping[str, Any]], workers: int
) -> PhaseFigures:
    """One row of the table from the completed request records of one phase.

    Args:
        phase: Its name (``1 worker``, ``2 workers``, ``embedded``).
        started_at: Epoch seconds of the first submit.
        records: The request records (``finished_at``, ``pipeline_overhead``); each must
            be ``completed``.
        workers: How many workers drained the queue.

    Returns:
        ``requests``, ``wall_seconds`` (first submit to last ``finished_at``),
        ``requests_per_minute``, the mean and median over requests of
        ``overhead_seconds``, ``total_seconds`` and ``unlearn_seconds`` and, with one
        worker, ``outside_flow_seconds``: (wall - the flows' total seconds) / requests, the
        time per request spent submitting, queueing and starting a flow run.

    Example:
        >>> recs = [{"status": "completed", "finished_at": "2025-01-01T00:01:00+00:00",
        ...          "pipeline_overhead": {"total_seconds": 30.0, "unlearn_seconds": 10.0,
        ...                                "overhead_seconds": 20.0}}]
        >>> f = phase_figures("1 worker", _epoch("2025-01-01T00:00:00+00:00"), recs, 1)
        >>> f["wall_seconds"], f["requests_per_minute"], f["overhead_mean_seconds"]
        (60.0, 1.0, 20.0)
        >>> f["outside_flow_seconds"]
        30.0
    """
    if not records:
        raise ValueError(f"{phase}: no records")
    not_done = [r.get("request_id") for r in records if r.get("status") != "completed"]
    if not_done:
        raise ValueError(f"{phase}: requests not completed: {not_done}")
    wall = max(_epoch(str(r["finished_at"])) for r in records) - started_at
    figures: PhaseFigures = {
        "phase": phase,
        "workers": workers,
        "requests": len(records),
        "wall_seconds": round(wall, 1),
        "requests_per_minute": round(requests_per_minute(len(records), wall), 3),
    }
    for key in ("overhead", "total", "unlearn"):
        values = [float(r["pipeline_overhead"][f"{key}_seconds"]) for r in records]
        figures[f"{key}_mean_seconds"] = round(statistics.fmean(values), 2)
        figures[f"{key}_median_seconds"] = round(statistics.median(values), 2)
    if workers == 1:
        # one request at a time: what the wall time holds beyond the flows themselves
        # (submitting, queueing, a flow run's process start-up), per request
        inside = sum(float(r["pipeline_overhead"]["total_seconds"]) for r in records)
        figures["outside_flow_seconds"] = round((wall - inside) / len(records), 2)
    return figures


def comparison(rows: Sequence[PhaseFigures]) -> dict[str, float]:
    """Speed-up of 2 workers over 1, and the servers' extra overhead over the embedded one.

    Example:
        >>> comparison([
        ...     {"phase": "1 worker", "requests_per_minute": 2.0, "overhead_mean_seconds": 9.0},
        ...     {"phase": "2 workers", "requests_per_minute": 3.0, "overhead_mean_seconds": 12.0},
        ...     {"phase": "embedded", "requests_per_minute": 2.5, "overhead_mean_seconds": 6.0}])
        {'speedup_2_vs_1': 1.5, 'server_overhead_extra_seconds': 3.0}
    """
    by = {r["phase"]: r for r in rows}
    out: dict[str, float] = {}
    if "1 worker" in by and "2 workers" in by:
        one, two = by["1 worker"]["requests_per_minute"], by["2 workers"]["requests_per_minute"]
        out["speedup_2_vs_1"] = round(two / one, 2)
    if "1 worker" in by and "embedded" in by:
        server, embedded = by["1 worker"], by["embedded"]
        out["server_overhead_extra_seconds"] = round(
            server["overhead_mean_seconds"] - embedded["overhead_mean_seconds"], 2
        )
        if "outside_flow_seconds" in server and "outside_flow_seconds" in embedded:
            out["server_outside_flow_extra_seconds"] = round(
                server["outside_flow_seconds"] - embedded["outside_flow_seconds"], 2
            )
    return out


_COLUMNS = (
    ("phase", "phase"),
    ("workers", "workers"),
    ("requests", "requests"),
    ("wall_seconds", "wall s"),
    ("requests_per_minute", "requests/min"),
    ("overhead_mean_seconds", "overhead mean s"),
    ("overhead_median_seconds", "overhead median s"),
    ("unlearn_mean_seconds", "unlearning mean s"),
    ("total_mean_seconds", "flow total mean s"),
    ("outside_flow_seconds", "outside the flow s/request"),
)


def render_markdown(rows: Sequence[PhaseFigures], meta: Mapping[str, Any]) -> str:
    """``hosts.md``: the table, the comparison and how it was measured."""
    lines = [
        "## Several hosts: 2 workers against 1, servers against embedded",
        "",
        "| " + " | ".join(title for _, title in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    lines += ["| " + " | ".join(str(r.get(key, "")) for key, _ in _COLUMNS) + " |" for r in rows]
    figures = comparison(rows)
    lines.append("")
    if "speedup_2_vs_1" in figures:
        lines.append(f"2 workers vs 1: x{figures['speedup_2_vs_1']} requests per minute.")
    if "server_overhead_extra_seconds" in figures:
        lines.append(
            "Per-request overhead on the servers (1 worker) minus embedded: "
            f"{figures['server_overhead_extra_seconds']:+.2f} s inside the flow"
            + (
                f", {figures['server_outside_flow_extra_seconds']:+.2f} s outside it."
                if "server_outside_flow_extra_seconds" in figures
                else "."
            )
        )
    lines += ["", "How: " + str(meta.get("how", "")), ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "how"]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: Sequence[PhaseFigures], meta: Mapping[str, Any]) -> str:
    """Write ``hosts.md``, ``hosts.csv`` and ``hosts.json`` under ``out``; the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = render_markdown(rows, meta)
    (out / "hosts.md").write_text(text)
    keys = [key for key, _ in _COLUMNS] + sorted({k for r in rows for k in r} - set(dict(_COLUMNS)))
    with open(out / "hosts.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    data = {"rows": list(rows), "comparison": comparison(rows), "meta": dict(meta)}
    (out / "hosts.json").write_text(json.dumps(data, indent=2) + "\n")
    return text


# --- the measurement --------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[bench-hosts {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _threads_env(threads: int) -> dict[str, str]:
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # not there yet, or caught mid-write
    return data if isinstance(data, dict) else None


def _wait_records(
    records_dir: Path,
    ids: Sequence[str],
    timeout_s: float,
    failed: Callable[[], list[str]],
) -> list[dict[str, Any]]:
    """Wait until every request's record says ``completed``; raise on a failed one."""
    deadline, checked = time.monotonic() + timeout_s, time.monotonic()
    while True:
        records = {i: _read_record(records_dir / f"{i}.json") for i in ids}
        done = {i: r for i, r in records.items() if r and r.get("status") == "completed"}
        if len(done) == len(ids):
            return [done[i] for i in ids]
        broken = [
            f"{i}: {r.get('status')} {r.get('error', '')}"
            for i, r in records.items()
            if r and r.get("status") in ("failed", "rejected")
        ]
        if time.monotonic() - checked > 20:
            checked = time.monotonic()
            broken += failed()
        if broken:
            raise RuntimeError(f"requests did not complete: {broken}")
        if time.monotonic() > deadline:
            missing = sorted(set(ids) - set(done))
            raise TimeoutError(f"not completed within {timeout_s:g} s: {missing}")
        time.sleep(1.0)


def _server_failures(ids: Sequence[str]) -> Callable[[], list[str]]:
    """Ids whose newest flow run ended without completing (reads the Prefect server)."""

    def check() -> list[str]:
        from tasks.dispatch import request_runs

        newest: dict[str, str] = {}
        for run in request_runs():  # newest first
            newest.setdefault(run.request_id, run.state)
        return [
            f"{i}: flow run {newest[i]}"
            for i in ids
            if newest.get(i) in FINAL_STATES and newest[i] != "Completed"
        ]

    return check


def _pause_scheduled_deployments() -> list[str]:
    """Pause every deployment with a schedule (the nightly inbox drain, ``recover-interrupted``
    every 5 minutes): only the benchmark's requests take the workers' slots."""
    from prefect.client.orchestration import get_client

    paused = []
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if deployment.schedules:
                client.pause_deployment(deployment.id)
                paused.append(deployment.name)
    return sorted(paused)


def _submit_all(
    env: Mapping[str, str], copy: Path, ids: Sequence[str], models: Sequence[str], epochs: int
) -> float:
    """``unlearn submit`` from ``copy`` one request per id (request ``i``: model ``i mod
    len(models)`` at version 1, class ``i mod 10``); the epoch time of the first submit."""
    started = time.time()
    for i, rid in enumerate(ids):
        model = models[i % len(models)]
        path = T.write_request(copy / f"{rid}.yaml", rid, model, i % 10, epochs, ref="/1")
        out = T.unlearn_cli(env, copy, "submit", str(path))
        if out.returncode != 0:
            raise RuntimeError(f"unlearn submit {rid} failed:\n{out.stdout}\n{out.stderr}")
    return started


class _Processes:
    """Every process the benchmark started; all stopped on exit, whatever the exit."""

    def __init__(self) -> None:
        self.servers: list[int] = []
        self.workers: list[int] = []

    def server(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.servers.append(proc.pid)
        return proc

    def worker(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.workers.append(proc.pid)
        return proc

    def stop_all(self) -> None:
        """Workers first (they report to the servers), then the servers."""
        for group in (self.workers, self.servers):
            T.stop_all(group)
            group.clear()


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM (and SIGHUP) end the benchmark like Ctrl-C: through ``finally`` clean-ups."""

    def _raise(signum: int, _frame: object) -> None:
        _log(f"signal {signum}: stopping what the benchmark started")
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, _raise) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _tail(paths: Sequence[Path], chars: int = 2000) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in paths if p.exists()
    )


def _server_phases(
    base: Path,
    procs: _Processes,
    models: Sequence[str],
    n_requests: int,
    threads: int,
    epochs: int,
    timeout_s: float,
) -> list[PhaseFigures]:
    """Servers + 1 worker, then 2 workers, on the same requests (fresh ids each time)."""
    shared = base / "shared"
    shared.mkdir(parents=True)
    pp, mp = T.free_port(), T.free_port()
    _log(f"starting prefect server (:{pp}) and mlflow server (:{mp}) under {base}")
    procs.server(T.start_prefect_server(base, pp))
    procs.server(T.start_mlflow_server(base, mp))
    env = T.shared_env(pp, mp, shared, AUDIT_KEY)
    # this process reads the flow runs' states (only to fail fast on a failed run)
    os.environ.update(PREFECT_API_URL=env["PREFECT_API_URL"])
    os.environ.setdefault("PREFECT_HOME", str(base / "prefect-home-bench"))
    origin = T.team_repo(base / "origin")
    T.deploy(origin, env)
    _log(f"paused the scheduled deployments: {', '.join(_pause_scheduled_deployments())}")
    _log(f"bootstrapping {', '.join(models)} into the server registry")
    T.bootstrap_models(origin, T.host_env(env, origin), models)
    T.commit_data(origin)
    copies = {n: T.make_working_copy(origin, base / "copies" / n) for n in ("w1", "w2", "sub")}
    for name in ("w1", "w2"):
        T.sync_data(copies[name], T.host_env(env, copies[name]))  # first pull: not timed
    submit_env = T.host_env(env, copies["sub"])
    rows: list[PhaseFigures] = []
    workers: list[subprocess.Popen[bytes]] = []
    for n_workers in (1, 2):
        while len(workers) < n_workers:
            name = f"w{len(workers) + 1}"
            worker_env = {**env, **_threads_env(threads)}
            log = base / "logs" / f"worker-{name}.log"
            workers.append(procs.worker(T.start_worker(copies[name], worker_env, log)))
        time.sleep(5)  # the workers' first poll
        ids = [f"h{n_workers}-{i:03d}" for i in range(n_requests)]
        phase = "1 worker" if n_workers == 1 else f"{n_workers} workers"
        _log(f"{phase}: submitting {n_requests} requests")
        try:
            started = _submit_all(submit_env, copies["sub"], ids, models, epochs)
            records = _wait_records(
                shared / "audit" / "records", ids, timeout_s, _server_failures(ids)
            )
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}\n{_tail(sorted((base / 'logs').glob('worker-*')))}") from exc
        row = phase_figures(phase, started, records, n_workers)
        row["mode"] = "servers"
        for name in ("w1", "w2")[:n_workers]:
            row[f"requests_on_{name}"] = sum(
                (copies[name] / "artifacts" / "runs" / i).is_dir() for i in ids
            )
        _log(f"{phase}: {row['requests_per_minute']} requests/min")
        rows.append(row)
    return rows


def _embedded_phase(
    base: Path, models: Sequence[str], n_requests: int, threads: int, epochs: int, timeout_s: float
) -> PhaseFigures:
    """The same requests through the local inbox of a plain project root, no servers."""
    root = T.team_repo(base / "embedded")
    env = {k: v for k, v in T.host_env({}, root).items() if k not in _SERVER_VARS}
    env.update(
        UNLEARN_AUDIT_KEY=AUDIT_KEY, UNLEARN_COORDINATION="embedded", **_threads_env(threads)
    )
    _log(f"embedded: bootstrapping {', '.join(models)} in {root}")
    T.bootstrap_models(root, env, models)
    ids = [f"emb-{i:03d}" for i in range(n_requests)]
    _log(f"embedded: submitting {n_requests} requests to the inbox, then `unlearn process`")
    started = _submit_all(env, root, ids, models, epochs)
    out = T.unlearn_cli(env, root, "process", timeout_s=timeout_s)
    if out.returncode != 0:
        raise RuntimeError(f"unlearn process failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    records = [_read_record(root / "audit" / "records" / f"{i}.json") or {} for i in ids]
    row = phase_figures("embedded", started, records, 1)
    row["mode"] = "embedded"
    _log(f"embedded: {row['requests_per_minute']} requests/min")
    return row


def run_bench(
    base: Path,
    *,
    n_requests: int = 10,
    models: Sequence[str] = MODELS,
    threads: int = 1,
    epochs: int = 2,
    timeout_s: float = 3600,
) -> list[PhaseFigures]:
    """All three phases under ``base``; their rows (every process stopped on return)."""
    procs = _Processes()
    try:
        rows = _server_phases(base / "team", procs, models, n_requests, threads, epochs, timeout_s)
    finally:
        procs.stop_all()
    rows.append(_embedded_phase(base, models, n_requests, threads, epochs, timeout_s))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flows.bench_hosts", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output folder")
    parser.add_argument("--requests", type=int, default=10, help="requests per phase (10)")
    parser.add_argument(
        "--quick", action="store_true", help="4 requests over 2 models (a smoke run)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (1)")
    parser.add_argument("--epochs", type=int, default=2, help="hparams.epochs of each request")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    n_requests, models = (4, MODELS[:2]) if args.quick else (args.requests, MODELS)
    if n_requests < 1:
        parser.error("--requests must be at least 1")
    base = (args.dir or Path(tempfile.mkdtemp(prefix="unlearn-bench-hosts-"))).resolve()
    base.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        with _terminate_as_exit():
            rows = run_bench(
                base, n_requests=n_requests, models=models, threads=args.threads, epochs=args.epochs
            )
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    meta = {
        "how": (
            f"the same {n_requests} requests (hparams epochs={args.epochs}, round-robin over "
            f"{len(models)} models pinned to version 1) submitted with `unlearn submit` to a "
            "local prefect server + mlflow server drained by 1 then 2 `prefect worker` "
            "processes in their own clones, and to the local inbox of a plain project "
            "(`unlearn process`); scheduled deployments paused; wall time from the first "
            "submit to the last finished_at; overhead = the record's "
            "pipeline_overhead.overhead_seconds (inside the flow); outside the flow = (wall - "
            "the flows' total seconds) / requests, one request at a time"
        ),
        "command": "python -m flows.bench_hosts --out "
        + str(args.out)
        + (" --quick" if args.quick else "")
        + (f" --requests {n_requests}" if not args.quick and n_requests != 10 else ""),
        "machine": f"{os.cpu_count()} CPU cores, torch threads per worker: {args.threads}",
        "python": sys.version.split()[0],
        "benchmark_wall_seconds": round(time.perf_counter() - began, 1),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(write_outputs(args.out, rows, meta), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
