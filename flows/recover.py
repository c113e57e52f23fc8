"""``recover-interrupted`` flow: rerun the requests whose worker died (several hosts).

Scheduled every few minutes by ``prefect.yaml``; ``unlearn recover`` does the same at once.
See :func:`tasks.dispatch.recover_interrupted`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.dispatch import recover_interrupted

__all__ = ["recover_flow"]


@flow(name="recover-interrupted", log_prints=True)
def recover_flow() -> list[dict[str, Any]]:
    """Mark runs whose pulse stopped CRASHED and create one rerun of each crashed request."""
    reruns = recover_interrupted()
    for r in reruns:
        print(f"rerun {r['request_id']}: flow run {r['crashed_run']} -> {r['rerun']}")
    return reruns
