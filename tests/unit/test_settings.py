"""``PipelineSettings.from_env``: the environment variables, their defaults and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.settings import DEMO_MARKER, PipelineSettings, SettingsError

#: Every variable ``from_env`` reads.
VARIABLES = (
    "UNLEARN_HOME",
    "UNLEARN_MODEL_NAME",
    "MLFLOW_TRACKING_URI",
    "UNLEARN_MLFLOW_ARTIFACTS",
    "UNLEARN_DVC_REMOTE",
    "UNLEARN_AUDIT_KEY",
    "UNLEARN_AUDIT_URI",
    "UNLEARN_DEMO_MODE",
    "UNLEARN_ONNX_ATOL",
    "UNLEARN_ONNX_RTOL",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_under_the_root(tmp_path: Path) -> None:
    s = PipelineSettings.from_env(tmp_path)
    assert s.root == tmp_path.resolve()
    assert s.registered_model == "mnist5k-classifier"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert s.mlflow_artifact_root == tmp_path.resolve() / "mlflow" / "artifacts"
    assert s.dvc_remote == f"{tmp_path.resolve()}/dvc-remote"
    assert (s.audit_key, s.audit_uri, s.demo_mode) == (None, None, False)
    assert (s.onnx_atol, s.onnx_rtol) == (0.0001, 0.001)


def test_each_variable_overrides_its_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {
        "UNLEARN_MODEL_NAME": "team-model",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "UNLEARN_MLFLOW_ARTIFACTS": "/srv/artifacts",
        "UNLEARN_DVC_REMOTE": "s3://team/dvc",
        "UNLEARN_AUDIT_KEY": "k" * 32,
        "UNLEARN_AUDIT_URI": "file:///shared/audit",
        "UNLEARN_DEMO_MODE": "yes",
        "UNLEARN_ONNX_ATOL": "0",
        "UNLEARN_ONNX_RTOL": "2.5e-2",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = PipelineSettings.from_env(tmp_path)
    assert s.registered_model == "team-model"
    assert s.mlflow_tracking_uri == "http://mlflow:5000"
    assert s.mlflow_artifact_root == Path("/srv/artifacts")
    assert s.dvc_remote == "s3://team/dvc"
    assert s.audit_key == "k" * 32 and s.audit_uri == "file:///shared/audit"
    assert s.demo_mode is True
    assert (s.onnx_atol, s.onnx_rtol) == (0.0, 0.025)


def test_the_root_argument_beats_unlearn_home_which_beats_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, given = tmp_path / "home", tmp_path / "given"
    monkeypatch.chdir(tmp_path)
    assert PipelineSettings.from_env().root == tmp_path.resolve()
    monkeypatch.setenv("UNLEARN_HOME", str(home))
    assert PipelineSettings.from_env().root == home.resolve()
    assert PipelineSettings.from_env(given).root == given.resolve()
    assert PipelineSettings.from_env(given).dvc_remote == f"{given.resolve()}/dvc-remote"


def test_empty_variables_mean_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
    monkeypatch.chdir(tmp_path)
    s = PipelineSettings.from_env()
    assert s.root == tmp_path.resolve() and s.registered_model == "mnist5k-classifier"
    assert s.mlflow_tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db"
    assert (s.audit_key, s.audit_uri, s.onnx_atol, s.onnx_rtol) == (None, None, 0.0001, 0.001)


def test_only_the_exact_upper_case_names_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("unlearn_model_name", "lower-case")
    assert PipelineSettings.from_env(tmp_path).registered_model == "mnist5k-classifier"


@pytest.mark.parametrize(
    ("flag", "marker", "expected"),
    [
        (None, False, False),
        (None, True, True),  # make demo's marker
        ("0", True, False),  # the variable turns a demo root off
        ("  ", True, True),  # blank: as if unset
        ("1", False, True),
        ("TRUE", False, True),
        ("on", False, False),  # only 1, true and yes turn it on
    ],
)
def test_demo_mode_from_the_variable_or_the_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str | None, marker: bool, expected: bool
) -> None:
    if flag is not None:
        monkeypatch.setenv("UNLEARN_DEMO_MODE", flag)
    if marker:
        (tmp_path / DEMO_MARKER).touch()
    assert PipelineSettings.from_env(tmp_path).demo_mode is expected


@pytest.mark.parametrize("name", ["UNLEARN_ONNX_ATOL", "UNLEARN_ONNX_RTOL"])
def test_a_tolerance_that_is_not_a_number_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "1e-3x")
    with pytest.raises(SettingsError) as caught:
        PipelineSettings.from_env(tmp_path)
    assert str(caught.value) == (
        f"{name}='1e-3x': input should be a valid number, unable to parse string as a number"
    )
    assert isinstance(caught.value, ValueError)  # callers that caught float()'s error still do


def test_the_cli_reports_a_bad_variable_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import app

    result = CliRunner().invoke(
        app, ["--root", str(tmp_path), "status"], env={"UNLEARN_ONNX_ATOL": "tight"}
    )
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: UNLEARN_ONNX_ATOL='tight': input should be a valid number, "
        "unable to parse string as a number"
    ]
