"""Deletion certificates: complete, honest, and safe to open in a browser."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from typing import Any

import pytest

from tasks.certificate import (
    DISCLAIMER,
    MIA_EXPLANATIONS,
    SVC_LEFT_OUT,
    TASK_DISCLAIMER,
    render_certificate,
)

PARENT_SHA = "a" * 64
NEW_SHA = "b" * 64


def _record(**overrides: Any) -> dict[str, Any]:
    """A record shaped like the one flows/unlearn.py writes."""
    record: dict[str, Any] = {
        "request_id": "gdpr-2025-0042",
        "status": "completed",
        "request": {
            "request_id": "gdpr-2025-0042",
            "model": "mnist5k-classifier@champion",
            "forget_classes": [3],
            "requested_by": "dpo@example.com",
            "reason": "GDPR Art. 17 erasure",
            "received_at": "2025-01-31T09:00:00Z",
            "deadline": None,
            "method": "delete",
            "hparams": {},
        },
        "request_content_sha256": "f" * 64,
        "model": "mnist5k-classifier",
        "parent_version": 1,
        "parent_weights_sha256": PARENT_SHA,
        "forget_classes": [3],
        "forget_class_names": ["three"],
        "data_version": {
            "md5": "0123456789abcdef0123456789abcdef.dir",
            "git_rev": "1234abcd",
            "dvc_file_committed": True,
        },
        "forget_manifest": {"n_samples": 408, "content_sha256": "c" * 64, "dvc_md5": "9" * 32},
        "method": "delete",
        "hparams": {"epochs": 20, "lr": 0.001},
        "metrics": {
            "before": {"acc_test_forget": 98.5, "acc_test_retain": 97.5, "mia_auc": 0.71},
            "after": {"acc_test_forget": 0.0, "acc_test_retain": 95.6, "mia_auc": 0.52},
        },
        "gates": {"max_test_forget_accuracy": 5.0, "max_retain_accuracy_drop": 3.0},
        "verdict": {
            "passed": True,
            "verdict": "passed",
            "checks": [
                _check("max_test_forget_accuracy", 0.0, 5.0, True),
                _check("max_retain_accuracy_drop", 1.9, 3.0, True),
            ],
            "reasons": [],
        },
        "onnx": {"path": "artifacts/runs/gdpr-2025-0042/model/model.onnx", "sha256": "d" * 64},
        "weights_sha256": NEW_SHA,
        "mlflow_run_id": "run123",
        "version": 2,
        "alias": "champion",
        "code_version": {"git_sha": "feedbeef" * 5, "package_version": "0.1.0"},
        "started_at": "2025-02-01T02:00:00Z",
        "finished_at": "2025-02-01T02:03:00Z",
    }
    record.update(overrides)
    return record


def _check(name: str, value: float, threshold: float, passed: bool) -> dict[str, Any]:
    return {"name": name, "value": value, "threshold": threshold, "passed": passed}


EXPECTED = [
    "gdpr-2025-0042",
    "three",
    "delete",
    "0123456789abcdef0123456789abcdef.dir",  # data version
    "1234abcd",
    "feedbeef" * 5,  # code version
    "0.1.0",
    "acc_test_forget",
    "98.5",
    "95.6",
    "max_test_forget_accuracy",
    "max_retain_accuracy_drop",
    "PASS",
    PARENT_SHA,
    NEW_SHA,
    "d" * 64,
    "dpo@example.com",
    "GDPR Art. 17 erasure",
    "champion",
    "408",
    "run123",
]


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_certificate_contains_every_fact_and_the_disclaimer(fmt: str) -> None:
    text = render_certificate(_record(), fmt)  # type: ignore[arg-type]
    for fact in EXPECTED:
        assert fact in text, f"{fact!r} missing from the {fmt} certificate"
    plain = html.unescape(text) if fmt == "html" else text
    assert DISCLAIMER in plain
    assert "not a cryptographic or formal proof" in plain


def test_markdown_layout() -> None:
    md = render_certificate(_record(), "md")
    assert md.startswith("# Deletion certificate: request gdpr-2025-0042\n")
    assert "| Metric | Before | After | Change |" in md
    assert "| acc_test_forget | 98.5 | 0 | -98.5 |" in md
    assert "| max_test_forget_accuracy | 0 | 5 | PASS |" in md
    assert f"| original (parent) | 1 | {PARENT_SHA} |" in md
    assert f"| unlearned (new) | 2 | {NEW_SHA} |" in md
    assert "- **Forgotten classes:** 3" in md


def test_failed_gates_are_shown_with_reasons() -> None:
    verdict = {
        "passed": False,
        "checks": [_check("mia_auc_band", 0.8, 0.1, False)],
        "reasons": ["MIA AUC 0.8 outside 0.5 +/- 0.1"],
    }
    md = render_certificate(_record(verdict=verdict, alias="challenger"), "md")
    assert "| mia_auc_band | 0.8 | 0.1 | FAIL |" in md
    assert "- **Gates:** FAIL" in md and "challenger" in md
    assert "MIA AUC 0.8 outside 0.5 +/- 0.1" in md


def test_html_escapes_user_content() -> None:
    evil = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    record = _record(request={**_record()["request"], "reason": evil, "requested_by": evil})
    record["forget_class_names"] = ["<b>three</b>"]
    page = render_certificate(record, "html")
    assert "<script>" not in page and "<img" not in page and "<b>three" not in page
    escaped = (
        "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;"
    )
    assert escaped in page and evil in html.unescape(page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


class _Tags(HTMLParser):
    """Every element a browser's parser would open in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.opened.append(tag)


