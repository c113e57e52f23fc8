"""A request without pinned hyper-parameters: the pipeline's automatic selection, recorded.

The pipeline passes DELETE a seeded selection sample of retained *training* images; what was
tried, what was chosen and why it stopped must reach the request record and the audit chain.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.flows.conftest import MAX_PER_CLASS, write_request

pytestmark = pytest.mark.slow


def test_unpinned_request_selects_with_a_training_sample_and_records_it(
    project: dict[str, Any],
) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import open_audit_log, read_request_record
    from tasks.inbox import Inbox

    settings = project["settings"]
    source = write_request(
        settings.root / "auto.yaml", "auto-select-0001", forget_classes="[2]", hparams=None
    )
    Inbox(settings).submit(source)
    (result,) = [
        r
        for r in process_inbox_flow(root=str(settings.root))
        if r.get("request_id") == "auto-select-0001"
    ]
    assert result["state"] == "done", result

    record = read_request_record(settings, "auto-select-0001")
    selection = record["selection"]
    assert selection["mode"] == "selection-sample"
    # Retained *training* images only: at most 50 per class were materialised, 80 % of them
    # in the training split, over the 9 retained classes.
    assert 0 < selection["selection_size"] <= 9 * MAX_PER_CLASS
    assert selection["stop_reason"]
    # A short forget set: the forget-only rule may have tried the same candidates too.
    tried = {(t["candidate"], t["rule"]): t["status"] for t in selection["tried"]}
    assert list(tried.values()).count("chosen") == 1
    assert selection["chosen"] in {candidate for candidate, _ in tried}
    # The kept setting is what the record says ran: the chosen lr, clipped steps, frozen BN.
    assert record["hparams"]["lr"] == selection["chosen_lr"]
    assert record["hparams"]["grad_clip"] == 1.0 and record["hparams"]["freeze_bn"] is True
    assert record["hparams"]["epochs"] == selection["best_epoch"]
    # How it ran, decided at run time: the SmallCNN channels-last (its logits are the same),
    # the teacher's logits once (the pipeline's forget loader does not augment).
    assert record["engine"]["layout"] == "channels_last"
    assert record["engine"]["teacher_logits"] == "computed once"

    (completed,) = open_audit_log(settings).find("request.completed", "auto-select-0001")
    audited = completed["payload"]["selection"]
    assert audited["chosen"] == selection["chosen"]
    assert audited["stop_reason"] == selection["stop_reason"]
    assert audited["mode"] == "selection-sample"
    # One step a pass: the forget-only rule ran first, and the audit names it.
    assert len(audited["tried"]) == len(selection["tried"])
    assert "lr=0.001 bn=frozen (forget-only rule) (" in " ".join(audited["tried"])


def test_pinned_request_runs_exactly_its_setting(project: dict[str, Any]) -> None:
    from flows.process_inbox import process_inbox_flow
    from tasks.audit import read_request_record
    from tasks.inbox import Inbox

    settings = project["settings"]
    source = write_request(
        settings.root / "fixed.yaml",
        "fixed-0001",
        forget_classes="[4]",
        hparams="{epochs: 2, lr: 0.001}",
    )
    Inbox(settings).submit(source)
    process_inbox_flow(root=str(settings.root))
    record = read_request_record(settings, "fixed-0001")
    assert record.get("selection") is None  # a fixed run: no selection report
    assert record["hparams"]["epochs"] == 2 and record["hparams"]["lr"] == 0.001
    assert len(record["engine"]["epoch_losses"]) == 2
