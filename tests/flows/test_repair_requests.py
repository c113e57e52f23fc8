"""A backdoor request with a declared repair set, through the real pipeline.

A golden root of this module's own, built once: a backdoored model bootstrapped from the
DVC-pinned digits, one request without a repair set (no clean data) and one with a seeded 1%
repair set. Every test gets a private copy. The expected verdicts are fixed by this setup: the
gates of ``backdoor.declared-repair-set`` are ones the repaired model passes with a margin
(ASR at most 20 %, clean accuracy down by at most 5 points: measured, the tiny 8-epoch model
goes from ASR 59.8 % and clean accuracy 48.5 % to 4.3 % and 60.0 %), while the no-clean-data
request is judged by the shipped ``backdoor`` gates (ASR < 5 %), which the unrepaired model
fails (ASR 31.6 %).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.flows.conftest import (
    LENIENT_GATES,
    MAX_PER_CLASS,
    clone_root,
    forget_mlflow_store,
    init_project_root,
    rebase,
)

pytestmark = pytest.mark.slow

GATES = LENIENT_GATES + (
    "backdoor:\n  max_asr: 5.0\n  max_drop_clean_acc: 2.0\n"
    "backdoor.declared-repair-set:\n  max_asr: 20.0\n  max_drop_clean_acc: 5.0\n"
)
OPTIONS = {"poison_rate": 0.1, "known_fraction": 0.02}
REPAIR = {"fraction": 0.01, "seed": 5}


def _request(request_id: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "model": f"{model}@champion",
        "forget_classes": [0],
        "requested_by": "dpo@example.com",
        "reason": "backdoor removal",
        "received_at": "2025-01-31T09:00:00Z",
        "task": "backdoor",
        **extra,
    }


@pytest.fixture(scope="module")
def repair_golden(
    tmp_path_factory: pytest.TempPathFactory, prefect_harness: None, pipeline_env: None
) -> dict[str, Any]:
    from flows.bootstrap import bootstrap_flow
    from flows.unlearn import unlearn_flow

    root = init_project_root(tmp_path_factory.mktemp("repair-golden"), GATES)
    boot = bootstrap_flow(
        root=str(root),
        epochs=8,
        max_per_class=MAX_PER_CLASS,
        task="backdoor",
        task_options=OPTIONS,
    )
    plain = unlearn_flow(_request("bd-plain", boot["model"]), root=str(root))
    repaired = unlearn_flow(_request("bd-repair", boot["model"], repair_set=REPAIR), root=str(root))
    forget_mlflow_store()
    return {"root": root, "boot": boot, "plain": plain, "repaired": repaired}


@pytest.fixture
def repair_root(repair_golden: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    from tasks.settings import PipelineSettings

    root = clone_root(repair_golden["root"], tmp_path / "repair-project")
    moved = rebase(repair_golden, repair_golden["root"], root)
    return {**moved, "root": root, "settings": PipelineSettings.from_env(root)}


def _record(settings: Any, request_id: str) -> dict[str, Any]:
    return json.loads((settings.audit_dir / "records" / f"{request_id}.json").read_text())


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_the_repair_set_is_a_dvc_manifest_of_clean_files_beside_the_forget_set(
    repair_root: dict[str, Any],
) -> None:
    settings = repair_root["settings"]
    record = _record(settings, "bd-repair")
    repair = record["repair"]
    repair_rows = _rows(Path(repair["manifest"]["path"]))
    forget_rows = _rows(Path(record["forget_manifest"]["path"]))
    # 1% of the 500-image training split (50 per class): 5 images, none of them forgotten.
    assert len(repair_rows) == repair["n_images"] == 5
    assert {r["file"] for r in repair_rows}.isdisjoint({r["file"] for r in forget_rows})
    assert Path(repair["manifest"]["path"]).name == "repair.csv"
    assert Path(repair["manifest"]["dvc_file"]).exists()
    for row in repair_rows:  # the files the repair read are the dataset's files, unchanged
        assert (settings.root / row["file"]).exists()
    assert repair["declared"] == REPAIR and repair["step"] == "distill"
    assert repair["max_fraction"] == 0.01
    assert repair["run"]["steps"] == 240


def test_threat_models_are_recorded_gated_and_certified(repair_root: dict[str, Any]) -> None:
    settings = repair_root["settings"]
    plain, repaired = _record(settings, "bd-plain"), _record(settings, "bd-repair")
    assert plain["threat_model"] == "no-clean-data" and plain.get("repair") is None
    assert repaired["threat_model"] == "declared-repair-set"
    # Each request judged by its threat model's section, with the verdict this setup fixes.
    assert plain["gates"] == {"max_asr": 5.0, "max_drop_clean_acc": 2.0}
    assert plain["verdict"]["verdict"] == "rejected"
    assert repaired["gates"] == {"max_asr": 20.0, "max_drop_clean_acc": 5.0}
    assert repaired["verdict"]["verdict"] == "passed"
    assert repair_root["repaired"]["alias"] == "champion"
    from tasks.registry import ModelRegistry

    tags = ModelRegistry.of(settings).version_tags(
        repair_root["boot"]["model"], int(repair_root["repaired"]["version"])
    )
    assert tags["threat_model"] == "declared-repair-set" and tags["repair.n_images"] == "5"
    assert tags["repair.manifest_dvc_md5"] == repaired["repair"]["manifest"]["dvc_md5"]
    from tasks.certificate import render_certificate

    text = render_certificate(repaired, fmt="md")
    assert "declared repair set: 5 clean images" in text
    assert "no clean data" in render_certificate(plain, fmt="md")


@pytest.mark.parametrize(
    ("request_id", "repair_set", "expected"),
    [
        ("bd-outside", {"files": ["train/0/not-a-file.png"]}, "not in the training split"),
        ("bd-too-many", {"fraction": 0.05}, "is not in (0, 0.01]"),
        ("bd-poisoned", None, "is a forget sample"),
    ],
)
def test_an_ill_formed_repair_set_is_refused_in_one_line_with_nothing_registered(
    repair_root: dict[str, Any], request_id: str, repair_set: Any, expected: str
) -> None:
    from flows.unlearn import RequestOutcomeError, unlearn_flow
    from tasks.registry import ModelRegistry

    settings = repair_root["settings"]
    model = repair_root["boot"]["model"]
    if repair_set is None:  # a file the defender knows to be poisoned: the forget set's own
        forget = _rows(Path(_record(settings, "bd-plain")["forget_manifest"]["path"]))
        repair_set = {"files": ["/".join(Path(forget[0]["file"]).parts[-3:])]}
    registry = ModelRegistry.of(settings)
    versions = len(registry.list_versions(model))
    with pytest.raises(RequestOutcomeError) as failed:
        unlearn_flow(_request(request_id, model, repair_set=repair_set), root=str(settings.root))
    reason = failed.value.reason
    assert expected in reason and "\n" not in reason, reason
    assert failed.value.status == "rejected"
    assert len(registry.list_versions(model)) == versions
    assert _record(settings, request_id)["status"] == "rejected"