#: The elements the certificate page is made of; a request field must never add one.
PAGE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "tr", "th"}
PAGE_TAGS |= {"td", "p"}


def test_script_in_a_request_field_is_text_never_a_tag() -> None:
    script = "<script>alert(1)</script>"
    request = {**_record()["request"], "reason": script, "requested_by": script}
    page = render_certificate(_record(request_id=script, request=request), "html")
    parser = _Tags()
    parser.feed(page)
    assert "script" not in parser.opened and set(parser.opened) <= PAGE_TAGS
    assert "<script" not in page.lower()
    shown = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<tr><th>Requested by</th><td>{shown}</td></tr>" in page
    assert f"<tr><th>Legal basis / reason</th><td>{shown}</td></tr>" in page
    assert f"<title>Deletion certificate: request {shown}</title>" in page


def test_markdown_escapes_markup_in_user_content() -> None:
    record = _record(request={**_record()["request"], "reason": "a | b <script>x</script> [l](u)"})
    md = render_certificate(record, "md")
    assert "<script>" not in md
    assert r"a \| b \<script\>x\</script\> \[l\](u)" in md


def test_minimal_record_renders_with_not_recorded() -> None:
    md = render_certificate({"request_id": "r1", "status": "rejected", "error": "bad\nthing"}, "md")
    assert "not recorded" in md and "- **Error:** bad thing" in md
    assert "not a cryptographic or formal proof" in md
    page = render_certificate({}, "html")
    assert "not recorded" in page


def test_nested_record_layout_is_read_too() -> None:
    record = {
        "request_id": "r2",
        "model": {"name": "m", "parent_version": 3, "version": 4, "alias": "champion"},
        "hashes": {"parent_weights_sha256": PARENT_SHA, "new_weights_sha256": NEW_SHA},
        "gates": {"passed": True, "checks": [_check("g", 1.0, 2.0, True)]},
        "completed_at": "2025-02-01T00:00:00Z",
    }
    md = render_certificate(record, "md")
    assert f"| original (parent) | 3 | {PARENT_SHA} |" in md
    assert f"| unlearned (new) | 4 | {NEW_SHA} |" in md
    assert "| g | 1 | 2 | PASS |" in md and "2025-02-01T00:00:00Z" in md


