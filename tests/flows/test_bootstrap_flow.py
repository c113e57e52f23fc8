"""The bootstrap flow: DVC-versioned data, a trained original model registered @champion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.flows.conftest import LENIENT_GATES, MAX_PER_CLASS, MODEL, TRAIN_EPOCHS, Golden

REPO = Path(__file__).resolve().parents[2]

#: A separate Python process: bootstrap ``argv[1]`` (an initialised root) with the tests'
#: sizes and seed 0, print the data version and the registered weights' SHA-256 as JSON.
BOOTSTRAP_ELSEWHERE = """
import json, sys
import torch
torch.set_num_threads(1)
import yaml
from flows.bootstrap import bootstrap_flow
from tasks.registry import ModelRegistry
from tasks.settings import PipelineSettings
root = sys.argv[1]
result = bootstrap_flow(root=root, epochs=int(sys.argv[2]), max_per_class=int(sys.argv[3]), seed=0)
settings = PipelineSettings.from_env(root)
tags = ModelRegistry.of(settings).version_tags(result["model"], result["version"])
outs = yaml.safe_load(open(root + "/data.dvc"))["outs"][0]
print("BOOTSTRAPPED " + json.dumps({"data_md5": outs["md5"], "weights": tags["weights_sha256"]}))
"""


def test_bootstrap_versions_data_and_registers_champion(project: dict[str, Any]) -> None:
    from tasks.registry import CHAMPION, ModelRegistry

    settings, result = project["settings"], project["bootstrap"]
    assert result["version"] == 1 and result["champion"] == 1 and not result["reused"]
    dvc_md5 = yaml.safe_load((settings.root / "data.dvc").read_text())["outs"][0]["md5"]
    assert (settings.root / ".dvc" / "config").read_text().count("../dvc-remote") == 1
    remote_object = settings.root / "dvc-remote" / "files" / "md5" / dvc_md5[:2] / dvc_md5[2:]
    assert remote_object.is_file(), "data.dvc was not pushed to the local remote"
    assert ModelRegistry.of(settings).get_alias(MODEL, CHAMPION) == 1
    tags = ModelRegistry.of(settings).version_tags(MODEL, 1)
    assert tags["data.dvc_md5"] == dvc_md5
    assert len(tags["data.git_rev"]) == 40
    assert tags["code.git_sha"] and tags["code.package_version"]
    assert tags["pipeline.complete"] == "true" and len(tags["weights_sha256"]) == 64


def test_bootstrap_twice_reuses_everything(project: dict[str, Any]) -> None:
    from flows.bootstrap import bootstrap_flow
    from tasks.registry import ModelRegistry

    settings = project["settings"]
    before = [v["version"] for v in ModelRegistry.of(settings).list_versions(MODEL)]
    again = bootstrap_flow(
        root=str(settings.root), epochs=TRAIN_EPOCHS, max_per_class=MAX_PER_CLASS
    )
    assert again["reused"] and again["version"] == 1
    assert again["data_version"]["md5"] == project["bootstrap"]["data_version"]["md5"]
    assert [v["version"] for v in ModelRegistry.of(settings).list_versions(MODEL)] == before


def test_materialisation_is_byte_deterministic(tmp_path: Any) -> None:
    import hashlib

    from tasks.dataset import materialise_dataset
    from tasks.settings import PipelineSettings

    digests = []
    for name in ("a", "b"):
        settings = PipelineSettings.from_env(tmp_path / name)
        out = materialise_dataset(settings, max_per_class=5)
        digest = hashlib.sha256()
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(out)).encode() + path.read_bytes())
        digests.append(digest.hexdigest())
    assert digests[0] == digests[1]


def _identity(root: Path) -> dict[str, str]:
    """The data version and the registered weights' SHA-256 of a bootstrapped ``root``."""
    from tasks.registry import ModelRegistry
    from tasks.settings import PipelineSettings

    tags = ModelRegistry.of(PipelineSettings.from_env(root)).version_tags(MODEL, 1)
    outs = yaml.safe_load((root / "data.dvc").read_text())["outs"][0]
    return {"data_md5": outs["md5"], "weights": tags["weights_sha256"]}


@pytest.mark.slow
@pytest.mark.subprocess
def test_bootstrap_is_deterministic_across_processes(
    golden_project: Golden, tmp_path: Path
) -> None:
    """Two fresh interpreters bootstrap two new roots with the same seed: same data version,
    byte-identical weights, and the same as this process's golden root."""
    from tests.flows._robust import worker_env
    from tests.flows.conftest import init_project_root

    seen = []
    for name in ("a", "b"):
        root = tmp_path / name
        root.mkdir()
        init_project_root(root, LENIENT_GATES)
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                BOOTSTRAP_ELSEWHERE,
                str(root),
                str(TRAIN_EPOCHS),
                str(MAX_PER_CLASS),
            ],
            cwd=REPO,
            env=worker_env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        (line,) = [x for x in done.stdout.splitlines() if x.startswith("BOOTSTRAPPED ")]
        seen.append(json.loads(line.removeprefix("BOOTSTRAPPED ")))
    assert len(seen[0]["weights"]) == 64 and len(seen[0]["data_md5"]) >= 32
    assert seen[0] == seen[1] == _identity(golden_project.root)


def test_each_test_root_is_a_private_copy(golden_project: Golden, project: dict[str, Any]) -> None:
    """Every location in this test's MLflow store lies in this test's root, and writing to it
    leaves the golden root (which every test copies) as it was."""
    import sqlite3

    from tasks.registry import ModelRegistry

    root, golden = project["root"], golden_project.root
    with sqlite3.connect(root / "mlflow" / "mlflow.db") as db:
        cells = [
            cell
            for table in ("experiments", "runs", "model_versions", "logged_models")
            for row in db.execute(f"SELECT * FROM {table}")
            for cell in row
            if isinstance(cell, str)
        ]
    db.close()
    assert [c for c in cells if str(golden) in c] == []
    locations = [c for c in cells if c.startswith("file://")]
    assert len(locations) >= 4 and all(c.startswith(root.as_uri() + "/") for c in locations)
    registry = ModelRegistry.of(project["settings"])
    download = registry.client.get_model_version_download_uri(MODEL, "1")
    assert download.startswith(root.as_uri() + "/")
    golden_store = (golden / "mlflow" / "mlflow.db").read_bytes()
    registry.client.set_model_version_tag(MODEL, "1", "touched-by", "a copy")
    assert (golden / "mlflow" / "mlflow.db").read_bytes() == golden_store
