"""Promotion gates: one grammar for every task, ``gates.yaml`` sections, and legacy files."""

from __future__ import annotations

from pathlib import Path

import pytest

from delete.applications import list_tasks
from tasks.evaluation import (
    GateCheck,
    GateConfigError,
    GateVerdict,
    check_gates,
    default_gates,
    load_gates,
)

SHIPPED = Path(__file__).resolve().parents[2] / "gates.yaml"

#: The shipped defaults, written out here (not read from the code under test).
SHIPPED_VALUES = {
    "classification": {
        "max_acc_forget": 5.0,
        "max_drop_acc_retain": 3.0,
        "max_drop_class_acc": 5.0,
        "max_mia_gap": 0.1,
    },
    "face": {"max_acc_forget": 5.0, "max_drop_acc_retain": 3.0, "max_tar_forget": 10.0},
    "backdoor": {"max_asr": 5.0, "max_drop_clean_acc": 2.0},
    "segmentation": {"max_iou_forget": 5.0, "max_drop_miou_retain": 5.0},
}

LEGACY_FILE = """\
max_test_forget_accuracy: 1.0
max_retain_accuracy_drop: 2.0
max_class_accuracy_drop: 4.0
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


def _check(name: str, verdict: GateVerdict) -> GateCheck:
    return next(c for c in verdict.checks if c.name == name)


# --- defaults and the shipped file ----------------------------------------------------------


@pytest.mark.parametrize("task", sorted(SHIPPED_VALUES))
def test_absent_file_gives_the_task_defaults(tmp_path: Path, task: str) -> None:
    gates = load_gates(tmp_path / "missing.yaml", task)
    assert gates == SHIPPED_VALUES[task]
    gates["max_x"] = 1.0  # a copy: the caller may not corrupt the defaults
    assert load_gates(None, task) == SHIPPED_VALUES[task]


def test_the_shipped_file_holds_the_documented_defaults_for_every_task() -> None:
    assert sorted(list_tasks()) == sorted(SHIPPED_VALUES)
    for task in list_tasks():
        assert load_gates(SHIPPED, task) == SHIPPED_VALUES[task], task
        assert default_gates(task) == SHIPPED_VALUES[task], task


# --- sections and the legacy layout -----------------------------------------------------------


def test_each_task_reads_its_own_section_and_the_others_fall_back(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "classification:\n  max_acc_forget: 1\n"
        "backdoor:\n  max_asr: 1.5\n  max_drop_clean_acc: 4\n",
    )
    assert load_gates(path, "classification") == {"max_acc_forget": 1.0}
    backdoor = load_gates(path, "backdoor")
    assert backdoor == {"max_asr": 1.5, "max_drop_clean_acc": 4.0}
    assert all(isinstance(v, float) for v in backdoor.values())
    assert load_gates(path, "face") == SHIPPED_VALUES["face"]


def test_a_legacy_file_reads_as_the_classification_section_in_the_new_names(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, LEGACY_FILE + "face:\n  max_drop_tar_retain: 10\n")
    assert load_gates(path, "classification") == {
        "max_acc_forget": 1.0,
        "max_drop_acc_retain": 2.0,
        "max_drop_class_acc": 4.0,
        "max_mia_gap": 0.05,
    }
    assert load_gates(path, "face") == {"max_drop_tar_retain": 10.0}


def test_legacy_names_are_read_inside_a_section_too(tmp_path: Path) -> None:
    path = _write(tmp_path, "classification:\n  max_class_accuracy_drop: 7\n")
    assert load_gates(path, "classification") == {"max_drop_class_acc": 7.0}


def test_top_level_gates_beside_a_classification_section_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "max_acc_forget: 5\nclassification:\n  max_acc_forget: 1\n")
    assert "move them into it" in _error(path, "face")


def test_only_other_sections_keep_classification_gated(tmp_path: Path) -> None:
    path = _write(tmp_path, "backdoor:\n  max_asr: 3.0\n")
    assert load_gates(path, "classification") == SHIPPED_VALUES["classification"]
    assert load_gates(path, "backdoor") == {"max_asr": 3.0}


# --- invalid files --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["max_drop_accuracy", "min_asr", "asr", "max_acc_forget"])
def test_an_unknown_gate_in_a_section_is_named(tmp_path: Path, key: str) -> None:
    path = _write(tmp_path, f"backdoor:\n  max_asr: 5\n  {key}: 1\n")
    message = _error(path, "backdoor")
    assert repr(key) in message and "backdoor" in message
    assert "asr" in message  # lists the task's metrics
    # Every section is validated on every load, whatever task asks.
    assert repr(key) in _error(path, "classification")
    assert repr(key) in _error(path, "face")


def test_an_unknown_top_level_key_is_refused_as_a_classification_gate(tmp_path: Path) -> None:
    path = _write(tmp_path, LEGACY_FILE + "max_forget_acc: 5\n")
    message = _error(path)
    assert "'max_forget_acc'" in message and "classification" in message
    assert "'max_forget_acc'" in _error(path, "backdoor")


def test_a_task_gate_at_top_level_is_not_a_classification_gate(tmp_path: Path) -> None:
    assert "'max_asr'" in _error(_write(tmp_path, "max_asr: 5\n"))


@pytest.mark.parametrize("value", ['"five"', "true", "null", "[1, 2]", ".nan"])
def test_a_non_numeric_threshold_is_refused(tmp_path: Path, value: str) -> None:
    message = _error(
        _write(tmp_path, f"segmentation:\n  max_iou_forget: {value}\n"), "segmentation"
    )
    assert "max_iou_forget" in message and "number" in message


@pytest.mark.parametrize("value", ["5", "[max_asr]", '"max_asr: 5"'])
def test_a_section_that_is_not_a_mapping_is_refused(tmp_path: Path, value: str) -> None:
    message = _error(_write(tmp_path, f"backdoor: {value}\n"), "backdoor")
    assert "'backdoor'" in message and "mapping" in message


def test_an_empty_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GateConfigError, match="section 'face' has no gates"):
        load_gates(_write(tmp_path, "face: {}\n"), "face")


def test_an_unknown_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="'ocr'"):
        load_gates(tmp_path / "missing.yaml", "ocr")


# --- check_gates: scalar metrics -------------------------------------------------------------

BACKDOOR = {"max_asr": 5.0, "max_drop_clean_acc": 2.0}


def test_max_gate_passes_at_the_threshold_and_fails_above() -> None:
    before = {"clean_acc": 95.0, "asr": 99.0}
    at = check_gates("backdoor", before, {"clean_acc": 95.0, "asr": 5.0}, BACKDOOR)
    assert at.passed and at.reasons == []
    assert _check("max_asr", at).value == 5.0
    above = check_gates("backdoor", before, {"clean_acc": 95.0, "asr": 5.01}, BACKDOOR)
    assert not above.passed and above.label == "rejected"
    assert above.reasons == [above.reasons[0]]
    assert above.reasons[0].startswith("max_asr: 5.01 fails threshold 5")


def test_max_drop_gate_compares_before_minus_after() -> None:
    after = {"asr": 0.0}
    at = check_gates("backdoor", {"clean_acc": 95.0}, {**after, "clean_acc": 93.0}, BACKDOOR)
    assert at.passed and _check("max_drop_clean_acc", at).value == pytest.approx(2.0)
    fell = check_gates("backdoor", {"clean_acc": 95.0}, {**after, "clean_acc": 92.5}, BACKDOOR)
    assert not fell.passed
    assert fell.reasons[0].startswith("max_drop_clean_acc: 2.5 fails threshold 2")
    # A rise is a negative drop: it passes (a sign error would read it as a 10-point drop).
    rose = check_gates("backdoor", {"clean_acc": 85.0}, {**after, "clean_acc": 95.0}, BACKDOOR)
    assert rose.passed and _check("max_drop_clean_acc", rose).value == pytest.approx(-10.0)


@pytest.mark.parametrize(
    ("before", "after", "failing"),
    [
        ({"clean_acc": 95.0}, {"clean_acc": 95.0}, "max_asr"),  # asr missing
        ({"clean_acc": 95.0}, {"clean_acc": 95.0, "asr": float("nan")}, "max_asr"),
        ({}, {"clean_acc": 95.0, "asr": 0.0}, "max_drop_clean_acc"),  # parent lacks it
        ({"clean_acc": 95.0}, {"asr": 0.0}, "max_drop_clean_acc"),
    ],
)
def test_a_missing_or_nan_metric_fails_as_not_computed(
    before: dict[str, float], after: dict[str, float], failing: str
) -> None:
    verdict = check_gates("backdoor", before, after, BACKDOOR)
    assert not verdict.passed and len(verdict.reasons) == 1
    assert verdict.reasons[0].startswith(f"{failing}: not computed")
    assert _check(failing, verdict).value is None


def test_the_mia_gap_gate_reads_the_distance_from_chance() -> None:
    gates = {"max_mia_gap": 0.1}
    assert check_gates("classification", {}, {"mia_gap": 0.08}, gates).passed
    assert not check_gates("classification", {}, {"mia_gap": 0.12}, gates).passed


# --- check_gates: the per-class family -------------------------------------------------------

BEFORE = {"class_acc/cat": 97.0, "class_acc/dog": 96.0, "class_acc/eel": 99.0}


def test_the_worst_retained_class_decides_not_the_average() -> None:
    # Average retained drop 4 points (passes a 5-point average gate); the dog lost 8.
    after = {"class_acc/cat": 97.0, "class_acc/dog": 88.0, "class_acc/eel": 0.0}
    verdict = check_gates("classification", BEFORE, after, {"max_drop_class_acc": 5.0}, ["eel"])
    assert not verdict.passed
    assert _check("max_drop_class_acc", verdict).value == pytest.approx(8.0)
    assert "worst retained class" in verdict.reasons[0]


def test_the_forgotten_class_is_not_counted_as_a_retained_drop() -> None:
    after = {"class_acc/cat": 96.0, "class_acc/dog": 95.0, "class_acc/eel": 0.0}
    verdict = check_gates("classification", BEFORE, after, {"max_drop_class_acc": 5.0}, ["eel"])
    assert verdict.passed and _check("max_drop_class_acc", verdict).value == pytest.approx(1.0)


def test_max_class_gate_reads_the_best_recognised_forgotten_class() -> None:
    after = {"class_acc/cat": 40.0, "class_acc/dog": 3.0, "class_acc/eel": 9.0}
    gates = {"max_class_acc": 5.0}
    verdict = check_gates("classification", BEFORE, after, gates, ["dog", "eel"])
    assert not verdict.passed and _check("max_class_acc", verdict).value == pytest.approx(9.0)


def test_face_identities_and_segmentation_iou_use_their_own_family() -> None:
    face = check_gates(
        "face",
        {"class_acc/id-1": 90.0, "class_acc/id-2": 90.0},
        {"class_acc/id-1": 70.0, "class_acc/id-2": 0.0},
        {"max_drop_class_acc": 10.0},
        ["id-2"],
    )
    assert not face.passed and _check("max_drop_class_acc", face).value == pytest.approx(20.0)
    seg = check_gates(
        "segmentation",
        {"class_iou/bg": 90.0, "class_iou/3": 60.0},
        {"class_iou/bg": 89.0, "class_iou/3": 0.0},
        {"max_drop_class_iou": 2.0},
        ["3"],
    )
    assert seg.passed and _check("max_drop_class_iou", seg).value == pytest.approx(1.0)


def test_face_tar_gate_rejects_an_identity_that_still_verifies() -> None:
    gates = SHIPPED_VALUES["face"]
    before = {"acc_forget": 98.0, "acc_retain": 95.0, "tar_forget": 98.0}
    # Identity accuracy says forgotten; verification still accepts two probes in three.
    still = {"acc_forget": 0.0, "acc_retain": 94.0, "tar_forget": 66.0}
    verdict = check_gates("face", before, still, gates, ["id-3"])
    assert [r.split(":")[0] for r in verdict.reasons] == ["max_tar_forget"]
    gone = {**still, "tar_forget": 2.0}
    assert check_gates("face", before, gone, gates, ["id-3"]).passed


def test_verdict_serialises_every_check() -> None:
    data = check_gates(
        "backdoor", {"clean_acc": 95.0}, {"clean_acc": 94.0, "asr": 1.0}, BACKDOOR
    ).to_dict()
    assert data["passed"] is True and data["verdict"] == "passed"
    assert sorted(c["name"] for c in data["checks"]) == ["max_asr", "max_drop_clean_acc"]
