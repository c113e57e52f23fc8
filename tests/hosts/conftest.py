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
