"""Prefect pull step of the deployments: run each flow in its worker host's working copy.

Every host has its own clone of the project (code, ``data.dvc``, ``gates.yaml``) at
``UNLEARN_HOME``. A ``set_working_directory`` step would need that path when ``prefect deploy``
runs (its ``{{ $VAR }}`` templates are filled in there, from the deploying host's environment);
this step reads it on the worker, when the flow run starts.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["enter_working_copy"]


def enter_working_copy() -> dict[str, str]:
    """``chdir`` to ``UNLEARN_HOME`` (the worker's working copy); Prefect's step output.

    Raises:
        RuntimeError: ``UNLEARN_HOME`` is unset or not a directory on this host.
    """
    home = os.environ.get("UNLEARN_HOME", "")
    if not home or not Path(home).is_dir():
        raise RuntimeError(
            f"UNLEARN_HOME={home!r} is not this worker's working copy; start the worker with "
            "UNLEARN_HOME set to its clone of the project"
        )
    os.chdir(home)
    return {"directory": str(Path(home).resolve())}
