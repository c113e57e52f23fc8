"""deploy/docker-compose.yml and prefect.yaml, checked by their config (nothing is started)."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED_ENV = {
    "PREFECT_API_URL",
    "MLFLOW_TRACKING_URI",
    "UNLEARN_DVC_REMOTE",
    "UNLEARN_AUDIT_URI",
    "UNLEARN_AUDIT_KEY",
}


def test_compose_has_both_servers_on_postgres_minio_and_a_worker() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "minio", "prefect-server", "mlflow-server", "worker"} <= set(services)
    assert (
        "postgresql"
        in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    )
    mlflow = services["mlflow-server"]["command"]
    assert "postgresql://" in mlflow and "--artifacts-destination s3://" in mlflow
    worker = services["worker"]
    assert set(worker["environment"]) >= SHARED_ENV
    assert worker["environment"]["UNLEARN_AUDIT_URI"].startswith("s3://")
    assert "--pool unlearn" in worker["command"]


def test_prefect_yaml_deployments() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert {
        "scheduled-compliance-deletions",
        "unlearn-on-demand",
        "unlearn-on-demand-gpu",
        "recover-interrupted",
    } <= set(deployments)
    assert deployments["unlearn-on-demand"]["work_pool"]["name"] == "unlearn"
    gpu = deployments["unlearn-on-demand-gpu"]
    assert gpu["parameters"]["device"] == "cuda"
    assert gpu["work_pool"]["job_variables"]["env"]["CUDA_VISIBLE_DEVICES"] == "0"
    # the pull step is importable where the workers run (and reads UNLEARN_HOME there)
    (step,) = config["pull"]
    module, _, func = next(iter(step)).rpartition(".")
    assert callable(getattr(__import__(module, fromlist=[func]), func))
    for d in deployments.values():
        path, _, func = d["entrypoint"].partition(":")
        assert f"def {func}(" in (REPO / path).read_text()
