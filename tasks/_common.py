"""Small helpers the pipeline tasks share: one-line errors, subprocesses, code versions.

:func:`one_line` is :func:`delete.errors.one_line` (the core library has the one definition).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from delete.errors import one_line

__all__ = [
    "PipelineError",
    "one_line",
    "run_command",
    "git_revision",
    "code_version",
    "canonical_json",
    "sha256_text",
    "PACKAGE_NAME",
]

PACKAGE_NAME = "delete-unlearn"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


class PipelineError(RuntimeError):
    """A pipeline step failed for a reason worth telling the requester in one line."""


def run_command(
    args: Sequence[str], cwd: Path, *, what: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise :class:`PipelineError` naming ``what`` and stderr's gist."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        list(args), cwd=cwd, env=full_env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        raise PipelineError(f"{what} failed (exit {proc.returncode}): {errors[0][:300]}")
    return proc


def git_revision(path: Path) -> str | None:
    """``HEAD`` commit of the git repository containing ``path``, or ``None``."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _git_dirty(path: Path) -> bool:
    try:
        proc = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def code_version() -> dict[str, Any]:
    """Which code produced a model: package version, git commit of the source tree, dirtiness."""
    try:
        version = metadata.version(PACKAGE_NAME)
    except metadata.PackageNotFoundError:
        version = "unknown"
    rev = git_revision(_PACKAGE_DIR)
    return {
        "package": PACKAGE_NAME,
        "package_version": version,
        "git_sha": rev or "unknown",
        "git_dirty": _git_dirty(_PACKAGE_DIR) if rev else False,
        "python": sys.version.split()[0],
    }


def canonical_json(obj: Any) -> str:
    """The one JSON spelling used for hashing: sorted keys, no spaces, ASCII only, no NaN.

    The same object always gives the same bytes; audit-log hashes and request digests are
    computed over it, so it must never change.

    Example:
        >>> print(canonical_json({"b": [1.5, None], "a": "é"}))
        {"a":"\\u00e9","b":[1.5,null]}
    """
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a UTF-8 string."""
    return hashlib.sha256(text.encode()).hexdigest()
