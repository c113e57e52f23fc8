"""``register`` flow: a team's own trained model and dataset become ``NAME`` version 1 @champion.

Steps (each a Prefect task):

1. the card is validated completely, reading only (:func:`tasks.register.validate_card`):
   keys, architecture, weights (never unpickled), dataset layout and classes, one forward
   pass, and a name that is not registered yet; a refusal leaves nothing behind;
2. the dataset folder is versioned with DVC (``dvc add`` unless already tracked) and pushed;
3. the model is evaluated on the test split (overall and per-class accuracy);
4. weights, spec and an ONNX export (parity checked in onnxruntime at two batch sizes) are
   packaged, logged to one MLflow run and registered as version 1 with the tags a deletion
   request rebuilds everything from; ``@champion`` points at it; ``model.registered`` is
   appended to the audit log.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows._common import current_flow_run_id, move_alias_task, settings_for, utc_now
from tasks._common import code_version
from tasks.applications import CLASSIFICATION, task_tags
from tasks.audit import open_audit_log
from tasks.dataset import push_to_remote_task
from tasks.export import package_model_task
from tasks.image_dataset import track_image_folder_task
from tasks.register import (
    REGISTER_REQUEST_ID,
    card_tags,
    evaluate_registered_task,
    validate_card_task,
)
from tasks.registry import (
    CHAMPION,
    TAG_ALIAS_APPLIED,
    TAG_REQUEST_ID,
    TAG_VERDICT,
    create_run,
    finish_run,
    log_to_run_task,
    mark_complete,
    register_version_task,
    set_version_tags,
)

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
    metrics = evaluate_registered_task(checked.model, checked.bundle)
    package = package_model_task(
        checked.model,
        checked.spec,
        settings.artifacts_dir / "register" / name / "model",
        atol=settings.onnx_atol,
        rtol=settings.onnx_rtol,
    )
    code = code_version()
    run_id = create_run(
        settings,
        run_name=f"register-{name}",
        tags={TAG_REQUEST_ID: REGISTER_REQUEST_ID, "prefect.flow_run_id": current_flow_run_id()},
    )
    log_to_run_task(
        settings,
        run_id,
        params={
            "architecture": checked.card.architecture,
            "architecture_kwargs": checked.card.architecture_kwargs,
            "dataset": rel,
            "data.dvc_md5": data_version.md5,
            "preprocess": checked.card.preprocess.to_json(),
            "task": CLASSIFICATION,
        },
        metrics=metrics,
        artifacts=[
            (package.weights_path, "model_files"),
            (package.onnx_path, "model_files"),
            (str(checked.card_path), "card"),
        ],
        dicts={"onnx_parity.json": package.parity, "code_version.json": code},
    )
    tags = {
        TAG_REQUEST_ID: REGISTER_REQUEST_ID,
        "origin": "register",
        "forget_classes": [],
        "data.dvc_md5": data_version.md5,
        "data.git_rev": data_version.git_rev or "none",
        "data.dvc_file_committed": str(data_version.dvc_file_committed).lower(),
        "code.git_sha": code["git_sha"],
        "code.package_version": code["package_version"],
        "code.git_dirty": str(code["git_dirty"]).lower(),
        **task_tags(CLASSIFICATION, {}),
        **card_tags(checked, data_version.md5),
        **{f"metric.{k}": round(v, 4) for k, v in metrics.items()},
        "onnx_sha256": package.onnx_sha256,
        TAG_VERDICT: "n/a",
    }
    version = register_version_task(
        settings, name=name, run_id=run_id, model_dir=package.model_dir, tags=tags
    )
    mark_complete(settings, name, version)
    move_alias_task(
        settings,
        audit,
        name,
        CHAMPION,
        version,
        reason=f"register: {checked.card_path.name}",
        verdict="n/a",
        request_id=None,
    )
    set_version_tags(settings, name, version, {TAG_ALIAS_APPLIED: "true"})
    audit.append(
        "model.registered",
        {
            "model": name,
            "version": version,
            "card": checked.card.model_dump(mode="json"),
            "weights_sha256": package.weights_sha256,
            "weights_source_sha256": checked.weights_sha256,
            "data_version": data_version.to_dict(),
            "dataset": rel,
            "metrics": metrics,
            "onnx_sha256": package.onnx_sha256,
            "code_version": code,
            "mlflow_run_id": run_id,
            "flow_run_id": current_flow_run_id(),
            "at": utc_now(),
        },
    )
    finish_run(settings, run_id)
    print(
        f"register: {name} version {version} @champion; {rel} at {data_version.md5}; "
        f"test accuracy {metrics['acc_test']:.1f}%"
    )
    return {
        "model": name,
        "version": version,
        "alias": CHAMPION,
        "data_version": data_version.to_dict(),
        "metrics": metrics,
        "onnx_path": str(Path(package.onnx_path)),
        "mlflow_run_id": run_id,
        "seconds": time.perf_counter() - started,
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m flows.register CARD.yaml")
    register_flow(sys.argv[1])
