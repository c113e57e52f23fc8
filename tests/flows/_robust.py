"""Helpers of the robustness tests: registry snapshots, pipeline worker processes, own models.

The crash and load tests use registered models of their own, bootstrapped in their own copies
of the golden project root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.flows.conftest import MAX_PER_CLASS, TRAIN_EPOCHS

REPO = Path(__file__).resolve().parents[2]

#: A pipeline worker: ``process_inbox`` on ``argv[1]`` (root), only model ``argv[2]`` if given.
WORKER = """
import sys
import torch
torch.set_num_threads(1)
from flows.process_inbox import process_inbox_flow
results = process_inbox_flow(root=sys.argv[1], model=(sys.argv[2] or None))
print("WORKER-RESULTS", len(results), sum(r["state"] == "done" for r in results), flush=True)
"""


def registry_snapshot(settings: Any) -> list[tuple[str, int, tuple[str, ...], bool, str | None]]:
    """Every version of every registered model with its aliases, completeness and verdict."""
    from tasks.registry import ModelRegistry

    return sorted(
        (r["name"], r["version"], tuple(r["aliases"]), r["complete"], r["verdict"])
        for r in ModelRegistry.of(settings).list_versions()
    )


def bootstrap_model(settings: Any, name: str) -> dict[str, Any]:
    """Register ``name`` version 1 @champion in ``settings.root`` (data reused, tiny training)."""
    from flows.bootstrap import bootstrap_flow

    return bootstrap_flow(
        root=str(settings.root),
        model_name=name,
        epochs=TRAIN_EPOCHS,
        max_per_class=MAX_PER_CLASS,
    )


def worker_env(**extra: str) -> dict[str, str]:
    """The test process's environment (audit key, Prefect home) plus its Prefect API server."""
    import prefect.settings

    env = {k: v for k, v in os.environ.items() if k != "UNLEARN_CRASH_AT"}
    env.update(
        PYTHONUNBUFFERED="1",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
        PREFECT_API_URL=str(prefect.settings.PREFECT_API_URL.value()),
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    """A running ``process_inbox`` subprocess whose output goes to a log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    def wait(self, timeout: float) -> tuple[int, str, float]:
        """Exit status (negative: killed by that signal), output, seconds it ran."""
        code = self.proc.wait(timeout=timeout)
        return code, self.log.read_text(errors="replace"), time.perf_counter() - self.started


def start_worker(
    root: Path, log: Path, model: str | None = None, env: dict[str, str] | None = None
) -> Worker:
    handle = open(log, "wb")  # noqa: SIM115 - closed when the child has inherited it
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), model or ""],
            cwd=REPO,
            env=env or worker_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    finally:
        handle.close()
    return Worker(proc, log, time.perf_counter())


def assert_alias_history_matches_registry(settings: Any, model: str) -> int:
    """Replay the ``alias.moved`` audit records of ``model``: each names the version the alias
    left (the previous record's destination), a reason and a gate verdict, ``@champion`` only
    ever moved on a passed (or bootstrap) verdict, and the replay ends where the registry is.

    Returns:
        The number of alias moves of ``model``.
    """
    from tasks.audit import open_audit_log
    from tasks.registry import ModelRegistry

    moves = [
        r["payload"]
        for r in open_audit_log(settings).records()
        if r["event"] == "alias.moved" and r["payload"].get("model") == model
    ]
    replayed: dict[str, int] = {}
    for move in moves:
        assert move["reason"] and move["verdict"], move
        assert move["from_version"] == replayed.get(move["alias"]), (move, replayed)
        if move["alias"] == "champion":
            assert move["verdict"] in ("passed", "n/a"), move
        replayed[move["alias"]] = move["to_version"]
    registered = ModelRegistry.of(settings).client.get_registered_model(model).aliases or {}
    assert {a: int(v) for a, v in registered.items()} == replayed
    return len(moves)
