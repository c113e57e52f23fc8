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

The slow-tier test (``tests/hosts``) uses the same functions.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Team",
    "free_port",
    "make_working_copy",
    "shared_env",
    "start_mlflow_server",
    "start_prefect_server",
    "start_worker",
    "stop",
    "team_down",
    "team_up",
    "wait_http",
]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POOL = "unlearn"
GPU_POOL = "unlearn-gpu"


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
    env = dict(os.environ)
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


def stop(pid: int, timeout_s: float = 20.0) -> None:
    """SIGTERM the process group ``pid`` leads, SIGKILL it if it lingers."""
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


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
    stopped = []
    for name in sorted(pids, key=lambda n: n.endswith("server")):
        stop(pids[name])
        stopped.append(name)
    path.unlink()
    return stopped


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
