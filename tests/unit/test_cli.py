"""The ``unlearn`` CLI: real inbox and audit log under a temporary root, one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from tasks.audit import AuditLog, record_digest, write_request_record
from tasks.settings import PipelineSettings

KEY = "cli-test-audit-key-0123456789"
ENV = {"UNLEARN_AUDIT_KEY": KEY, "UNLEARN_DEMO_MODE": "", "UNLEARN_HOME": ""}

REQUEST = """\
request_id: gdpr-7
model: mnist5k-classifier@champion
forget_classes: [3]
requested_by: dpo@example.com
reason: GDPR Art. 17
received_at: 2025-01-31T09:00:00Z
"""


@pytest.fixture(autouse=True)
def _no_inherited_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each root is its own project: MLflow's ``set_tracking_uri`` (called by earlier tests in
    the process) exports ``MLFLOW_TRACKING_URI``, which would send this root's CLI to that
    store. A test that wants a registry passes it in its own ``env``."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "project"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow registry (SQLite) holding versions with the tags the pipeline writes.

    No weights: ``submit`` reads names, aliases and tags only. Shared by the module's tests
    (each with its own project root) through ``MLFLOW_TRACKING_URI``.
    """
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    models = {
        MODEL: [{"request_id": "bootstrap"}, {"request_id": "gdpr-applied", **FORGOT_3}],
        "team-model": [{"class_names": '["cat", "dog", "owl"]'}],
        "face-model": [{"task": "face", "task.options": "{}", **FORGOT_ID_3}],
    }
    for name, versions in models.items():
        client.create_registered_model(name)
        for tags in versions:
            client.create_model_version(
                name, source=str(folder), tags={"pipeline.complete": "true", **tags}
            )
        client.set_registered_model_alias(name, "champion", "1")
    return uri


MODEL = "mnist5k-classifier"
FORGOT_3 = {"forget_classes": "[3]", "forget_class_names": '["3"]'}
FORGOT_ID_3 = {"forget_classes": "[3]", "forget_class_names": '["id-3"]'}


