"""What a person sees in a real browser (headless Chromium through Playwright): the MLflow UI of
a registered unlearned version, its run's Evidently summary, and the certificate HTML.

The store is made with the registry helpers the flows call (not by running the pipeline): the
test is about what MLflow renders of what those helpers write. Where Playwright or a Chromium
is missing it skips with the reason, or fails under ``make test`` (``UNLEARN_REQUIRE_BROWSER``,
after ``make chromium`` installed one); see the README ("Browser test").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

MODEL = "browser-classifier"
REQUEST = "forget-digit-7"
#: Browsers tried after Playwright's own download, in this order (Debian's package first).
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
UI_TIMEOUT_MS = 90_000  # the MLflow UI bundle is large; 2 shared cores load it slowly


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as playwright:
        launched = _launch(playwright, sync_api.Error)
        try:
            yield launched
        finally:
            launched.close()


def _launch(playwright: Any, error: type[Exception]) -> Any:
    """Playwright's Chromium, else a system one (``UNLEARN_CHROMIUM`` or on PATH), else skip."""
    # Running as root (containers, CI) Chromium refuses its own sandbox.
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    try:
        return playwright.chromium.launch(headless=True, args=args)
    except error:
        pass
    candidates = [os.environ.get("UNLEARN_CHROMIUM")] + [shutil.which(n) for n in SYSTEM_CHROMIUMS]
    for path in candidates:
        if path and Path(path).exists():
            return playwright.chromium.launch(executable_path=path, headless=True, args=args)
    why = (
        "no Chromium for Playwright: run `.venv/bin/playwright install chromium`, or install "
        "one (Debian: `apt-get install chromium`) and set UNLEARN_CHROMIUM if it is not on PATH"
    )
    if os.environ.get("UNLEARN_REQUIRE_BROWSER"):  # `make test`: a skip would hide it
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, pipeline_env: None) -> dict[str, Any]:
    """An unlearned version as the flow registers it: run, dataset, report, alias, description."""
    import torch

    from delete.models import ModelSpec, build_model
    from tasks.export import package_model
    from tasks.registry import CHAMPION, ModelRegistry, describe_version, iso_to_millis
    from tasks.report import build_evidently_report_from_logits
    from tasks.settings import PipelineSettings

    root = tmp_path_factory.mktemp("browser")
    settings = PipelineSettings.from_env(root)
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1, image_size=28)
    torch.manual_seed(0)
    package = package_model(build_model(spec).eval(), spec, root / "package")
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([c for c in range(10) if c != 7 for _ in range(12)])
    parent = torch.randn(len(labels), 10, generator=generator)
    parent[torch.arange(len(labels)), labels] += 4.0
    unlearned = parent.clone()
    unlearned[:, 7] -= 20.0
    report = build_evidently_report_from_logits(
        parent,
        unlearned,
        labels,
        [str(i) for i in range(10)],
        root / "report",
        request_id=REQUEST,
        forget_classes=[7],
        reference_name="parent model (v1)",
        current_name="unlearned model (v2)",
    )
    run_id = ModelRegistry.of(settings).create_run(
        f"unlearn-{REQUEST}",
        {"request_id": REQUEST},
        start_time_ms=iso_to_millis("2026-12-02T03:50:56Z"),
    )
    ModelRegistry.of(settings).log_dataset_input(
        run_id, name="mnist5k", path=root / "data.dvc", digest="c" * 32 + ".dir"
    )
    ModelRegistry.of(settings).log_to_run(
        run_id,
        metrics={"after_acc_test_retain": 93.55555555555556},
        artifacts=[(path, "evidently") for path in report.files()],
    )
    version = ModelRegistry.of(settings).register_version(
        name=MODEL,
        run_id=run_id,
        model_dir=package.model_dir,
        tags={"request_id": REQUEST},
    )
    ModelRegistry.of(settings).mark_complete(MODEL, version)
    ModelRegistry.of(settings).set_alias(MODEL, CHAMPION, version)
    description = describe_version(
        request_id=REQUEST,
        forget_class_names=["7"],
        verdict="passed",
        alias=CHAMPION,
        parent_version=1,
        method="delete",
        evidently=report.summary_line(),
    )
    ModelRegistry.of(settings).set_version_description(MODEL, version, description)
    ModelRegistry.of(settings).finish_run(run_id, end_time_ms=iso_to_millis("2026-12-02T03:51:22Z"))
    return {
        "root": root,
        "uri": settings.mlflow_tracking_uri,
        "experiment_id": ModelRegistry.of(settings).ensure_experiment(),
        "run_id": run_id,
        "version": version,
        "report": report,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def mlflow_ui(store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` over the store, on a free localhost port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store["uri"]]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as out:
        # Own session: the server's worker processes go down with it (one process group).
        server = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _text(page: Any, text: str) -> None:
    """Wait until ``text`` is visible on the page (fails with the page's text otherwise)."""
    try:
        page.get_by_text(text, exact=False).first.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    except Exception as exc:  # noqa: BLE001 - any Playwright failure becomes one readable line
        body = page.inner_text("body")[:2000]
        pytest.fail(f"{text!r} not shown ({type(exc).__name__}); the page says:\n{body}")


def test_version_page_shows_alias_description_and_evidently_summary(
    browser: Any, mlflow_ui: str, store: dict[str, Any]
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{mlflow_ui}/#/models/{MODEL}/versions/{store['version']}")
    _text(page, f"under request {REQUEST}")
    _text(page, "Forgets class 7 from version 1")
    _text(page, "Verdict: passed, alias @champion")
    _text(page, store["report"].summary_line())
    _text(page, "@ champion")  # the alias chip, not only the description's mention
    _text(page, "Inputs (1)")  # the ONNX signature
    _text(page, "Outputs (1)")
    page.close()


def test_run_page_shows_its_duration_and_dataset(
    browser: Any, mlflow_ui: str, store: dict[str, Any]
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{mlflow_ui}/#/experiments/{store['experiment_id']}/runs/{store['run_id']}")
    _text(page, "26.0s")  # 03:50:56 -> 03:51:22, not the moment the run was opened
    _text(page, "mnist5k (" + "c" * 32 + ".dir)")
    _text(page, "93.5556")
    page.close()


@pytest.mark.parametrize("artifact", ["evidently_summary.html", "evidently_report.html"])
def test_evidently_results_are_readable_in_the_artifact_view(
    browser: Any, mlflow_ui: str, store: dict[str, Any], artifact: str
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    run = f"#/experiments/{store['experiment_id']}/runs/{store['run_id']}"
    page.goto(f"{mlflow_ui}/{run}/artifacts/evidently/{artifact}")
    frame = page.frame_locator("iframe").first  # MLflow's sandboxed HTML preview
    body = frame.locator("body")
    for text in (
        f"Request {REQUEST}: retained-class behaviour",
        "Reference = the parent model (v1); Current = the unlearned model (v2)",
        "precision (macro, retained classes)",
        "Drift here means",
    ):
        try:
            body.get_by_text(text, exact=False).first.wait_for(
                state="visible", timeout=UI_TIMEOUT_MS
            )
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{artifact}: {text!r} not shown in MLflow's preview ({exc!r})")
    page.close()


def test_certificate_html_renders_its_sections(browser: Any, tmp_path: Path) -> None:
    from tasks.certificate import MIA_EXPLANATIONS, render_certificate
    from tests.unit.test_certificate import _record

    record = _record(
        engine={"device": "cpu"},
        hparams={"amp": True, "grad_clip": None, "epochs": 20},
        onnx={"path": str(tmp_path / "artifacts/runs/r/model/model.onnx"), "sha256": "d" * 64},
    )
    record["request"]["deadline"] = "2025-01-31T12:00:00Z"
    page_file = tmp_path / "certificate.html"
    page_file.write_text(render_certificate(record, "html", root=tmp_path))
    page = browser.new_page()
    page.goto(page_file.as_uri())
    headings = [h.strip() for h in page.locator("h2").all_inner_texts()]
    assert headings == [
        "Summary",
        "Request",
        "What was forgotten",
        "Data and code versions",
        "Models",
        "Metrics before and after",
        "Promotion gates",
        "Audit trail",
        "What this certificate does and does not show",
    ]
    assert page.locator("h1").inner_text() == "Deletion certificate: request gdpr-2025-0042"
    text = page.inner_text("body")
    assert "LATE: finished 2025-02-01T02:03:00Z" in text
    assert MIA_EXPLANATIONS["mia_auc"] in text
    assert "Settings that applied\tepochs=20" in text and "amp=" not in text
    assert "artifacts/runs/r/model/model.onnx" in text and str(tmp_path) not in text
    # tables are laid out as tables (rendered, not shown as markup)
    assert page.locator("table").count() >= 5 and "<td>" not in text
    page.close()
