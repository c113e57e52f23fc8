"""A team on one machine: real servers, N workers in their own working copies (``make team-up``).

Starts a ``prefect server``, an ``mlflow server`` (its own SQLite backend store and
``--artifacts-destination``) and N ``prefect worker start --pool unlearn`` processes, each in
its own ``git clone`` of the project. They share nothing but the two servers and one folder,
``shared/``, that stands in for S3: the DVC remote (``shared/dvc``) and the audit chain
(``shared/audit``). ``make team-down`` stops what ``team-up`` started (``team.json``).

    python -m deploy.team up --workers 2 --dir /tmp/unlearn-team
    source /tmp/unlearn-team/env.sh      # the environment every host shares
    unlearn --root /tmp/unlearn-team/copies/admin bootstrap
    unlearn submit examples/requests/forget-digit-7.yaml
    python -m deploy.team down --dir /tmp/unlearn-team

The slow-tier test (``tests/hosts``) and ``make bench-hosts`` (``flows/bench_hosts.py``) use
the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "LENIENT_GATES",
    "Team",
    "bootstrap_models",
    "commit_data",
    "free_port",
    "host_env",
    "make_working_copy",
    "run_in_session",
    "shared_env",
    "sync_data",
    "team_repo",
    "unlearn_cli",
    "write_request",
    "start_mlflow_server",
    "start_prefect_server",
    "start_worker",
    "stop",
    "stop_all",
    "team_down",
    "team_up",
    "wait_http",
]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "unlearn"
GPU_POOL = "unlearn-gpu"
#: Gates that let a two-epoch unlearning of a small model pass (tests and benchmarks).
LENIENT_GATES = (
    "classification:\n  max_acc_forget: 5.0\n  max_drop_acc_retain: 50.0\n  max_mia_gap: 0.25\n"
)
GIT = ["git", "-c", "user.name=unlearn-team", "-c", "user.email=team@example.com"]
_BOOTSTRAP = """
import sys, torch
torch.set_num_threads(1)
from flows.bootstrap import bootstrap_flow
for name in sys.argv[4:]:
    bootstrap_flow(root=sys.argv[1], model_name=name, epochs=int(sys.argv[2]),
                   max_per_class=int(sys.argv[3]))
