"""The cross-process locks of :mod:`tasks.locks`: real processes contend, a killed holder frees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.locks import LockTimeoutError, dvc_repo_lock, model_lock, registry_write_lock
from tasks.settings import PipelineSettings

REPO = Path(__file__).resolve().parents[2]


def _holder(root: Path, lock: str) -> subprocess.Popen[bytes]:
    """Another process that takes ``lock`` (an expression on ``s``), says so, and sleeps."""
    code = (
        "import time\nfrom tasks import locks\nfrom tasks.settings import PipelineSettings\n"
        f"s = PipelineSettings.from_env({str(root)!r})\n"
        f"with {lock}:\n    print('locked', flush=True)\n    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"locked"
    return proc


def test_a_second_process_times_out_with_one_line_naming_the_lock(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(tmp_path)
    proc = _holder(tmp_path, "locks.model_lock(s, 'mnist', timeout_s=5)")
    try:
        t0 = time.monotonic()
        with pytest.raises(LockTimeoutError) as caught, model_lock(settings, "mnist", 0.3):
            pass
        assert time.monotonic() - t0 >= 0.3
        message = str(caught.value)
        assert "\n" not in message
        assert message == (
            "model 'mnist' is locked by another process "
            f"(waited 0.3 s; lock file {settings.locks_dir / 'mnist.lock'})"
        )
        # who holds it, written by the holder into the lock file
        note = (settings.locks_dir / "mnist.lock").read_text().strip()
        assert note.startswith(f"{proc.pid}@")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("expression", "take"),
    [
        ("locks.model_lock(s, 'mnist', timeout_s=5)", lambda s: model_lock(s, "mnist", 0.1)),
        ("locks.registry_write_lock(s)", lambda s: registry_write_lock(s, 0.1)),
        ("locks.dvc_repo_lock(s)", lambda s: dvc_repo_lock(s, 0.1)),
    ],
)
def test_a_holder_killed_with_sigkill_frees_the_lock(
    tmp_path: Path, expression: str, take: object
) -> None:
    settings = PipelineSettings.from_env(tmp_path)
    proc = _holder(tmp_path, expression)
    try:
        with pytest.raises(LockTimeoutError), take(settings):  # type: ignore[operator]
            pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    with take(settings):  # type: ignore[operator]
        pass
