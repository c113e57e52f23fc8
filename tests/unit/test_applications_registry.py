"""The task registry the pipeline dispatches on, and the benchmark's plumbing."""

from __future__ import annotations

import pytest

from delete.applications import TASKS, UnknownTaskError, get_task, list_tasks
from delete.bench.application_cases import NOT_APPLICABLE, bench_cases
from delete.bench.applications import _cap, _markdown_table
from delete.errors import UnlearningError
from delete.methods import list_methods


def test_every_task_is_registered_with_its_callables() -> None:
    assert list_tasks() == ["backdoor", "classification", "face", "segmentation"]
    for name, spec in TASKS.items():
        assert spec.name == name
        for hook in (spec.load_data, spec.model_spec, spec.forget_set, spec.evaluate):
            assert callable(hook)
        assert spec.headline


def test_unknown_task_is_a_one_line_library_error() -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task("ocr")
    assert isinstance(info.value, UnlearningError)
    assert str(info.value) == (
        "unknown task 'ocr'; known: backdoor, classification, face, segmentation"
    )


def test_not_applicable_lists_only_registered_methods() -> None:
    registered = set(list_methods())
    for reasons in NOT_APPLICABLE.values():
        assert set(reasons) <= registered


def test_bench_helpers() -> None:
    table = _markdown_table([{"method": "A", "x": 1.234, "seconds": 2.0}], ["x"])
    assert table.splitlines() == ["| method | x | seconds |", "|---|---|---|", "| A | 1.2 | 2.0 |"]
    data = list(range(10))
    capped = _cap(data, 4, seed=0)  # type: ignore[arg-type]
    assert len(capped) == 4  # type: ignore[arg-type]
    assert _cap(data, 20, seed=0) is data  # type: ignore[arg-type]
    assert [c.task for c in bench_cases(quick=False)] == ["face", "backdoor", "segmentation"]