"""
_SYNC_DATA = """
from tasks.dataset import load_dataset_at_version
from tasks.settings import PipelineSettings
load_dataset_at_version(PipelineSettings.from_env())
"""


def free_port() -> int:
    """A TCP port free on localhost right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 200 (raise if ``proc`` exits first or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - localhost
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{url} did not answer within {timeout_s:g} s")


def _spawn(
    args: list[str], cwd: Path, env: Mapping[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """A process in its own session (so ``stop`` ends it with its children), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _quiet_env() -> dict[str, str]:
    # A host's coordinates are the team's (shared_env, host_env), never the caller's: a shell
    # or a test process may point at another store or server.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL") and not k.startswith("UNLEARN_")
    }
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    return env


def start_prefect_server(base: Path, port: int) -> subprocess.Popen[bytes]:
    """``prefect server start`` with its own home and SQLite database under ``base``."""
    env = _quiet_env()
    env.update(
        PREFECT_HOME=str(base / "prefect-home"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{base / 'prefect.db'}",
        PREFECT_UI_ENABLED="false",
        PREFECT_API_URL="",
    )
    proc = _spawn(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        base,
        env,
        base / "logs" / "prefect-server.log",
    )
    wait_http(f"http://127.0.0.1:{port}/api/health", 300, proc)
    return proc


def start_mlflow_server(base: Path, port: int) -> subprocess.Popen[bytes]:
    """``mlflow server``: SQLite backend store and artifacts destination of its own."""
    (base / "mlflow-artifacts").mkdir(parents=True, exist_ok=True)
    proc = _spawn(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--backend-store-uri",
            f"sqlite:///{base / 'mlflow.db'}",
            "--artifacts-destination",
            str(base / "mlflow-artifacts"),
        ],
        base,
        _quiet_env(),
        base / "logs" / "mlflow-server.log",
    )
    wait_http(f"http://127.0.0.1:{port}/health", 300, proc)
    return proc


def shared_env(prefect_port: int, mlflow_port: int, shared: Path, audit_key: str) -> dict[str, str]:
    """The environment every host of the team has (no UNLEARN_HOME: that is per host)."""
    return {
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "UNLEARN_DVC_REMOTE": str(shared / "dvc"),
        "UNLEARN_AUDIT_URI": (shared / "audit").resolve().as_uri(),
        "UNLEARN_AUDIT_KEY": audit_key,
    }


def make_working_copy(source: Path, dest: Path) -> Path:
    """``git clone`` of ``source`` (a host's own working copy)."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True, capture_output=True)
    return dest


def start_worker(
    copy: Path, env: Mapping[str, str], log: Path, pool: str = POOL
) -> subprocess.Popen[bytes]:
    """``prefect worker start --pool unlearn --limit 1`` in ``copy`` (one request at a time)."""
    worker_env = {**_quiet_env(), **env, "UNLEARN_HOME": str(copy)}
    worker_env.setdefault("PREFECT_WORKER_QUERY_SECONDS", "3")
    worker_env["PREFECT_HOME"] = str(copy / ".prefect")
    return _spawn(
        [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--limit", "1"],
        copy,
        worker_env,
        log,
    )


def host_env(env: Mapping[str, str], copy: Path, **extra: str) -> dict[str, str]:
    """The full environment of a host whose working copy is ``copy`` (team env + its home)."""
    return {
        **_quiet_env(),
        **env,
        "UNLEARN_HOME": str(copy),
        "PREFECT_HOME": str(copy / ".prefect"),
        **extra,
    }


def run_in_session(
    cmd: Sequence[str], cwd: Path, env: Mapping[str, str], timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end in its own session, output captured.

    On a timeout or an interrupt its whole process group (an embedded Prefect server it
    started included) is stopped, not only ``cmd``.
    """
    with subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except BaseException:
            stop_all([proc.pid], timeout_s=5.0)
            raise
        return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def unlearn_cli(
    env: Mapping[str, str], copy: Path, *args: str, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """``unlearn <args>`` run in ``copy`` with exactly ``env`` (see :func:`host_env`)."""
    return run_in_session([str(BIN / "unlearn"), *args], copy, env, timeout_s)


def team_repo(dest: Path, source: Path = REPO, gates: str | None = LENIENT_GATES) -> Path:
    """The team's repository: ``source``'s code as it is now (tracked and untracked, not
    ignored; no tests, docs, examples) committed in a fresh git repo at ``dest``.

    ``gates`` replaces ``gates.yaml`` (``None`` keeps the source's).
    """
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    for rel in filter(None, listed):
        src = source / rel
        if rel.startswith(("tests/", "docs/", "forget_sets/", "examples/")) or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    if gates is not None:
        (dest / "gates.yaml").write_text(gates)
    subprocess.run([*GIT, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*GIT, "commit", "-qm", "team repo"], cwd=dest, check=True)
    return dest


def bootstrap_models(
    copy: Path,
    env: Mapping[str, str],
    models: Sequence[str],
    *,
    epochs: int = 2,
    max_per_class: int = 50,
    timeout_s: float = 900,
) -> None:
    """Train and register version 1 @champion of each of ``models`` from ``copy`` (small,
    one torch thread), in the registry ``env`` points at (a server's, or the copy's own)."""
    args = [str(copy), str(epochs), str(max_per_class), *models]
    done = run_in_session([sys.executable, "-c", _BOOTSTRAP, *args], copy, env, timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"bootstrap failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


def commit_data(copy: Path) -> None:
    """Commit ``data.dvc`` (the data the models saw): clones pull it from the DVC remote."""
    subprocess.run([*GIT, "add", "data.dvc", ".dvc"], cwd=copy, check=True)
    subprocess.run([*GIT, "commit", "-qm", "data"], cwd=copy, check=True)


def sync_data(copy: Path, env: Mapping[str, str], timeout_s: float = 300) -> None:
    """Pull the pinned data into ``copy`` from the DVC remote, as its first request would."""
    done = run_in_session([sys.executable, "-c", _SYNC_DATA], copy, env, timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"data sync in {copy} failed:\n{done.stderr[-3000:]}")


def write_request(
    path: Path, request_id: str, model: str, klass: int, epochs: int = 2, ref: str = "@champion"
) -> Path:
    """A deletion request file: forget class ``klass`` of ``model`` (``ref``: ``@alias`` or
    ``/VERSION``) with ``hparams: {epochs: N}``."""
    path.write_text(
        f"request_id: {request_id}\nmodel: {model}{ref}\nforget_classes: [{klass}]\n"
        "requested_by: dpo@example.com\nreason: GDPR Art. 17 erasure request\n"
        f"received_at: '2025-01-31T09:00:00Z'\nhparams: {{epochs: {epochs}}}\n"
    )
    return path


def _alive(pid: int) -> bool:
    """Whether the process group ``pid`` leads has a live member (a leader that is this
    process's child is reaped first: a zombie is not alive)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_all(pids: Sequence[int], timeout_s: float = 20.0) -> None:
    """SIGTERM the process groups ``pids`` lead, all at once; SIGKILL those that linger."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        left = [pid for pid in pids if _alive(pid)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [pid for pid in left if _alive(pid)]
        if not left:
            return


def stop(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it if it lingers."""
    stop_all([pid], timeout_s)


@dataclass
class Team:
    """What ``team_up`` started (saved as ``team.json``)."""

    base: Path
    env: dict[str, str]
    pids: dict[str, int] = field(default_factory=dict)
    copies: dict[str, str] = field(default_factory=dict)

    def save(self) -> None:
        data = {"env": self.env, "pids": self.pids, "copies": self.copies}
        (self.base / "team.json").write_text(json.dumps(data, indent=2) + "\n")
        lines = [f"export {k}={v!r}" for k, v in self.env.items()]
        (self.base / "env.sh").write_text("\n".join(lines) + "\n")


def prefect_cli(args: list[str], cwd: Path, env: Mapping[str, str]) -> str:
    """Run ``prefect <args>`` non-interactively; its output."""
    full = {**_quiet_env(), **env}
    done = subprocess.run(
        [str(BIN / "prefect"), "--no-prompt", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def deploy(copy: Path, env: Mapping[str, str]) -> None:
    """Create the pools and ``prefect deploy --all`` from ``copy`` (once per team)."""
    home = {**env, "UNLEARN_HOME": str(copy), "PREFECT_HOME": str(copy / ".prefect")}
    for pool in (POOL, GPU_POOL):
        prefect_cli(["work-pool", "create", pool, "--type", "process", "--overwrite"], copy, home)
    prefect_cli(["deploy", "--all"], copy, home)


def team_up(base: Path, workers: int, source: Path = REPO, audit_key: str | None = None) -> Team:
    """Servers, shared folder, pools, deployments and ``workers`` workers in their copies."""
    import secrets

    base = base.resolve()
    base.mkdir(parents=True, exist_ok=True)
    (base / "shared").mkdir(exist_ok=True)
    prefect_port, mlflow_port = free_port(), free_port()
    env = shared_env(prefect_port, mlflow_port, base / "shared", audit_key or secrets.token_hex(32))
    team = Team(base, env)
    team.pids["prefect-server"] = start_prefect_server(base, prefect_port).pid
    team.save()
    team.pids["mlflow-server"] = start_mlflow_server(base, mlflow_port).pid
    team.save()
    admin = make_working_copy(source, base / "copies" / "admin")
    team.copies["admin"] = str(admin)
    deploy(admin, env)
    for i in range(1, workers + 1):
        copy = make_working_copy(source, base / "copies" / f"worker-{i}")
        team.copies[f"worker-{i}"] = str(copy)
        proc = start_worker(copy, env, base / "logs" / f"worker-{i}.log")
        team.pids[f"worker-{i}"] = proc.pid
        team.save()
    return team


def team_down(base: Path) -> list[str]:
    """Stop every process ``team_up`` recorded in ``base/team.json`` (workers first)."""
    path = base / "team.json"
    if not path.exists():
        return []
    pids: dict[str, int] = json.loads(path.read_text())["pids"]
    workers = [name for name in pids if not name.endswith("server")]
    servers = [name for name in pids if name.endswith("server")]
    for group in (workers, servers):
        stop_all([pids[name] for name in group])
    path.unlink()
    return workers + servers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/unlearn-team"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="up: remove --dir first")
    args = parser.parse_args(argv)
    if args.action == "down":
        stopped = team_down(args.dir)
        print(f"stopped: {', '.join(stopped) or 'nothing'}")
        return 0
    if args.fresh and args.dir.exists():
        team_down(args.dir)
        shutil.rmtree(args.dir)
    team = team_up(args.dir, args.workers)
    print(f"team up under {team.base} (logs in {team.base / 'logs'})")
    print(f"  source {team.base / 'env.sh'}   # the environment every host shares")
    print(f"  working copies: {', '.join(team.copies.values())}")
    print(f"  Prefect API: {team.env['PREFECT_API_URL']}")
    print(f"  MLflow: {team.env['MLFLOW_TRACKING_URI']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
