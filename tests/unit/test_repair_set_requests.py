"""``repair_set:`` in a request: its shape, its hash, and what ``unlearn submit`` refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from delete.errors import InvalidRepairSetError
from delete.repair import check_repair_indices, draw_repair_indices, max_repair_images
from tasks.requests import DeletionRequest, RepairSetRequest, RequestError
from tasks.submission import _check_repair_set

BASE: dict[str, Any] = {
    "request_id": "r1",
    "model": "m@champion",
    "forget_classes": [0],
    "requested_by": "dpo",
    "reason": "backdoor",
    "received_at": "2025-01-31T09:00:00Z",
    "task": "backdoor",
}


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({}, "either files"),
        ({"files": ["train/a/1.png"], "fraction": 0.01}, "either files"),
        ({"files": []}, "non-empty list"),
        ({"files": ["/etc/passwd"]}, "relative to the dataset folder"),
        ({"files": ["train/../../secret.png"]}, "relative to the dataset folder"),
        ({"fraction": 0.0}, "not in (0, 1]"),
        ({"fraction": True}, "must be a number"),
        ({"fraction": 0.01, "size": 3}, "Extra inputs"),
    ],
)
def test_ill_formed_repair_sets_are_refused_when_parsed(declared: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RepairSetRequest(**declared)


def test_a_request_without_a_repair_set_hashes_as_before_the_field_existed() -> None:
    plain = DeletionRequest(**BASE)
    assert "repair_set" not in plain.to_json_dict()
    with_set = DeletionRequest(**BASE, repair_set={"fraction": 0.01, "seed": 1})
    assert with_set.to_json_dict()["repair_set"] == {"files": None, "fraction": 0.01, "seed": 1}
    assert with_set.content_hash() != plain.content_hash()
    other_seed = DeletionRequest(**BASE, repair_set={"fraction": 0.01, "seed": 2})
    assert other_seed.content_hash() != with_set.content_hash()


def test_submit_refuses_what_the_task_tells_without_data() -> None:
    ok = DeletionRequest(**BASE, repair_set={"fraction": 0.01})
    _check_repair_set("backdoor", ok)  # within the backdoor task's 1%
    too_big = DeletionRequest(**BASE, repair_set={"fraction": 0.05})
    with pytest.raises(RequestError, match=r"fraction 0.05 is not in \(0, 0.01\]"):
        _check_repair_set("backdoor", too_big)
    classification = DeletionRequest(
        **{**BASE, "task": "classification"}, repair_set={"fraction": 0.01}
    )
    with pytest.raises(RequestError, match="task classification takes no repair set"):
        _check_repair_set("classification", classification)


def test_index_checks_name_the_problem() -> None:
    assert max_repair_images(4000, 0.01) == 40
    assert check_repair_indices([3, 1, 3], 100, excluded={9}, max_fraction=0.05) == [1, 3]
    with pytest.raises(InvalidRepairSetError, match="outside the 100-image training split"):
        check_repair_indices([100], 100, excluded=set(), max_fraction=0.05)
    with pytest.raises(InvalidRepairSetError, match=r"1 forget sample\(s\) \(training index 9\)"):
        check_repair_indices([9], 100, excluded={9}, max_fraction=0.05)
    with pytest.raises(InvalidRepairSetError, match="has 6 images, more than 5.00%"):
        check_repair_indices(range(6), 100, excluded=set(), max_fraction=0.05)
    with pytest.raises(InvalidRepairSetError, match="is empty"):
        check_repair_indices([], 100, excluded=set(), max_fraction=0.05)


def test_a_drawn_repair_set_avoids_forget_samples_and_is_seeded() -> None:
    excluded = set(range(0, 1000, 2))  # every even index is a forget sample
    picked = draw_repair_indices(1000, excluded, 0.01, seed=3, max_fraction=0.01)
    assert len(picked) == 10 and all(i % 2 == 1 for i in picked)
    assert picked == draw_repair_indices(1000, excluded, 0.01, seed=3, max_fraction=0.01)
    assert picked != draw_repair_indices(1000, excluded, 0.01, seed=4, max_fraction=0.01)
    with pytest.raises(InvalidRepairSetError, match=r"fraction 0.02 is not in \(0, 0.01\]"):
        draw_repair_indices(1000, excluded, 0.02, seed=3, max_fraction=0.01)
