"""Test-wide settings: one torch thread (2-core CI) and telemetry off."""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import torch  # noqa: E402

# One thread: on 2 shared cores, two torch threads per process ran several times slower.
torch.set_num_threads(1)
