"""Requests that fail the gates, and requests that must fail without touching the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import LENIENT_GATES, MODEL, write_request


def _registry_state(settings: Any) -> tuple[list[int], int | None, int | None]:
    from tasks.registry import CHALLENGER, CHAMPION, get_alias, list_versions

    return (
        [v["version"] for v in list_versions(settings, MODEL)],
        get_alias(settings, MODEL, CHAMPION),
        get_alias(settings, MODEL, CHALLENGER),
    )


def test_failed_gates_register_a_challenger(first_request: dict[str, Any], project: Any) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import open_audit_log
    from tasks.inbox import Inbox
    from tasks.registry import CHALLENGER, CHAMPION, get_alias, version_tags

    settings = project["settings"]
    champion = get_alias(settings, MODEL, CHAMPION)
    gates = settings.root / "gates.yaml"
    gates.write_text("max_test_forget_accuracy: -1.0\nmax_retain_accuracy_drop: 50.0\n")
    try:
        source = write_request(
            settings.root / "strict.yaml",
            "gdpr-strict",
            forget_classes="[3]",
            hparams="{epochs: 1}",
        )
        Inbox(settings).submit(source)
        (result,) = process_inbox_flow(root=str(settings.root))
    finally:
        gates.write_text(LENIENT_GATES)
    assert result["state"] == "done" and result["verdict"] == "rejected"
    version = result["version"]
    assert get_alias(settings, MODEL, CHAMPION) == champion != version
    assert get_alias(settings, MODEL, CHALLENGER) == version
    tags = version_tags(settings, MODEL, version)
    assert tags["gate.verdict"] == "rejected"
    assert "max_acc_forget" in tags["gate.reasons"]  # a legacy gates.yaml, read in new names
    assert tags["pipeline.complete"] == "true"
    moved = open_audit_log(settings).find(event="alias.moved", request_id="gdpr-strict")
    assert [m["payload"]["alias"] for m in moved] == ["challenger"]
    assert moved[0]["payload"]["verdict"] == "rejected"


BAD_REQUESTS: list[tuple[str, dict[str, Any], str, str]] = [
    ("bad-model", {"model": "no-such-model@champion"}, "rejected", "unknown model"),
    ("bad-alias", {"model": f"{MODEL}@staging"}, "rejected", "no alias @staging"),
    ("bad-version", {"model": f"{MODEL}/99"}, "rejected", "no version 99"),
    ("bad-class", {"forget_classes": "[cat]"}, "rejected", "unknown class 'cat'"),
    (
        "all-classes",
        {"forget_classes": "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"},
        "rejected",
        "every class",
    ),
    ("bad-data", {"data_version": '"' + "0" * 32 + '"'}, "rejected", "expects dataset version"),
    ("bad-method", {"method": "nosuch"}, "rejected", "nosuch"),
    ("nan-loss", {"hparams": "{lr: 1.0e+30, epochs: 2}"}, "failed", "loss became"),
]


def test_bad_requests_fail_and_leave_registry_unchanged(
    first_request: dict[str, Any], project: Any
) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import open_audit_log
    from tasks.inbox import Inbox

    settings = project["settings"]
    before = _registry_state(settings)
    inbox = Inbox(settings)
    for request_id, fields, _, _ in BAD_REQUESTS:
        inbox.submit(write_request(settings.root / f"{request_id}.yaml", request_id, **fields))
    # A malformed file dropped straight into the inbox, bypassing `submit`.
    (settings.inbox_dir / "zz-truncated.yaml").write_text("request_id: trunc\nforget_classes: [3")
    results = process_inbox_flow(root=str(settings.root))

    assert [r["state"] for r in results] == ["failed"] * (len(BAD_REQUESTS) + 1)
    by_id = {r["request_id"]: r for r in results}
    audit = open_audit_log(settings)
    for request_id, _, status, expected in BAD_REQUESTS:
        result = by_id[request_id]
        assert result["status"] == status and expected in result["reason"], result
        reason_file = Path(result["file"] + ".reason.txt")
        assert expected in reason_file.read_text() and "\n" not in reason_file.read_text().strip()
        assert [r["event"] for r in audit.find(request_id=request_id)] == [f"request.{status}"]
    invalid = by_id[None]
    assert "malformed or truncated YAML" in invalid["reason"]
    assert audit.verify().ok
    assert _registry_state(settings) == before
    assert not list(settings.processing_dir.iterdir())


def test_corrupt_checkpoint_fails_cleanly(first_request: dict[str, Any], project: Any) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox
    from tasks.registry import mlflow_client

    settings = project["settings"]
    before = _registry_state(settings)
    uri = mlflow_client(settings).get_model_version_download_uri(MODEL, "1")
    weights = Path(uri.removeprefix("file://")) / "extra_files" / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    try:
        Inbox(settings).submit(
            write_request(settings.root / "corrupt.yaml", "corrupt-ckpt", model=f"{MODEL}/1")
        )
        (result,) = process_inbox_flow(root=str(settings.root))
    finally:
        weights.write_bytes(original)
    assert result["state"] == "failed" and result["status"] == "failed"
    assert "corrupt" in result["reason"] and "version 1" in result["reason"]
    assert _registry_state(settings) == before


@pytest.mark.parametrize(
    ("name", "pool"),
    [
        ("scheduled-compliance-deletions", "unlearn"),
        ("unlearn-on-demand", "unlearn"),
        ("unlearn-on-demand-gpu", "unlearn-gpu"),
        ("recover-interrupted", "unlearn"),
    ],
)
def test_prefect_yaml_deployments(name: str, pool: str) -> None:
    import importlib

    import yaml
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    (deployment,) = [d for d in config["deployments"] if d["name"] == name]
    path, _, attr = deployment["entrypoint"].partition(":")
    module = path.removesuffix(".py").replace("/", ".")
    flow = getattr(importlib.import_module(module), attr)
    assert isinstance(flow, Flow)
    assert deployment["work_pool"]["name"] == pool  # the pool the README's workers poll
    for schedule in deployment.get("schedules") or []:
        if "cron" in schedule:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        else:
            assert float(schedule["interval"]) > 0
    if name == "scheduled-compliance-deletions":
        assert deployment["schedules"][0]["cron"] == "0 2 * * *"
        assert flow.name == "process-inbox"
    elif name.startswith("unlearn-on-demand"):
        # `unlearn submit` passes the request itself when it creates the flow run
        assert flow.name == "unlearn" and "request" in flow.parameters.properties
    if name == "unlearn-on-demand-gpu":
        # the GPU variant asks for a CUDA device, in the flow and in the job's environment
        assert deployment["parameters"]["device"] == "cuda"
        assert "CUDA_VISIBLE_DEVICES" in deployment["work_pool"]["job_variables"]["env"]
