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
    from tasks.registry import ModelRegistry

    root = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("MLFLOW_TRACKING_URI", "UNLEARN_MLFLOW_ARTIFACTS"):
            patch.delenv(name, raising=False)
        settings = PipelineSettings.from_env(root)
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1, image_size=28)
    torch.manual_seed(0)
    package = package_model(build_model(spec).eval(), spec, root / "package")
    started = 1_795_660_000_000
    run_id = ModelRegistry.of(settings).create_run(
        "views", {"request_id": "r-views"}, start_time_ms=started
    )
    ModelRegistry.of(settings).log_dataset_input(
        run_id,
        name="mnist5k",
        path=root / "data.dvc",
        digest="cb8a4774c7ca71189928ead5e819dbb5.dir",
        details={"git_rev": "abc123"},
    )
    ModelRegistry.of(settings).log_to_run(
        run_id, metrics={"acc": 93.55555555555556, "tiny": 3.814697265625e-06}
    )
    version = ModelRegistry.of(settings).register_version(
        name=MODEL,
        run_id=run_id,
        model_dir=package.model_dir,
        tags={"request_id": "r-views"},
    )
    ModelRegistry.of(settings).finish_run(run_id, end_time_ms=started + 17_000)
    return {"settings": settings, "run_id": run_id, "version": version, "started": started}


def test_run_spans_the_work(store: dict[str, Any]) -> None:
    from tasks.registry import ModelRegistry

    info = ModelRegistry.of(store["settings"]).client.get_run(store["run_id"]).info
    assert info.start_time == store["started"]
    assert info.end_time - info.start_time == 17_000


def test_dataset_is_a_run_input_with_the_dvc_md5(store: dict[str, Any]) -> None:
    import json

    from tasks.registry import ModelRegistry

    inputs = ModelRegistry.of(store["settings"]).client.get_run(store["run_id"]).inputs
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
    from tasks.registry import ModelRegistry

    metrics = ModelRegistry.of(store["settings"]).client.get_run(store["run_id"]).data.metrics
    assert metrics == {"acc": 93.5556, "tiny": 3.815e-06}


def test_registered_model_has_a_signature(store: dict[str, Any]) -> None:
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    from tasks.registry import ModelRegistry

    settings = store["settings"]
    # the version's artifact location: the pipeline never sets MLflow's process-wide URIs,
    # through which a models:/ URI is resolved
    source = ModelRegistry.of(settings).client.get_model_version_download_uri(
        MODEL, str(store["version"])
    )
    local = download_artifacts(
        artifact_uri=f"{source}/MLmodel",
        dst_path=str(settings.root / "mlmodel-check"),
        tracking_uri=settings.mlflow_tracking_uri,
    )
    info = Model.load(local)
    assert info.signature is not None
    (inputs,) = info.signature.inputs.inputs
    (outputs,) = info.signature.outputs.inputs
    assert inputs.shape == (-1, 1, 28, 28) and str(inputs.type) == "float32"
    assert outputs.shape == (-1, 10)
    assert inputs.name and outputs.name


def test_version_description_says_what_why_and_verdict(store: dict[str, Any]) -> None:
    from tasks.registry import ModelRegistry, describe_version

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
    ModelRegistry.of(store["settings"]).set_version_description(MODEL, store["version"], text)
    shown = ModelRegistry.of(store["settings"]).client.get_model_version(
        MODEL, str(store["version"])
    )
    assert shown.description == text


def test_long_digests_are_cut_to_what_mlflow_keeps(tmp_path: Path) -> None:
    from tasks.registry import ModelRegistry

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("UNLEARN_MLFLOW_ARTIFACTS", raising=False)
        settings = PipelineSettings.from_env(tmp_path)
    run_id = ModelRegistry.of(settings).create_run("digest", {})
    sha = "f" * 64
    ModelRegistry.of(settings).log_dataset_input(
        run_id, name="forget-set/r", path="/x/m.csv.dvc", digest=sha, context="forget"
    )
    inputs = ModelRegistry.of(settings).client.get_run(run_id).inputs
    assert inputs is not None
    (logged,) = inputs.dataset_inputs
    assert logged.dataset.digest == sha[:36] and sha in logged.dataset.source