def test_thresholds_are_listed_when_no_verdict_was_recorded() -> None:
    md = render_certificate({"request_id": "r", "gates": {"mia_auc_band": 0.1}}, "md")
    assert "| mia_auc_band | not recorded | 0.1 | not recorded |" in md


def test_log_entry_is_cited() -> None:
    entry = {"seq": 7, "event": "request.completed", "ts": "2025-02-01T02:03:01Z", "hash": "e" * 64}
    md = render_certificate(_record(), "md", log_entry=entry)
    assert "seq 7 (request.completed)" in md and "e" * 64 in md


def test_bad_format_and_bad_record() -> None:
    with pytest.raises(ValueError, match="unknown certificate format 'pdf'"):
        render_certificate(_record(), "pdf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be a JSON object"):
        render_certificate([1], "md")  # type: ignore[arg-type]


def test_task_requests_get_the_task_disclaimer() -> None:
    text = render_certificate(_record(task="backdoor"), "md")
    assert TASK_DISCLAIMER in text and DISCLAIMER not in text
    assert "membership" not in TASK_DISCLAIMER
    assert DISCLAIMER in render_certificate(_record(task="classification"), "md")


# --- what a reader should not have to guess (issue 13) ------------------------------------


def _mia_record(after_forget: float) -> dict[str, Any]:
    before = {"acc_train_forget": 95.0, "mia_svc_member_rate": 70.5, "mia_auc": 0.71}
    before["mia_auc_std"] = 0.08
    after = {"acc_train_forget": after_forget, "mia_svc_member_rate": 100.0, "mia_auc": 0.52}
    after["mia_auc_std"] = 0.07
    return _record(metrics={"before": before, "after": after})


def test_each_membership_inference_figure_is_explained() -> None:
    md = render_certificate(_mia_record(after_forget=40.0), "md")
    for name, sentence in MIA_EXPLANATIONS.items():
        assert f"| {name} |" in md
        assert sentence in md, f"{name} is shown without its explanation"


def test_svc_rate_is_left_out_with_the_reason_once_the_class_is_forgotten() -> None:
    md = render_certificate(_mia_record(after_forget=0.0), "md")
    assert "| mia_svc_member_rate |" not in md and "70.5" not in md
    assert SVC_LEFT_OUT.format(after=0.0) in md
    assert MIA_EXPLANATIONS["mia_svc_member_rate"] not in md
    assert MIA_EXPLANATIONS["mia_auc"] in md


@pytest.mark.parametrize(
    ("deadline", "finished", "expected"),
    [
        ("2025-03-02T09:00:00Z", "2026-12-02T03:51:22+00:00", "(LATE: finished 2026-12-02"),
        ("2025-02-02T00:00:00Z", "2025-02-01T02:03:00Z", "2025-02-02T00:00:00Z (met)"),
        ("2025-02-01T00:00:00Z", "2025-02-01T02:03:00Z", "2 hours after the deadline"),
    ],
)
def test_deadline_is_flagged_late_or_met(deadline: str, finished: str, expected: str) -> None:
    record = _record(finished_at=finished)
    record["request"]["deadline"] = deadline
    md = render_certificate(record, "md")
    assert f"- **Deadline:** {deadline} " in md
    assert expected in md
    assert ("LATE" in md) == ("met)" not in md)


def test_no_deadline_no_flag() -> None:
    md = render_certificate(_record(), "md")
    assert "LATE" not in md and "(met)" not in md
    assert "- **Deadline:** not recorded" in md


def test_only_settings_that_applied_are_listed() -> None:
    hparams = {"amp": True, "grad_clip": None, "trainable": None, "epochs": 20, "lr": 0.001}
    cpu = render_certificate(_record(hparams=hparams, engine={"device": "cpu"}), "md")
    assert "- **Settings that applied:** epochs=20, lr=0.001" in cpu
    assert "amp=" not in cpu and "grad_clip" not in cpu and "trainable" not in cpu
    assert "- **Device:** cpu" in cpu
    gpu = render_certificate(_record(hparams=hparams, engine={"device": "cuda:0"}), "md")
    assert "- **Settings that applied:** amp=yes, epochs=20, lr=0.001" in gpu


