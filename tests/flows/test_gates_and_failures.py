"""Requests that fail the gates, and requests that must fail without touching the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.flows.conftest import LENIENT_GATES, MODEL, write_request


def _registry_state(settings: Any) -> tuple[list[int], int | None, int | None]:
    from tasks.registry import CHALLENGER, CHAMPION, ModelRegistry

    return (
        [v["version"] for v in ModelRegistry.of(settings).list_versions(MODEL)],
        ModelRegistry.of(settings).get_alias(MODEL, CHAMPION),
        ModelRegistry.of(settings).get_alias(MODEL, CHALLENGER),
    )


def test_failed_gates_register_a_challenger(project: Any) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import open_audit_log
    from tasks.inbox import Inbox
    from tasks.registry import CHALLENGER, CHAMPION, ModelRegistry

    settings = project["settings"]
    champion = ModelRegistry.of(settings).get_alias(MODEL, CHAMPION)
    assert champion == 1  # this test's own root: the bootstrap's version only
    # An accuracy can never be below 0: this gate must reject whatever the model does.
    (settings.root / "gates.yaml").write_text(
        "max_test_forget_accuracy: -1.0\nmax_retain_accuracy_drop: 50.0\n"
    )
    source = write_request(
        settings.root / "strict.yaml", "gdpr-strict", forget_classes="[3]", hparams="{epochs: 1}"
    )
    Inbox(settings).submit(source)
    (result,) = process_inbox_flow(root=str(settings.root))
    assert result["state"] == "done" and result["verdict"] == "rejected"
    version = result["version"]
    assert version == 2 and ModelRegistry.of(settings).get_alias(MODEL, CHAMPION) == champion
    assert ModelRegistry.of(settings).get_alias(MODEL, CHALLENGER) == version
    tags = ModelRegistry.of(settings).version_tags(MODEL, version)
    assert tags["gate.verdict"] == "rejected"
    assert "max_acc_forget" in tags["gate.reasons"]  # a legacy gates.yaml, read in new names
    assert tags["pipeline.complete"] == "true"
    moved = open_audit_log(settings).find(event="alias.moved", request_id="gdpr-strict")
    assert [m["payload"]["alias"] for m in moved] == ["challenger"]
    assert moved[0]["payload"]["verdict"] == "rejected"


@pytest.mark.slow
@pytest.mark.parametrize("gate", ["max_mia_gap", "max_drop_acc_retain"])
def test_each_gate_alone_can_reject(gate: str, project: Any) -> None:
    """One gate set below any value its metric can take (a gap or an accuracy drop is never
    below -1; a model that loses nothing drops 0), the others lenient: rejected by that gate
    alone, whatever the tiny model does. With ``LENIENT_GATES`` the same request passes."""
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import read_request_record
    from tasks.inbox import Inbox
    from tasks.registry import CHALLENGER, CHAMPION, ModelRegistry

    settings = project["settings"]
    lenient = yaml.safe_load(LENIENT_GATES)["classification"]
    assert gate in lenient
    strict = {**lenient, gate: -1.0}
    (settings.root / "gates.yaml").write_text(yaml.safe_dump({"classification": strict}))
    request_id = f"one-gate-{gate}".replace("_", "-")
    Inbox(settings).submit(write_request(settings.root / "one-gate.yaml", request_id))
    (result,) = process_inbox_flow(root=str(settings.root))
    assert result["state"] == "done" and result["verdict"] == "rejected", result
    record = read_request_record(settings, request_id)
    failed = [c["name"] for c in record["verdict"]["checks"] if not c["passed"]]
    assert failed == [gate], record["verdict"]
    assert ModelRegistry.of(settings).get_alias(MODEL, CHAMPION) == 1
    assert ModelRegistry.of(settings).get_alias(MODEL, CHALLENGER) == result["version"] == 2


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


@pytest.mark.slow
def test_bad_requests_fail_and_leave_registry_unchanged(project: Any) -> None:
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


@pytest.mark.slow
def test_corrupt_checkpoint_fails_cleanly(project: Any) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.inbox import Inbox
    from tasks.registry import ModelRegistry

    settings = project["settings"]
    before = _registry_state(settings)
    uri = ModelRegistry.of(settings).client.get_model_version_download_uri(MODEL, "1")
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