def _run(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--root", str(root), *args], env={**ENV, **(env or {})})
    return result.exit_code, result.stdout, result.stderr


def _nothing_queued(root: Path) -> None:
    settings = PipelineSettings.from_env(root)
    for directory in (settings.inbox_dir, settings.processing_dir):
        assert not directory.exists() or not any(directory.iterdir()), directory


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def _settings(root: Path) -> PipelineSettings:
    return PipelineSettings.from_env(root)


def test_submit_valid_request_is_queued(root: Path, tmp_path: Path, registry: str) -> None:
    (tmp_path / "req.yaml").write_text(REQUEST)
    code, out, err = _run(
        root, "submit", str(tmp_path / "req.yaml"), env={"MLFLOW_TRACKING_URI": registry}
    )
    assert (code, err) == (0, "")
    assert out.startswith("queued gdpr-7 -> requests/inbox/")
    [queued] = _settings(root).inbox_dir.iterdir()
    assert queued.read_text() == REQUEST


def test_submit_invalid_request_exits_1_and_is_recorded_in_failed(
    root: Path, tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text(REQUEST.replace("[3]", "[]"))
    code, out, err = _run(root, "submit", str(tmp_path / "bad.yaml"))
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert line.startswith(
        "error: bad.yaml: field 'forget_classes': list should have at least 1 item (rejected; "
        "recorded in requests/failed/"
    )
    settings = _settings(root)
    assert not settings.inbox_dir.exists() or not any(settings.inbox_dir.iterdir())
    reasons = list(settings.failed_dir.glob("*.reason.txt"))
    assert len(reasons) == 1 and "list should have at least 1 item" in reasons[0].read_text()


def test_submit_missing_or_hostile_files(root: Path, tmp_path: Path) -> None:
    code, _, err = _run(root, "submit", str(tmp_path / "nope.yaml"))
    assert code == 1 and _one_error_line(err) == "error: nope.yaml: file not found"
    (tmp_path / "bin.yaml").write_bytes(b"\x00\x01\x02")
    code, _, err = _run(root, "submit", str(tmp_path / "bin.yaml"))
    assert code == 1 and "binary" in _one_error_line(err)


def test_status_lists_every_state(root: Path, tmp_path: Path) -> None:
    code, out, _ = _run(root, "status")
    assert code == 0 and out.startswith("no requests")
    (tmp_path / "req.yaml").write_text(REQUEST)
    _run(root, "submit", "--no-check", str(tmp_path / "req.yaml"))
    _run(root, "submit", "--no-check", str(tmp_path / "req.yaml"))  # duplicate id: rejected
    code, out, _ = _run(root, "status")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["REQUEST_ID", "STATE", "VERSION", "FILE", "REASON"]
    assert [r.split()[:2] for r in rows] == [["gdpr-7", "queued"], ["gdpr-7", "failed"]]
    assert "already queued" in rows[1]
    code, out, _ = _run(root, "status", "gdpr-7", "--json")
    assert code == 0
    assert [(s["request_id"], s["state"]) for s in json.loads(out)] == [
        ("gdpr-7", "queued"),
        ("gdpr-7", "failed"),
    ]


def test_status_of_unknown_or_invalid_id(root: Path) -> None:
    code, _, err = _run(root, "status", "nope")
    assert code == 1 and "no request 'nope'" in _one_error_line(err)
    code, _, err = _run(root, "status", "../../etc")
    assert code == 1 and "not a valid request id" in _one_error_line(err)


def _log_with_records(root: Path, n: int = 3) -> AuditLog:
    log = AuditLog(_settings(root).audit_log, KEY.encode())
    for i in range(n):
        log.append("request.completed", {"request_id": f"r{i}"})
    return log


def test_audit_verify_ok_and_tampered(root: Path) -> None:
    log = _log_with_records(root)
    code, out, err = _run(root, "audit", "verify")
    assert (code, err) == (0, "") and out.startswith("audit log OK: 3 records")
    lines = log.path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"r1"', b'"rX"')
    log.path.write_bytes(b"".join(lines))
    code, out, err = _run(root, "audit", "verify")
    assert code == 1 and out == ""
    assert _one_error_line(err) == (
        "error: audit log INVALID at record 2: hash does not match the record's content (edited)"
    )


def test_audit_verify_without_a_key(root: Path) -> None:
    code, _, err = _run(root, "audit", "verify", env={"UNLEARN_AUDIT_KEY": ""})
    assert code == 1 and _one_error_line(err).startswith("error: UNLEARN_AUDIT_KEY is not set")
    code, out, _ = _run(
        root, "audit", "verify", env={"UNLEARN_AUDIT_KEY": "", "UNLEARN_DEMO_MODE": "1"}
    )
    assert code == 0 and "0 records" in out


def _certified(root: Path, by_file: bool = True) -> dict[str, object]:
    """A record plus the audit entry citing it, by file SHA-256 (as the flow does) or content."""
    record = {
        "request_id": "gdpr-7",
        "status": "completed",
        "forget_classes": [3],
        "method": "delete",
        "hashes": {"parent_weights_sha256": "a" * 64, "new_weights_sha256": "b" * 64},
    }
    settings = _settings(root)
    path = write_request_record(settings, "gdpr-7", record)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if by_file else record_digest(record)
    log = _log_with_records(root, 1)
    log.append("request.completed", {"request_id": "gdpr-7", "record_sha256": digest})
    log.append("alias.moved", {"request_id": "gdpr-7", "alias": "champion"})
    return record


@pytest.mark.parametrize("by_file", [True, False])
def test_audit_certificate_markdown_and_html(root: Path, tmp_path: Path, by_file: bool) -> None:
    _certified(root, by_file)
    code, out, err = _run(root, "audit", "certificate", "gdpr-7")
    assert (code, err) == (0, "")
    assert out.startswith("# Deletion certificate: request gdpr-7")
    assert "a" * 64 in out and "b" * 64 in out and "seq 2 (request.completed)" in out
    target = tmp_path / "cert.html"
    code, out, _ = _run(
        root, "audit", "certificate", "gdpr-7", "--format", "html", "--out", str(target)
    )
    assert code == 0 and out.strip() == f"wrote {target}"
    assert target.read_text().startswith("<!DOCTYPE html>")


def test_audit_certificate_refuses_edited_record_or_log(root: Path) -> None:
    record = _certified(root)
    settings = _settings(root)
    write_request_record(settings, "gdpr-7", {**record, "forget_classes": [4]})
    code, _, err = _run(root, "audit", "certificate", "gdpr-7")
    assert code == 1 and "does not match the digest in audit log entry 2" in _one_error_line(err)
    write_request_record(settings, "gdpr-7", record)
    settings.audit_log.write_bytes(settings.audit_log.read_bytes()[:-5])
    code, _, err = _run(root, "audit", "certificate", "gdpr-7")
    assert code == 1 and "refusing to issue a certificate" in _one_error_line(err)


def test_audit_certificate_of_unknown_request(root: Path) -> None:
    code, _, err = _run(root, "audit", "certificate", "nope")
    assert code == 1 and "no audit record for request 'nope'" in _one_error_line(err)
    code, _, err = _run(root, "audit", "certificate", "nope", "--format", "pdf")
    assert code == 2 and "'pdf' is not one of 'md', 'html'" in _one_error_line(err)


def test_usage_errors_are_one_line(root: Path) -> None:
    code, _, err = _run(root, "frobnicate")
    assert code == 2 and _one_error_line(err) == "error: No such command 'frobnicate'."
    code, _, err = _run(root, "submit")
    assert code == 2 and "Missing argument" in _one_error_line(err)


def test_help_lists_the_commands(root: Path) -> None:
    code, out, _ = _run(root, "--help")
    assert code == 0
    for command in ("submit", "process", "status", "models", "audit", "bench"):
        assert command in out


def test_bench_passes_its_arguments_through(root: Path) -> None:
    code, out, _ = _run(root, "bench", "--help")
    assert code == 0 and "--quick" in out and "delete.bench" in out
    code, _, err = _run(root, "bench", "--no-such-flag")
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err


# --- submit checks what it can without running anything -------------------------------------


def _request_file(
    folder: Path,
    request_id: str = "gdpr-7",
    model: str = f"{MODEL}@champion",
    classes: str = "[3]",
) -> Path:
    path = folder / f"{request_id}.yaml"
    text = REQUEST.replace("gdpr-7", request_id).replace("[3]", classes)
    path.write_text(text.replace(f"{MODEL}@champion", model))
    return path


def _with_mnist_classes(root: Path) -> None:
    """The dataset description ``make demo`` checks out, without its images."""
    info = PipelineSettings.from_env(root).data_dir / "mnist5k" / "dataset.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"class_names": [str(i) for i in range(10)]}))


REFUSALS = {
    "unknown model": (
        {"model": "nope@champion"},
        "unknown model 'nope': it is not registered (registered: face-model, "
        "mnist5k-classifier, team-model)",
    ),
    "missing alias": (
        {"model": f"{MODEL}@challenger"},
        f"model '{MODEL}' has no alias @challenger (aliases: @champion)",
    ),
    "class index out of range": (
        {"classes": "[12]"},
        "forget class(es) [12] out of range for a model with 10 classes",
    ),
    "unknown class name": (
        {"model": "team-model@champion", "classes": "[fox]"},
        "unknown class 'fox'; dataset mnist5k has classes ['cat', 'dog', 'owl']",
    ),
    "id already applied": (
        {"request_id": "gdpr-applied"},
        f"request_id 'gdpr-applied' is already applied as {MODEL} version 2",
    ),
    "task mismatch": (
        {"model": "face-model@champion"},
        "is a face model but the request is a classification request",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_submit_refuses_in_one_line_and_queues_nothing(
    root: Path, tmp_path: Path, registry: str, case: str
) -> None:
    fields, reason = REFUSALS[case]
    _with_mnist_classes(root)
    source = _request_file(tmp_path, **fields)
    code, out, err = _run(root, "submit", str(source), env={"MLFLOW_TRACKING_URI": registry})
    assert code == 1 and out == ""
    line = _one_error_line(err)
    assert reason in line and "(rejected; recorded in requests/failed/" in line
    _nothing_queued(root)
    code, out, _ = _run(root, "status", "--json")
    assert [s["state"] for s in json.loads(out)] == ["failed"]  # on record, never queued


def test_submit_refuses_an_id_that_is_queued_or_done(
    root: Path, tmp_path: Path, registry: str
) -> None:
    env = {"MLFLOW_TRACKING_URI": registry}
    source = _request_file(tmp_path)
    assert _run(root, "submit", str(source), env=env)[0] == 0
    code, _, err = _run(root, "submit", str(source), env=env)
    assert code == 1 and "request_id 'gdpr-7' is already queued" in _one_error_line(err)
    settings = PipelineSettings.from_env(root)
    [queued] = settings.inbox_dir.iterdir()
    queued.rename(settings.done_dir / queued.name)  # as process does
    (settings.done_dir / f"{queued.name}.result.json").write_text('{"version": 3}')
    code, _, err = _run(root, "submit", str(source), env=env)
    assert code == 1 and "request_id 'gdpr-7' is already done (version 3)" in _one_error_line(err)
    _nothing_queued(root)


def test_submit_to_a_root_without_a_registry_creates_none(root: Path, tmp_path: Path) -> None:
    code, _, err = _run(root, "submit", str(_request_file(tmp_path)))
    assert code == 1
    assert f"unknown model '{MODEL}': no model is registered under" in _one_error_line(err)
    assert not (root / "mlflow").exists()
    _nothing_queued(root)
    code, out, _ = _run(root, "submit", "--no-check", str(_request_file(tmp_path)))
    assert code == 0 and out.startswith("queued gdpr-7")


def test_class_names_are_accepted_by_name(root: Path, tmp_path: Path, registry: str) -> None:
    source = _request_file(tmp_path, model="team-model@champion", classes="[owl]")
    code, out, err = _run(root, "submit", str(source), env={"MLFLOW_TRACKING_URI": registry})
    assert (code, err) == (0, "") and out.startswith("queued gdpr-7")


# --- flow commands: the key before anything starts; one line --------------------------------


@pytest.mark.parametrize(
    "args",
    [["bootstrap", "--task", "face"], ["process"], ["register", "card.yaml"]],
    ids=["bootstrap", "process", "register"],
)
def test_flow_commands_without_a_key_refuse_before_any_work(root: Path, args: list[str]) -> None:
    code, out, err = _run(root, *args, env={"UNLEARN_AUDIT_KEY": ""})
    assert code == 1 and out == ""
    assert _one_error_line(err).startswith("error: UNLEARN_AUDIT_KEY is not set")
    assert not root.exists() or not any(root.iterdir())  # no data, store, inbox or run


def _cli(root: Path, *args: str, key: str = "") -> subprocess.CompletedProcess[str]:
    """The installed command in its own process: what a person sees in a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNLEARN_", "PREFECT_"))}
    env |= {"UNLEARN_AUDIT_KEY": key, "PREFECT_HOME": str(root.parent / "prefect-home")}
    command = [sys.executable, "-m", "flows.cli", "--root", str(root), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.subprocess
def test_a_real_process_prints_one_line_without_a_key(root: Path) -> None:
    done = _cli(root, "bootstrap", "--task", "face")
    assert done.returncode == 1 and done.stdout == ""
    assert _one_error_line(done.stderr).startswith("error: UNLEARN_AUDIT_KEY is not set")
    assert not (root.parent / "prefect-home").exists()  # refused before Prefect ran a flow


@pytest.mark.subprocess
def test_a_bad_option_is_one_line_before_any_flow_starts(root: Path) -> None:
    root.mkdir()
    done = _cli(root, "bootstrap", "--task", "face", "--option", "bogus=1", key=KEY)
    assert done.returncode == 1 and done.stdout == ""
    assert "unknown face option(s) ['bogus']" in _one_error_line(done.stderr)
    assert not (root / "data.dvc").exists()  # refused before the flow versioned anything


@pytest.mark.subprocess
def test_a_flow_that_fails_prints_one_line_no_traceback_no_telemetry(root: Path) -> None:
    root.mkdir()
    # An option the loader accepts but cannot build: the flow starts, then fails inside Prefect.
    done = _cli(root, "bootstrap", "--task", "segmentation", "--option", "num_train=-3", key=KEY)
    assert done.returncode == 1 and done.stdout == ""
    assert "must be non-negative" in _one_error_line(done.stderr)
    assert (root / "data.dvc").exists()  # it did fail inside the flow, after versioning the data


# --- what the operator sees -----------------------------------------------------------------


def test_models_shows_the_classes_as_the_request_named_them(root: Path, registry: str) -> None:
    code, out, _ = _run(root, "models", env={"MLFLOW_TRACKING_URI": registry})
    assert code == 0
    face = [line for line in out.splitlines() if line.startswith("face-model")]
    assert len(face) == 1 and " id-3 " in face[0] and "[3]" not in out


def test_process_prints_where_the_evidence_is(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import _print_outcome

    settings = PipelineSettings.from_env(root)
    result = {
        "request_id": "gdpr-7",
        "state": "done",
        "model": MODEL,
        "version": 2,
        "alias": "champion",
        "record_path": str(settings.audit_dir / "requests" / "gdpr-7.json"),
        "evidently_html": str(settings.artifacts_dir / "gdpr-7" / "evidently.html"),
        "onnx_path": str(settings.artifacts_dir / "gdpr-7" / "model.onnx"),
        "mlflow_run_id": "abc123",
    }
    _print_outcome(settings, result)
    assert capsys.readouterr().out.splitlines() == [
        "gdpr-7: done (version 2; alias champion)",
        "  record      audit/requests/gdpr-7.json",
        "  report      artifacts/gdpr-7/evidently.html",
        "  onnx        artifacts/gdpr-7/model.onnx",
        "  certificate unlearn audit certificate gdpr-7",
        f"  mlflow      run abc123, http://127.0.0.1:5000/#/models/{MODEL}/versions/2 "
        "(after `unlearn ui`)",
    ]


def test_ui_serves_the_projects_store(root: Path) -> None:
    code, out, _ = _run(root, "ui", "--dry-run", "--port", "5055")
    store = PipelineSettings.from_env(root).mlflow_tracking_uri
    assert code == 0 and f"MLflow UI: http://127.0.0.1:5055 on {store}" in out
    assert f"-m mlflow ui --backend-store-uri {store} --host 127.0.0.1 --port 5055" in out
    assert "Prefect UI:" in out
    code, out, _ = _run(root, "ui", env={"MLFLOW_TRACKING_URI": "https://mlflow.example"})
    assert code == 0 and "MLflow UI: https://mlflow.example (a tracking server" in out


def test_a_demo_root_verifies_without_a_key(root: Path) -> None:
    from tasks.audit import DEMO_AUDIT_KEY
    from tasks.settings import DEMO_MARKER

    AuditLog(_settings(root).audit_log, DEMO_AUDIT_KEY).append("request.completed", {})
    no_key = {"UNLEARN_AUDIT_KEY": ""}
    code, _, err = _run(root, "audit", "verify", env=no_key)
    assert code == 1 and "UNLEARN_AUDIT_KEY is not set" in _one_error_line(err)
    (root / DEMO_MARKER).write_text("demo\n")  # what make demo leaves behind
    code, out, _ = _run(root, "audit", "verify", env=no_key)
    assert code == 0 and "1 records" in out and "demo mode" in out
    code, _, err = _run(root, "audit", "verify", env={**no_key, "UNLEARN_DEMO_MODE": "0"})
    assert code == 1 and "UNLEARN_AUDIT_KEY is not set" in _one_error_line(err)


# --- tables (rich) ----------------------------------------------------------------------------

#: Wider than 80 columns, with text that rich would read as markup if it were given a string.
LONG_REASON = "[bold]GDPR[/bold] [3] already queued " + "and a long explanation " * 8


def test_tables_keep_every_row_on_one_line_off_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from flows.cli import _print_table

    _print_table(["REQUEST_ID", "REASON"], [["gdpr-7", LONG_REASON.strip()], ["r-10", "ok"]])
    assert capsys.readouterr().out.splitlines() == [
        "REQUEST_ID  REASON",
        f"gdpr-7      {LONG_REASON.strip()}",  # "[bold]" is text, not a style
        "r-10        ok",
    ]


def test_tables_wrap_long_cells_inside_their_column_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    from rich.console import Console

    from flows.cli import _print_table

    terminal = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=40)
    _print_table(["REQUEST_ID", "REASON"], [["gdpr-7", LONG_REASON.strip()]], terminal)
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["REQUEST_ID", "REASON"] and len(lines) > 1
    assert all(len(line) <= 40 for line in lines)
    assert lines[0].startswith("gdpr-7      [bold]GDPR[/bold]")
    assert all(line.startswith(" " * 12) for line in lines[1:])  # inside the REASON column
    assert " ".join(" ".join(line.split()) for line in lines) == f"gdpr-7 {LONG_REASON.strip()}"