def test_artifacts_are_named_relative_to_the_root_or_by_mlflow_uri() -> None:
    record = _record(
        onnx={"path": "/srv/project/artifacts/runs/r/model/model.onnx", "sha256": "d" * 64},
        evidently={"html_path": "/srv/project/artifacts/runs/r/report/evidently_report.html"},
        data_version={"md5": "m" * 32, "path": "/srv/project/data.dvc"},
        mlflow_tracking_uri="sqlite:////srv/project/mlflow/mlflow.db",
    )
    md = render_certificate(record, "md")  # root read from the embedded store's URI
    assert "/srv/project" not in md
    assert "- **ONNX file:** artifacts/runs/r/model/model.onnx" in md
    assert "- **Evidently report:** artifacts/runs/r/report/evidently_report.html" in md
    assert "- **data: path:** data.dvc" in md
    assert "- **MLflow run:** runs:/run123" in md
    assert "- **MLflow model version:** models:/mnist5k-classifier/2" in md
    # a tracking server reveals no root: an explicit one does, and paths outside it stay whole
    record["mlflow_tracking_uri"] = "http://mlflow:5000"
    record["evidently"] = {"html_path": "/elsewhere/report.html"}
    explicit = render_certificate(record, "html", root="/srv/project")
    assert "artifacts/runs/r/model/model.onnx" in explicit and "/srv/project" not in explicit
    assert "/elsewhere/report.html" in explicit
    assert "/srv/project/data.dvc" in render_certificate(record, "md")


def _selection(**overrides: Any) -> dict[str, Any]:
    """A ``selection`` block shaped like ``SelectionReport.to_dict()``."""
    sig = {"epoch": 1, "forget_acc": 0.0}
    block: dict[str, Any] = {
        "mode": "selection-sample",
        "chosen": "lr=0.003 bn=train",
        "epochs": 18,
        "best_epoch": 14,
        "stop_reason": "forgotten and retention term stopped improving for 2 epochs",
        "selection_size": 500,
        "tried": [
            {"candidate": "lr=0.001 bn=frozen", "status": "beaten", "signals": [sig] * 3},
            {
                "candidate": "lr=0.001 bn=frozen",
                "rule": "forget-only",
                "status": "dropped",
                "signals": [sig] * 9,
            },
            {"candidate": "lr=0.003 bn=frozen", "status": "skipped", "signals": []},
            {"candidate": "lr=0.003 bn=train", "status": "chosen", "signals": [sig] * 3},
        ],
    }
    block.update(overrides)
    return block


def test_the_certificate_says_how_the_settings_were_chosen_and_why_it_stopped() -> None:
    md = render_certificate(_record(selection=_selection()), "md")
    assert "## How the settings were chosen" in md
    assert "- **Why it stopped:** forgotten and retention term stopped improving" in md
    assert "- **Epochs:** 18 trained, epoch 14 kept" in md
    assert "- **Selection sample:** 500 retained training images, used to choose only" in md
    assert "| Candidate | Outcome | Probe epochs |" in md
    assert "| lr=0.001 bn=frozen | trained to the end, but another run's kept state" in md
    assert "| lr=0.001 bn=frozen (forget-only rule) | not forgetting fast enough" in md
    assert "| lr=0.003 bn=frozen | not tried: a gentler candidate was already on track | 0 |" in md
    page = render_certificate(_record(selection=_selection(stop_reason="<b>x</b>")), "html")
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_a_fixed_setting_has_no_selection_section() -> None:
    assert "How the settings were chosen" not in render_certificate(_record(), "md")
    assert "How the settings were chosen" not in render_certificate(_record(selection=None), "md")
