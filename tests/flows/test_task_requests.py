"""``task:`` through the real pipeline: face, backdoor and segmentation requests end to end.

A golden project root of this module's own, built once: each task's model is bootstrapped
from the same DVC-pinned digits, then one request per task runs through the unlearn flow with
real Prefect, MLflow, DVC, onnxruntime and Evidently; every test gets a private copy of it.
The models are tiny, so the tests check what the pipeline promises (the task's own metrics,
its own gates, its forget set, export, registration, audit), not how well a 500-image model
forgets; the behavioural tests check forgetting on real data.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.flows.conftest import (
    LENIENT_GATES,
    MAX_PER_CLASS,
    clone_root,
    forget_mlflow_store,
    init_project_root,
    rebase,
)

pytestmark = pytest.mark.slow

#: Classification gates as in the other test roots; task sections lenient where a 500-image
#: model cannot do better, but each able to reject; the backdoor left at the shipped defaults
#: (the product's target).
GATES = LENIENT_GATES + (
    "face:\n  max_acc_forget: 5.0\n  max_drop_acc_retain: 50.0\n"
    "segmentation:\n  max_iou_forget: 10.0\n  max_drop_miou_retain: 50.0\n"
)
#: The verdict each task's request must get under ``GATES``, and the gates that must fail:
#: known from the setup, never recomputed from the pipeline's output. The face and scene
#: requests pass their gates; the 8-epoch backdoor model keeps an attack success rate far above
#: the product's 5 % (about 32 %), so its request is rejected by ``max_asr`` alone.
EXPECTED_VERDICT = {"face": "passed", "backdoor": "rejected", "segmentation": "passed"}
EXPECTED_FAILED = {"face": [], "backdoor": ["max_asr"], "segmentation": []}

CASES: dict[str, dict[str, Any]] = {
    "face": {"options": {}, "forget": ["id-3"], "classes": [3], "epochs": 8},
    "backdoor": {
        "options": {"poison_rate": 0.1, "known_fraction": 0.02},
        "forget": [0],
        "classes": [0],
        "epochs": 8,
    },
    "segmentation": {
        "options": {"num_train": 200, "num_test": 60},
        "forget": ["3"],
        "classes": [4],
        "epochs": 4,
    },
}


def _request(request_id: str, model: str, forget: list[Any], task: str | None) -> dict[str, Any]:
    request = {
        "request_id": request_id,
        "model": f"{model}@champion",
        "forget_classes": forget,
        "requested_by": "dpo@example.com",
        "reason": "erasure request",
        "received_at": "2025-01-31T09:00:00Z",
    }
    return request if task is None else {**request, "task": task}


@pytest.fixture(scope="module")
def task_golden(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None, pipeline_env: None
) -> dict[str, Any]:
    """Every task's model bootstrapped and one request applied to it, once for the module."""
    from flows.bootstrap import bootstrap_flow
    from flows.unlearn import unlearn_flow

    root = init_project_root(tmp_path_factory.mktemp("tasks-golden"), GATES)
    runs = {}
    for task, case in sorted(CASES.items()):
        boot = bootstrap_flow(
            root=str(root),
            epochs=case["epochs"],
            max_per_class=MAX_PER_CLASS,
            task=task,
            task_options=case["options"],
        )
        request = _request(f"{task}-0001", boot["model"], case["forget"], task)
        runs[task] = {"boot": boot, "result": unlearn_flow(request, root=str(root))}
    forget_mlflow_store()
    return {"root": root, "runs": runs}


