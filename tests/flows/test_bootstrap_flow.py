"""The bootstrap flow: DVC-versioned data, a trained original model registered @champion."""

from __future__ import annotations

from typing import Any

import yaml

from tests.flows.conftest import MAX_PER_CLASS, MODEL, TRAIN_EPOCHS


def test_bootstrap_versions_data_and_registers_champion(project: dict[str, Any]) -> None:
    from tasks.registry import CHAMPION, get_alias, version_tags

    settings, result = project["settings"], project["bootstrap"]
    assert result["version"] == 1 and result["champion"] == 1 and not result["reused"]
    dvc_md5 = yaml.safe_load((settings.root / "data.dvc").read_text())["outs"][0]["md5"]
    assert (settings.root / ".dvc" / "config").read_text().count("../dvc-remote") == 1
    remote_object = settings.root / "dvc-remote" / "files" / "md5" / dvc_md5[:2] / dvc_md5[2:]
    assert remote_object.is_file(), "data.dvc was not pushed to the local remote"
    assert get_alias(settings, MODEL, CHAMPION) == 1
    tags = version_tags(settings, MODEL, 1)
    assert tags["data.dvc_md5"] == dvc_md5
    assert len(tags["data.git_rev"]) == 40
    assert tags["code.git_sha"] and tags["code.package_version"]
    assert tags["pipeline.complete"] == "true" and len(tags["weights_sha256"]) == 64


def test_bootstrap_twice_reuses_everything(project: dict[str, Any]) -> None:
    from flows.bootstrap import bootstrap_flow
    from tasks.registry import list_versions

    settings = project["settings"]
    before = [v["version"] for v in list_versions(settings, MODEL)]
    again = bootstrap_flow(
        root=str(settings.root), epochs=TRAIN_EPOCHS, max_per_class=MAX_PER_CLASS
    )
    assert again["reused"] and again["version"] == 1
    assert again["data_version"]["md5"] == project["bootstrap"]["data_version"]["md5"]
    assert [v["version"] for v in list_versions(settings, MODEL)] == before


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
