"""One deletion request end to end through the inbox, then the same request again."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tests.flows.conftest import MAX_PER_CLASS, MODEL

REQUIRED_TAGS = (
    "request_id",
    "request.content_sha256",
    "forget_classes",
    "data.dvc_md5",
    "data.git_rev",
    "data.forget_manifest_dvc_md5",
    "data.forget_manifest_sha256",
    "code.git_sha",
    "code.package_version",
    "parent.version",
    "method",
    "method.hparams",
    "gate.verdict",
    "gate.reasons",
    "metric.before_acc_forget",
    "metric.after_acc_forget",
    "metric.after_acc_retain",
    "metric.after_mia_auc",
    "weights_sha256",
    "onnx_sha256",
    "pipeline.complete",
    "pipeline.alias_applied",
    "pipeline.overhead_seconds",
)


def _result(first_request: dict[str, Any]) -> dict[str, Any]:
    (result,) = first_request["results"]
    assert result["state"] == "done", result
    return result


def _new_version(first_request: dict[str, Any]) -> int:
    """The version the request must have created: the next after the root's versions before
    it (this test's root started with the bootstrap's version 1 and nothing else)."""
    before = first_request["versions_before"]
    assert before == [1], before
    return max(before) + 1


def test_request_registers_a_promoted_version(first_request: dict[str, Any], project: Any) -> None:
    from tasks.registry import CHAMPION, ModelRegistry

    settings, result = project["settings"], _result(first_request)
    assert result["status"] == "completed" and result["verdict"] == "passed"
    version = result["version"]
    assert (
        version == _new_version(first_request)
        and ModelRegistry.of(settings).get_alias(MODEL, CHAMPION) == version
    )
    tags = ModelRegistry.of(settings).version_tags(MODEL, version)
    missing = [t for t in REQUIRED_TAGS if t not in tags]
    assert not missing, f"version {version} lacks tags {missing}"
    assert tags["request_id"] == "gdpr-0001" and tags["forget_classes"] == "[7]"
    assert tags["parent.version"] == "1" and tags["gate.verdict"] == "passed"
    assert float(tags["metric.after_acc_forget"]) <= 5.0
    assert (settings.done_dir / result["file"].split("/")[-1]).exists()


def test_onnx_from_the_registry_matches_torch(first_request: dict[str, Any], project: Any) -> None:
    import mlflow
    import onnxruntime as ort

    from tasks.dataset import load_dataset_at_version
    from tasks.registry import ModelRegistry
    from tasks.requests import parse_model_ref

    settings, result = project["settings"], _result(first_request)
    registry = ModelRegistry.of(settings)
    source = registry.client.get_model_version_download_uri(MODEL, str(result["version"]))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{source}/model.onnx",
        dst_path=str(settings.root / "onnx-check"),
        tracking_uri=settings.mlflow_tracking_uri,
    )
    resolved = ModelRegistry.of(settings).resolve_model(parse_model_ref(f"{MODEL}@champion"))
    assert resolved.version == result["version"]
    bundle, _ = load_dataset_at_version(settings)
    images = bundle.test.images[:9]
    session = ort.InferenceSession(local, providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        torch_logits = resolved.model(images).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-3)
    # served from @champion's own location (a models:/ URI would go through MLflow's
    # process-wide registry URI, which the pipeline never sets); onnx flavor: no pickle
    champion = registry.client.get_model_version_by_alias(MODEL, "champion").version
    served = mlflow.pyfunc.load_model(
        registry.client.get_model_version_download_uri(MODEL, champion)
    )
    assert served.metadata.flavors.keys() >= {"onnx", "python_function"}


def test_run_artifacts_and_forget_manifest(first_request: dict[str, Any], project: Any) -> None:
    from tasks.registry import ModelRegistry

    settings, result = project["settings"], _result(first_request)
    html = result["evidently_html"]
    assert html.endswith(".html")
    page = Path(html).read_text(encoding="utf-8")
    assert "Current: Model Quality Metrics" in page and "Reference: Model Quality Metrics" in page
    assert "Drift" in page
    client = ModelRegistry.of(settings).client
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert {"before_acc_retain", "after_acc_retain", "pipeline_overhead_seconds"} <= set(
        run.data.metrics
    )
    logged = {
        a.path
        for d in ("evidently", "plots", "model_files", "forget_set", "audit")
        for a in client.list_artifacts(run.info.run_id, d)
    }
    assert {
        "evidently/evidently_report.html",
        "plots/per_class.png",
        "plots/membership.png",
        "model_files/model.onnx",
        "model_files/model.safetensors",
        "forget_set/manifest.csv",
        "audit/gdpr-0001.json",
    } <= logged

    manifest = settings.root / "forget_sets" / "gdpr-0001" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == MAX_PER_CLASS and {r["label"] for r in rows} == {"7"}
    for row in rows[:10]:
        assert (
            hashlib.sha256((settings.root / row["file"]).read_bytes()).hexdigest() == row["sha256"]
        )
    tags = ModelRegistry.of(settings).version_tags(MODEL, result["version"])
    dvc_md5 = tags["data.forget_manifest_dvc_md5"]
    assert dvc_md5 in (manifest.parent / "manifest.csv.dvc").read_text()
    assert (settings.root / "dvc-remote" / "files" / "md5" / dvc_md5[:2] / dvc_md5[2:]).is_file()
    assert tags["data.forget_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()


def test_audit_record_and_prefect_artifact(first_request: dict[str, Any], project: Any) -> None:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from tasks.audit import open_audit_log, read_request_record

    settings, result = project["settings"], _result(first_request)
    record = read_request_record(settings, "gdpr-0001")
    for key in (
        "request",
        "request_content_sha256",
        "status",
        "model",
        "parent_version",
        "version",
        "alias",
        "alias_moves",
        "verdict",
        "metrics",
        "gates",
        "data_version",
        "forget_manifest",
        "code_version",
        "method",
        "hparams",
        "engine",
        "onnx",
        "weights_sha256",
        "evidently",
        "plots",
        "mlflow_run_id",
        "flow_run_id",
        "started_at",
        "finished_at",
        "timings",
        "pipeline_overhead",
    ):
        assert key in record, f"audit record lacks {key}"
    assert record["status"] == "completed" and record["version"] == result["version"]
    assert set(record["metrics"]["before"]) == set(record["metrics"]["after"])
    assert record["alias_moves"][0]["from_version"] == 1
    assert record["pipeline_overhead"]["overhead_seconds"] > 0

    audit = open_audit_log(settings)
    assert audit.verify().ok
    events = [r["event"] for r in audit.find(request_id="gdpr-0001")]
    assert events == ["alias.moved", "request.completed"]
    moved = audit.find(event="alias.moved", request_id="gdpr-0001")[0]["payload"]
    expected = (1, _new_version(first_request), "passed")
    assert (moved["from_version"], moved["to_version"], moved["verdict"]) == expected

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(UUID(record["flow_run_id"]))
        assert flow_run.state is not None and flow_run.state.is_completed()
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["unlearn-gdpr-0001"]))
        )
    assert artifacts and "gdpr-0001" in str(artifacts[0].data)


def test_same_request_twice_registers_nothing(first_request: dict[str, Any], project: Any) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox
    from tasks.registry import CHAMPION, ModelRegistry

    settings = project["settings"]
    _result(first_request)
    versions = [v["version"] for v in ModelRegistry.of(settings).list_versions(MODEL)]
    Inbox(settings).submit(first_request["source"])
    (again,) = process_inbox_flow(root=str(settings.root))
    assert again["state"] == "done" and again["status"] == "already_applied"
    assert again["version"] == _new_version(first_request)
    assert [v["version"] for v in ModelRegistry.of(settings).list_versions(MODEL)] == versions
    assert ModelRegistry.of(settings).get_alias(MODEL, CHAMPION) == _new_version(first_request)
