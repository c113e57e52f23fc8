"""Per-task promotion gates: ``gates.yaml`` sections and ``check_task_gates``."""

from __future__ import annotations

from pathlib import Path

import pytest

from delete.applications import list_tasks
from tasks.evaluation import (
    DEFAULT_GATES,
    DEFAULT_TASK_GATES,
    GateCheck,
    GateConfigError,
    GateVerdict,
    check_task_gates,
    load_gates,
)

SHIPPED = Path(__file__).resolve().parents[2] / "gates.yaml"

CLASSIFICATION_LINES = """\
max_test_forget_accuracy: 1.0
max_retain_accuracy_drop: 2.0
mia_auc_band: 0.05
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gates.yaml"
    path.write_text(text)
    return path


def _error(path: Path, task: str = "classification") -> str:
    with pytest.raises(GateConfigError) as info:
        load_gates(path, task)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults -------------------------------------------------------------------------------


def test_absent_file_gives_the_default_classification_gates(tmp_path: Path) -> None:
    gates = load_gates(tmp_path / "missing.yaml")
    assert gates == DEFAULT_GATES
    assert gates is not DEFAULT_GATES  # a copy: the caller may not corrupt the defaults
    assert load_gates(None) == DEFAULT_GATES


@pytest.mark.parametrize("task", ["face", "backdoor", "segmentation"])
def test_absent_file_gives_the_task_defaults(tmp_path: Path, task: str) -> None:
    gates = load_gates(tmp_path / "missing.yaml", task)
    assert gates == DEFAULT_TASK_GATES[task]
    assert gates is not DEFAULT_TASK_GATES[task]
    assert load_gates(None, task) == DEFAULT_TASK_GATES[task]


def test_backdoor_defaults_are_the_product_target() -> None:
    assert DEFAULT_TASK_GATES["backdoor"] == {"max_asr": 5.0, "max_drop_clean_acc": 2.0}


# --- sections -------------------------------------------------------------------------------


def test_each_task_reads_its_own_section_and_the_others_fall_back(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        CLASSIFICATION_LINES + "backdoor:\n  max_asr: 1.5\n  max_drop_clean_acc: 4\n",
    )
    assert load_gates(path) == {
        "max_test_forget_accuracy": 1.0,
        "max_retain_accuracy_drop": 2.0,
        "mia_auc_band": 0.05,
    }
    backdoor = load_gates(path, "backdoor")
    assert backdoor == {"max_asr": 1.5, "max_drop_clean_acc": 4.0}
    assert all(isinstance(v, float) for v in backdoor.values())
    assert load_gates(path, "face") == DEFAULT_TASK_GATES["face"]
    assert load_gates(path, "segmentation") == DEFAULT_TASK_GATES["segmentation"]


def test_a_section_may_set_only_some_of_the_task_gates(tmp_path: Path) -> None:
    path = _write(tmp_path, CLASSIFICATION_LINES + "face:\n  max_drop_tar_retain: 10\n")
    assert load_gates(path, "face") == {"max_drop_tar_retain": 10.0}


def test_the_shipped_file_loads_for_every_task() -> None:
    assert SHIPPED.exists()
    for task in list_tasks():
        gates = load_gates(SHIPPED, task)
        assert gates, task
        expected = DEFAULT_GATES if task == "classification" else DEFAULT_TASK_GATES[task]
        assert gates == expected, task  # the defaults are documented as the shipped values


# --- invalid files --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["max_drop_accuracy", "min_asr", "asr", "max_acc_forget"])
def test_an_unknown_gate_in_a_section_is_named(tmp_path: Path, key: str) -> None:
    path = _write(tmp_path, CLASSIFICATION_LINES + f"backdoor:\n  max_asr: 5\n  {key}: 1\n")
    message = _error(path, "backdoor")
    assert repr(key) in message
    assert "backdoor" in message
    assert "asr" in message  # lists the task's metrics
    # Every section is validated on every load, whatever task asks.
    assert repr(key) in _error(path, "classification")
    assert repr(key) in _error(path, "face")


@pytest.mark.parametrize("value", ['"five"', "true", "null", "[1, 2]", ".nan"])
def test_a_non_numeric_threshold_in_a_section_is_refused(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, f"segmentation:\n  max_iou_forget: {value}\n")
    message = _error(path, "segmentation")
    assert "max_iou_forget" in message
    assert "number" in message


@pytest.mark.parametrize("value", ["5", "[max_asr]", '"max_asr: 5"'])
def test_a_section_that_is_not_a_mapping_is_refused(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, f"backdoor: {value}\n")
    message = _error(path, "backdoor")
    assert "'backdoor'" in message
    assert "mapping" in message


def test_an_unknown_top_level_key_is_still_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, CLASSIFICATION_LINES + "max_forget_acc: 5\n")
    message = _error(path)
    assert "'max_forget_acc'" in message
    assert "backdoor (section)" in message
    assert "'max_forget_acc'" in _error(path, "backdoor")


def test_a_top_level_task_gate_is_not_a_classification_gate(tmp_path: Path) -> None:
    path = _write(tmp_path, "max_asr: 5\n")
    assert "'max_asr'" in _error(path)


def test_a_classification_section_is_not_a_section(tmp_path: Path) -> None:
    path = _write(tmp_path, "classification:\n  max_test_forget_accuracy: 5\n")
    assert "'classification'" in _error(path)


def test_an_unknown_task_is_refused(tmp_path: Path) -> None:
    assert "'ocr'" in _error(_write(tmp_path, CLASSIFICATION_LINES), "ocr")
    with pytest.raises(GateConfigError, match="'ocr'"):
        load_gates(tmp_path / "missing.yaml", "ocr")


# --- check_task_gates -----------------------------------------------------------------------

GATES = {"max_asr": 5.0, "max_drop_clean_acc": 2.0}


def _check(name: str, verdict: GateVerdict) -> GateCheck:
    return next(c for c in verdict.checks if c.name == name)


def test_max_gate_passes_at_the_threshold_and_fails_above() -> None:
    before = {"clean_acc": 95.0, "asr": 99.0}
    at = check_task_gates(before, {"clean_acc": 95.0, "asr": 5.0}, GATES)
    assert at.passed
    assert at.reasons == []
    assert _check("max_asr", at).value == 5.0

    above = check_task_gates(before, {"clean_acc": 95.0, "asr": 5.01}, GATES)
    assert not above.passed
    assert len(above.reasons) == 1
    assert above.reasons[0].startswith("max_asr: 5.01 fails threshold 5")
    assert above.label == "rejected"


def test_max_drop_gate_compares_before_minus_after() -> None:
    after = {"asr": 0.0}
    at = check_task_gates({"clean_acc": 95.0}, {**after, "clean_acc": 93.0}, GATES)
    assert at.passed
    assert _check("max_drop_clean_acc", at).value == pytest.approx(2.0)

    fell = check_task_gates({"clean_acc": 95.0}, {**after, "clean_acc": 92.5}, GATES)
    assert not fell.passed
    assert _check("max_drop_clean_acc", fell).value == pytest.approx(2.5)
    assert fell.reasons[0].startswith("max_drop_clean_acc: 2.5 fails threshold 2")

    # A rise is a negative drop: it passes (a sign error would read it as a 10-point drop).
    rose = check_task_gates({"clean_acc": 85.0}, {**after, "clean_acc": 95.0}, GATES)
    assert rose.passed
    assert _check("max_drop_clean_acc", rose).value == pytest.approx(-10.0)


def test_max_gate_ignores_the_parents_value() -> None:
    # max_asr bounds the unlearned model's own value, not its change.
    verdict = check_task_gates(
        {"asr": 100.0, "clean_acc": 90.0}, {"asr": 6.0, "clean_acc": 90.0}, GATES
    )
    assert not verdict.passed
    assert [r.split(":")[0] for r in verdict.reasons] == ["max_asr"]


@pytest.mark.parametrize(
    ("before", "after", "failing"),
    [
        ({"clean_acc": 95.0}, {"clean_acc": 95.0}, "max_asr"),  # asr missing
        ({"clean_acc": 95.0}, {"clean_acc": 95.0, "asr": float("nan")}, "max_asr"),
        ({}, {"clean_acc": 95.0, "asr": 0.0}, "max_drop_clean_acc"),  # parent lacks it
        ({"clean_acc": float("nan")}, {"clean_acc": 95.0, "asr": 0.0}, "max_drop_clean_acc"),
        ({"clean_acc": 95.0}, {"asr": 0.0}, "max_drop_clean_acc"),
    ],
)
def test_a_missing_or_nan_metric_fails_as_not_computed(
    before: dict[str, float], after: dict[str, float], failing: str
) -> None:
    verdict = check_task_gates(before, after, GATES)
    assert not verdict.passed
    assert len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith(f"{failing}: not computed")
    assert _check(failing, verdict).value is None


def test_verdict_serialises_every_check() -> None:
    verdict = check_task_gates(
        {"clean_acc": 95.0}, {"clean_acc": 94.0, "asr": 1.0}, DEFAULT_TASK_GATES["backdoor"]
    )
    data = verdict.to_dict()
    assert data["passed"] is True
    assert data["verdict"] == "passed"
    assert sorted(c["name"] for c in data["checks"]) == ["max_asr", "max_drop_clean_acc"]


def test_loaded_gates_drive_the_check(tmp_path: Path) -> None:
    path = _write(tmp_path, "segmentation:\n  max_iou_forget: 10\n  max_drop_miou_retain: 1\n")
    gates = load_gates(path, "segmentation")
    before = {"iou_forget": 80.0, "miou_retain": 70.0}
    assert check_task_gates(before, {"iou_forget": 9.0, "miou_retain": 69.5}, gates).passed
    assert not check_task_gates(before, {"iou_forget": 9.0, "miou_retain": 68.0}, gates).passed


def test_only_task_sections_keep_classification_gated(tmp_path: Path) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text("backdoor:\n  max_asr: 3.0\n")
    assert load_gates(gates) == DEFAULT_GATES
    assert load_gates(gates, "backdoor") == {"max_asr": 3.0}


def test_an_empty_task_section_is_refused(tmp_path: Path) -> None:
    gates = tmp_path / "gates.yaml"
    gates.write_text("face: {}\n")
    with pytest.raises(GateConfigError, match="section 'face' has no gates"):
        load_gates(gates, "face")
