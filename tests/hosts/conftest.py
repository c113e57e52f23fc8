"""Several hosts on one machine: real servers on localhost ports, workers in their own copies.

These tests never use the in-process Prefect harness of ``tests/flows``: everything talks to
the ``prefect server`` and ``mlflow server`` the fixture starts, as hosts of a team would.
"""

from __future__ import annotations

import os
import tempfile

# Before prefect is imported: a private home, no telemetry (the API URL is set per fixture).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-hosts-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "1"

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

#: What earlier tests in the same process may have left in the environment that would point
#: this process at another project's store or server (MLflow's set_tracking_uri exports
#: MLFLOW_TRACKING_URI; the flow tests set UNLEARN_* for their roots).
_FOREIGN = ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")


@pytest.fixture(scope="package", autouse=True)
def _isolated_environment() -> Iterator[None]:
    """The team's environment only, while these tests run; the caller's, exactly, after."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key in _FOREIGN or key.startswith("UNLEARN_"):
            del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