@pytest.fixture
def task_root(task_golden: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """This test's own copy of the golden task root, with the runs' paths moved to it."""
    from tasks.settings import PipelineSettings

    root = clone_root(task_golden["root"], tmp_path / "tasks-project")
    runs = rebase(task_golden["runs"], task_golden["root"], root)
    return {"root": root, "settings": PipelineSettings.from_env(root), "runs": runs}


def _applied(task_root: dict[str, Any], task: str) -> dict[str, Any]:
    """The task's bootstrap and its request's result, in this test's root."""
    return task_root["runs"][task]


@pytest.mark.parametrize("task", sorted(CASES))
def test_bootstrap_records_the_task(task_root: dict[str, Any], task: str) -> None:
    from tasks.applications import DEFAULT_TASK_OPTIONS, model_task
    from tasks.registry import ModelRegistry

    boot = _applied(task_root, task)["boot"]
    assert boot["model"] == f"mnist5k-classifier-{task}" and boot["version"] == 1
    tags = ModelRegistry.of(task_root["settings"]).version_tags(boot["model"], 1)
    name, options = model_task(tags)
    assert name == task
    assert options == {**DEFAULT_TASK_OPTIONS[task], **CASES[task]["options"]}


@pytest.mark.parametrize("task", sorted(CASES))
def test_request_is_unlearned_gated_and_registered_by_task(
    task_root: dict[str, Any], task: str
) -> None:
    from delete.applications import get_task
    from tasks.evaluation import load_gates
    from tasks.registry import CHAMPION, ModelRegistry

    settings = task_root["settings"]
    run = _applied(task_root, task)
    result, model = run["result"], run["boot"]["model"]
    assert result["status"] == "completed" and result["version"] == 2
    before, after = result["metrics"]["before"], result["metrics"]["after"]
    assert set(get_task(task).headline) <= set(after) and set(get_task(task).headline) <= set(
        before
    )
    # the verdict is the task's own gates on the task's own metrics, read by the grammar
    # (max_<m>: the new value; max_drop_<m>: parent minus new), recomputed here by hand
    record = json.loads(Path(result["record_path"]).read_text())
    gates = load_gates(settings.gates_file, task)
    checks = {c["name"]: c for c in record["verdict"]["checks"]}
    assert set(checks) == set(gates)
    for name, check in checks.items():
        metric = name.removeprefix("max_drop_").removeprefix("max_")
        value = before[metric] - after[metric] if name.startswith("max_drop_") else after[metric]
        assert check["value"] == pytest.approx(value), name
        assert check["passed"] == (value <= gates[name]), name
    label = EXPECTED_VERDICT[task]
    assert result["verdict"] == label
    assert sorted(n for n, c in checks.items() if not c["passed"]) == EXPECTED_FAILED[task]
    tags = ModelRegistry.of(settings).version_tags(model, 2)
    assert tags["task"] == task and json.loads(tags["task.options"]) == json.loads(
        ModelRegistry.of(settings).version_tags(model, 1)["task.options"]
    )
    assert tags["forget_classes"] == json.dumps(CASES[task]["classes"])
    assert tags["pipeline.complete"] == "true" and tags["gate.verdict"] == label
    # promotion only through the gates: a rejected version never becomes the champion
    assert ModelRegistry.of(settings).get_alias(model, CHAMPION) == (2 if label == "passed" else 1)
    assert record["task"] == task and record["gates"] == gates
    # the Prefect UI lists the run by the request it served, not a random name
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        assert client.read_flow_run(record["flow_run_id"]).name == f"unlearn/{task}-0001"


def test_face_request_forgets_the_identity(task_root: dict[str, Any]) -> None:
    after = _applied(task_root, "face")["result"]["metrics"]["after"]
    assert after["acc_forget"] <= 5.0


def test_backdoor_gates_are_the_product_target(task_root: dict[str, Any]) -> None:
    result = _applied(task_root, "backdoor")["result"]
    checks = {
        c["name"]: c
        for c in json.loads(Path(result["record_path"]).read_text())["verdict"]["checks"]
    }
    assert checks["max_asr"]["threshold"] == 5.0
    assert checks["max_drop_clean_acc"]["threshold"] == 2.0


@pytest.mark.parametrize("task", sorted(CASES))
def test_forget_manifest_lists_the_task_forget_set(task_root: dict[str, Any], task: str) -> None:
    from tasks.registry import ModelRegistry

    settings = task_root["settings"]
    run = _applied(task_root, task)
    manifest = settings.root / "forget_sets" / f"{task}-0001" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert rows and (manifest.parent / "manifest.csv.dvc").exists()
    labels = {int(r["label"]) for r in rows}
    if task == "backdoor":
        # the defender's known poisoned samples: 2% of the training split, any true label
        assert len(rows) == round(0.02 * 10 * MAX_PER_CLASS)
    else:
        assert labels == {3}  # identity 3 / the digits the scene class "3" is drawn from
    tags = ModelRegistry.of(settings).version_tags(run["boot"]["model"], 2)
    assert (
        tags["data.forget_manifest_dvc_md5"] in (manifest.parent / "manifest.csv.dvc").read_text()
    )


@pytest.mark.parametrize("task", sorted(CASES))
def test_onnx_and_evidently_per_task(task_root: dict[str, Any], task: str) -> None:
    import onnxruntime as ort

    from delete.checkpoint import load_model

    result = _applied(task_root, task)["result"]
    onnx_path = Path(result["onnx_path"])
    model, spec = load_model(onnx_path.with_name("model.safetensors"))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        images = torch.rand(batch, spec.in_channels, spec.image_size, spec.image_size)
        (onnx_out,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
        with torch.no_grad():
            torch_out = model(images).numpy()
        assert onnx_out.shape == torch_out.shape
        np.testing.assert_allclose(onnx_out, torch_out, atol=1e-4, rtol=1e-3)
    if task == "segmentation":
        assert onnx_out.shape[1:] == (11, spec.image_size, spec.image_size)
    html = Path(result["evidently_html"])
    assert html.stat().st_size > 10_000
    snapshot = json.loads(html.with_suffix(".json").read_text())
    assert snapshot.get("metrics")


def _rejected(task_root: dict[str, Any], request: dict[str, Any]) -> str:
    from flows.unlearn import RequestOutcomeError, unlearn_flow

    with pytest.raises(RequestOutcomeError) as caught:
        unlearn_flow(request, root=str(task_root["root"]))
    assert caught.value.status == "rejected"
    assert "\n" not in caught.value.reason
    return caught.value.reason


def test_a_request_for_another_task_is_rejected(task_root: dict[str, Any]) -> None:
    from tasks.registry import ModelRegistry

    settings = task_root["settings"]
    model = _applied(task_root, "face")["boot"]["model"]
    champion = ModelRegistry.of(settings).get_alias(model, "champion")
    reason = _rejected(task_root, _request("wrong-task", model, [3], None))
    assert "classification request" in reason and "face model" in reason
    reason = _rejected(task_root, _request("wrong-task-2", model, [3], "segmentation"))
    assert "segmentation request" in reason
    assert ModelRegistry.of(settings).get_alias(model, "champion") == champion
    assert ModelRegistry.of(settings).versions_for_request(model, "wrong-task") == []


def test_bad_task_classes_are_rejected_in_one_line(task_root: dict[str, Any]) -> None:
    backdoor = _applied(task_root, "backdoor")["boot"]["model"]
    segmentation = _applied(task_root, "segmentation")["boot"]["model"]
    assert "target label 0" in _rejected(
        task_root, _request("bd-wrong-class", backdoor, [3], "backdoor")
    )
    assert "background" in _rejected(
        task_root, _request("seg-background", segmentation, ["background"], "segmentation")
    )
    assert "unknown class" in _rejected(
        task_root,
        _request("face-unknown", _applied(task_root, "face")["boot"]["model"], ["id-42"], "face"),
    )
    assert "unknown task" in _rejected(task_root, _request("ocr-task", backdoor, [0], "ocr"))


def test_cli_bootstrap_by_task_and_certificate(task_root: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    root = str(task_root["root"])
    _applied(task_root, "face")
    reused = CliRunner().invoke(app, ["--root", root, "bootstrap", "--task", "face"])
    assert reused.exit_code == 0, reused.stderr
    assert "mnist5k-classifier-face version 1 reused (task face)" in reused.stdout
    unknown = CliRunner().invoke(app, ["--root", root, "bootstrap", "--task", "ocr"])
    assert unknown.exit_code != 0 and "unknown task 'ocr'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    certificate = CliRunner().invoke(app, ["--root", root, "audit", "certificate", "face-0001"])
    assert certificate.exit_code == 0, certificate.stderr
    assert "acc_forget" in certificate.stdout


def test_a_task_request_applied_twice_registers_once(task_root: dict[str, Any]) -> None:
    from flows.unlearn import unlearn_flow
    from tasks.registry import ModelRegistry

    run = _applied(task_root, "segmentation")
    model = run["boot"]["model"]
    again = unlearn_flow(
        _request("segmentation-0001", model, CASES["segmentation"]["forget"], "segmentation"),
        root=str(task_root["root"]),
    )
    assert again["status"] == "already_applied" and again["version"] == 2
    assert [
        v
        for v, _ in ModelRegistry.of(task_root["settings"]).versions_for_request(
            model, "segmentation-0001"
        )
    ] == [2]


def test_bootstrap_refuses_unknown_task_options(task_root: dict[str, Any]) -> None:
    from flows.bootstrap import bootstrap_flow

    with pytest.raises(ValueError, match=r"unknown backdoor option\(s\) \['poison'\]; accepted"):
        bootstrap_flow(root=str(task_root["root"]), task="backdoor", task_options={"poison": 0.1})
