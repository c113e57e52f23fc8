"""Repair after unlearning: behaviour restored from a small, declared set of images.

DELETE needs no retained data, and the product keeps that as its default threat model. Some
deletions take more than they should: removing a backdoor from its known triggered images also
takes the target class's clean accuracy. When the requester declares a repair set (at most 1%
of the training set for a backdoor), a registered repair step restores the original's behaviour
on it after unlearning, without undoing the forgetting.

Example:
    >>> from delete.repair import list_repairs
    >>> list_repairs()
    ['distill']
"""

from __future__ import annotations

from delete.repair import distill as _distill  # noqa: F401 - registers the "distill" step
from delete.repair._registry import create_repair, list_repairs, register_repair
from delete.repair.api import RepairResult, repair
from delete.repair.batchnorm import recalibrate_batchnorm
from delete.repair.distill import DistillRepair, DistillRepairConfig
from delete.repair.plan import (
    NO_CLEAN_DATA,
    THREAT_MODELS,
    WITH_REPAIR_SET,
    check_repair_fraction,
    check_repair_indices,
    draw_repair_indices,
    max_repair_images,
)

__all__ = [
    "NO_CLEAN_DATA",
    "THREAT_MODELS",
    "WITH_REPAIR_SET",
    "check_repair_fraction",
    "DistillRepair",
    "DistillRepairConfig",
    "RepairResult",
    "check_repair_indices",
    "create_repair",
    "draw_repair_indices",
    "list_repairs",
    "max_repair_images",
    "recalibrate_batchnorm",
    "register_repair",
    "repair",
]
