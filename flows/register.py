"""``register`` flow: a team's own trained model and dataset become ``NAME`` version 1 @champion.

Steps (each a Prefect task):

1. the card is validated completely, reading only (:func:`tasks.register.validate_card`):
   keys, architecture, weights (never unpickled), dataset layout and classes, one forward
   pass, and a name that is not registered yet; a refusal leaves nothing behind;
2. the dataset folder is versioned with DVC (``dvc add`` unless already tracked) and pushed;
   (the model was evaluated with its task's metrics during validation);
3. :func:`flows._original.register_original`, the same code the demo's bootstrap registers
   through: weights, spec and an ONNX export (parity checked in onnxruntime at two batch
   sizes) are packaged, logged to one MLflow run and registered as version 1 with the tags a
   deletion request rebuilds everything from; ``@champion`` points at it;
   ``model.registered`` is appended to the audit log.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prefect import flow

from flows._common import settings_for
from flows._original import Original, register_original
from tasks.audit import open_audit_log
from tasks.dataset import push_to_remote_task
from tasks.image_dataset import track_image_folder_task
from tasks.register import REGISTER_REQUEST_ID, card_tags, validate_card_task
from tasks.registry import CHAMPION

__all__ = ["register_flow"]


@flow(name="register", log_prints=True)
def register_flow(card: str, root: str | None = None) -> dict[str, Any]:
    """Register an existing trained model, described by a model card, as ``@champion``.

    Args:
        card: Path of the model card (YAML or JSON).
        root: Project root (``UNLEARN_HOME`` or the working directory when ``None``).

    Returns:
        ``{model, version, alias, data_version, metrics, onnx_path, mlflow_run_id, seconds}``.

    Raises:
        tasks.model_card.CardError: The card was refused (nothing was written).
    """
    started = time.perf_counter()
    settings = settings_for(root)
    audit = open_audit_log(settings)  # refuse to start without an audit key
    checked = validate_card_task(settings, card)
    name, rel = checked.card.name, checked.dataset_rel
    # Only now, with every claim of the card checked, do DVC and MLflow get written to.
    data_version = track_image_folder_task(settings, rel)
    push_to_remote_task(settings, [f"{rel}.dvc"])
    registered = register_original(
        settings,
        audit,
        Original(
            name=name,
            model=checked.model,
            spec=checked.spec,
            task=checked.card.task,
            task_options=checked.task_options,
            origin=REGISTER_REQUEST_ID,
            data_version=data_version,
            metrics=checked.metrics,
            params={
                "architecture": checked.card.architecture,
                "architecture_kwargs": checked.card.architecture_kwargs,
                "dataset": rel,
                "preprocess": checked.card.preprocess.to_json(),
            },
            tags=card_tags(checked, data_version.md5),
            artifacts=[(str(checked.card_path), "card")],
            audit_payload={
                "card": checked.card.model_dump(mode="json"),
                "weights_source_sha256": checked.weights_sha256,
                "dataset": rel,
            },
            alias_reason=f"register: {checked.card_path.name}",
        ),
    )
    shown = ", ".join(f"{k} {v:.1f}" for k, v in checked.metrics.items() if "/" not in k)
    print(
        f"register: {name} version {registered.version} @champion; {rel} at "
        f"{data_version.md5}; {shown}"
    )
    return {
        "model": name,
        "version": registered.version,
        "alias": CHAMPION,
        "data_version": data_version.to_dict(),
        "metrics": checked.metrics,
        "onnx_path": registered.onnx_path,
        "mlflow_run_id": registered.mlflow_run_id,
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m flows.register CARD.yaml")
    register_flow(sys.argv[1])
