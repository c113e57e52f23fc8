"""Epoch progress: the library reports every epoch, the CLI draws it with rich."""

from __future__ import annotations

import io

from rich.console import Console
from torch.utils.data import TensorDataset

from delete import progress
from delete.api import run_unlearning
from delete.progress import EpochProgress, progress_listener, report_epoch
from delete.training import TrainConfig, train_classifier
from flows._console import EpochLines, live_progress
from tests.unit._tiny import TinyNet, tiny_data, tiny_problem


def test_training_reports_its_start_and_every_epoch() -> None:
    images, labels = tiny_data()
    seen: list[EpochProgress] = []
    with progress_listener(seen.append):
        train_classifier(TinyNet(), TensorDataset(images, labels), TrainConfig(epochs=3), "cpu")
    assert [(e.stage, e.epoch, e.total) for e in seen] == [("train", i, 3) for i in range(4)]
    assert seen[0].loss is None and all(e.loss is not None for e in seen[1:])


def test_unlearning_reports_every_epoch_of_its_method() -> None:
    model, forget, retain = tiny_problem()
    seen: list[EpochProgress] = []
    with progress_listener(seen.append):
        run_unlearning(
            model,
            forget,
            [1],
            "delete",
            "cpu",
            retain_loader=retain,
            epochs=2,
            lr=0.01,
            progress=False,
        )
    assert [(e.stage, e.label, e.epoch, e.total) for e in seen] == [
        ("unlearn", "delete", i, 2) for i in range(3)
    ]


def test_a_failing_listener_never_stops_training_and_is_removed_after() -> None:
    def broken(event: EpochProgress) -> None:
        raise RuntimeError("display gone")

    images, labels = tiny_data()
    with progress_listener(broken):
        train_classifier(TinyNet(), TensorDataset(images, labels), TrainConfig(epochs=1), "cpu")
    assert progress._listeners == []  # noqa: SLF001 - nothing left listening


def test_bars_with_eta_on_a_terminal_and_nothing_in_a_log() -> None:
    terminal = io.StringIO()
    console = Console(file=terminal, force_terminal=True, width=120)
    with live_progress("processing the inbox", console):
        for epoch in range(3):
            report_epoch(EpochProgress("unlearn", "delete", 7, epoch, 4, 0.25 if epoch else None))
    drawn = terminal.getvalue()
    assert "processing the inbox" in drawn and "unlearn delete" in drawn
    assert "2/4 epochs, loss 0.2500" in drawn and "ETA" in drawn
    log = io.StringIO()
    with live_progress("processing the inbox", Console(file=log, force_terminal=False)):
        report_epoch(EpochProgress("unlearn", "delete", 7, 1, 4, 0.25))
    assert log.getvalue() == ""


def test_plain_lines_carry_an_eta() -> None:
    out: list[str] = []
    times = iter([0.0, 5.0, 10.0])
    lines = EpochLines(out.append, clock=lambda: next(times))
    for epoch in range(3):
        lines(EpochProgress("unlearn", "delete", 1, epoch, 10, 0.5))
    assert out == [
        "unlearn delete: epoch 1/10, loss 0.5000, ETA 0:00:45",
        "unlearn delete: epoch 2/10, loss 0.5000, ETA 0:00:40",
    ]


def test_an_evaluation_pass_reports_its_batches() -> None:
    from delete.data import ImageTensorDataset
    from delete.metrics import predict

    images, labels = tiny_data()
    dataset = ImageTensorDataset(images[:10], labels[:10])
    seen: list[EpochProgress] = []
    with progress_listener(seen.append):
        predict(TinyNet(), dataset, "cpu", batch_size=4)
        predict(TinyNet(), dataset, "cpu", batch_size=4)
    assert [(e.stage, e.unit, e.epoch, e.total) for e in seen[:3]] == [
        ("evaluate", "batches", i, 3) for i in (1, 2, 3)
    ]
    assert len({e.run for e in seen}) == 2  # each pass is its own bar
    lines: list[str] = []
    for event in seen:  # the plain-line renderer keeps logs to epochs
        EpochLines(write=lines.append)(event)
    assert lines == []
