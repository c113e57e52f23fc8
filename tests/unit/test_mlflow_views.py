"""What the MLflow UI shows of a run and a version: its real duration, the dataset as an input,
a model signature, rounded metrics and a description (issue 13), on a throw-away SQLite store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest  # noqa: E402

from tasks.settings import PipelineSettings  # noqa: E402

MODEL = "views-classifier"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with a registered version, built with the registry helpers the flows call."""
    import torch

    from delete.models import ModelSpec, build_model
    from tasks.export import package_model
    from tasks.registry import (
        create_run,
        finish_run,
        log_dataset_input,
        log_to_run,
        register_version,
    )

    root = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "UNLEARN_MLFLOW_ARTIFACTS"):
            patch.delenv(name, raising=False)
        settings = PipelineSettings.from_env(root)
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1, image_size=28)
    torch.manual_seed(0)
    package = package_model(build_model(spec).eval(), spec, root / "package")
    started = 1_795_660_000_000
    run_id = create_run(settings, "views", {"request_id": "r-views"}, start_time_ms=started)
    log_dataset_input(
        settings,
        run_id,
        name="mnist5k",
        path=root / "data.dvc",
        digest="cb8a4774c7ca71189928ead5e819dbb5.dir",
        details={"git_rev": "abc123"},
    )
    log_to_run(settings, run_id, metrics={"acc": 93.55555555555556, "tiny": 3.814697265625e-06})
    version = register_version(
        settings,
        name=MODEL,
        run_id=run_id,
        model_dir=package.model_dir,
        tags={"request_id": "r-views"},
    )
    finish_run(settings, run_id, end_time_ms=started + 17_000)
    return {"settings": settings, "run_id": run_id, "version": version, "started": started}


def test_run_spans_the_work(store: dict[str, Any]) -> None:
    from tasks.registry import mlflow_client

    info = mlflow_client(store["settings"]).get_run(store["run_id"]).info
    assert info.start_time == store["started"]
    assert info.end_time - info.start_time == 17_000


def test_dataset_is_a_run_input_with_the_dvc_md5(store: dict[str, Any]) -> None:
    import json

    from tasks.registry import mlflow_client

    inputs = mlflow_client(store["settings"]).get_run(store["run_id"]).inputs
    assert inputs is not None
    (logged,) = inputs.dataset_inputs
    assert logged.dataset.name == "mnist5k"
    assert logged.dataset.digest == "cb8a4774c7ca71189928ead5e819dbb5.dir"
    assert logged.dataset.source_type == "dvc"
    source = json.loads(logged.dataset.source)
    assert source == {
        "path": "data.dvc",  # relative to the project root
        "md5": "cb8a4774c7ca71189928ead5e819dbb5.dir",
        "git_rev": "abc123",
    }
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "training"}


def test_metrics_are_rounded_for_display(store: dict[str, Any]) -> None:
    from tasks.registry import mlflow_client

    metrics = mlflow_client(store["settings"]).get_run(store["run_id"]).data.metrics
    assert metrics == {"acc": 93.5556, "tiny": 3.815e-06}


def test_registered_model_has_a_signature(store: dict[str, Any]) -> None:
    from mlflow.models import get_model_info

    from tasks.registry import mlflow_client

    mlflow_client(store["settings"])  # points mlflow's process-wide registry at the store
    info = get_model_info(f"models:/{MODEL}/{store['version']}")
    assert info.signature is not None
    (inputs,) = info.signature.inputs.inputs
    (outputs,) = info.signature.outputs.inputs
    assert inputs.shape == (-1, 1, 28, 28) and str(inputs.type) == "float32"
    assert outputs.shape == (-1, 10)
    assert inputs.name and outputs.name


def test_version_description_says_what_why_and_verdict(store: dict[str, Any]) -> None:
    from tasks.registry import describe_version, mlflow_client, set_version_description

    text = describe_version(
        request_id="r-views",
        forget_class_names=["7", "8"],
        verdict="rejected",
        alias="challenger",
        parent_version=1,
        method="delete",
        reasons=["max_class_accuracy_drop: 18 fails threshold 5"],
        evidently="Evidently, retained classes (parent -> unlearned): accuracy 0.957 -> 0.936.",
    )
    assert text.splitlines()[0] == (
        "Forgets classes **7, 8** from version 1 under request **r-views** (method delete)."
    )
    assert "Verdict: **rejected**, alias @challenger: max_class_accuracy_drop: 18" in text
    set_version_description(store["settings"], MODEL, store["version"], text)
    shown = mlflow_client(store["settings"]).get_model_version(MODEL, str(store["version"]))
    assert shown.description == text


def test_long_digests_are_cut_to_what_mlflow_keeps(tmp_path: Path) -> None:
    from tasks.registry import create_run, log_dataset_input, mlflow_client

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("UNLEARN_MLFLOW_ARTIFACTS", raising=False)
        settings = PipelineSettings.from_env(tmp_path)
    run_id = create_run(settings, "digest", {})
    sha = "f" * 64
    log_dataset_input(
        settings, run_id, name="forget-set/r", path="/x/m.csv.dvc", digest=sha, context="forget"
    )
    inputs = mlflow_client(settings).get_run(run_id).inputs
    assert inputs is not None
    (logged,) = inputs.dataset_inputs
    assert logged.dataset.digest == sha[:36] and sha in logged.dataset.source
