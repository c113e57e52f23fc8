"""A request's declared repair set, resolved against its model's task and DVC-pinned data.

The request names files of the dataset folder (``train/<class>/<file>``) or a fraction of the
training split drawn with a seed; this module turns either into training-split indices after
the checks of :func:`delete.repair.check_repair_indices` (inside the training split, no forget
sample, at most the task's share of it), so the flow refuses an ill-formed set in one line
before any work, and records exactly which files were used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.data import DatasetBundle
from delete.errors import InvalidRepairSetError
from delete.repair import (
    NO_CLEAN_DATA,
    WITH_REPAIR_SET,
    RepairResult,
    check_repair_indices,
    draw_repair_indices,
    repair,
)
from delete.training import make_loader
from tasks.applications import TaskRun
from tasks.dataset import train_file_keys
from tasks.requests import RepairSetRequest
from tasks.settings import PipelineSettings

__all__ = [
    "RepairPlan",
    "resolve_repair_plan",
    "run_repair",
    "run_repair_task",
    "threat_model",
]


def threat_model(plan: RepairPlan | None) -> str:
    """``declared-repair-set`` when the request declared one, else ``no-clean-data``."""
    return NO_CLEAN_DATA if plan is None else WITH_REPAIR_SET


@dataclass(frozen=True)
class RepairPlan:
    """Which clean training files the repair step reads, and under which rule.

    Attributes:
        step: The task's :mod:`delete.repair` step.
        indices: Indices into the DVC-pinned training split.
        files: Their files, relative to the dataset folder.
        declared: The request's ``repair_set`` as written.
        n_train: Size of the training split.
        max_fraction: The task's bound on the repair set's share of it.
    """

    step: str
    indices: tuple[int, ...]
    files: tuple[str, ...]
    declared: dict[str, Any]
    n_train: int
    max_fraction: float

    def to_record(self) -> dict[str, Any]:
        """What the run and audit records keep (the files themselves are in ``repair.csv``)."""
        return {
            "threat_model": WITH_REPAIR_SET,
            "step": self.step,
            "declared": self.declared,
            "n_images": len(self.indices),
            "fraction_of_train": len(self.indices) / self.n_train,
            "max_fraction": self.max_fraction,
        }


def resolve_repair_plan(
    settings: PipelineSettings,
    bundle: DatasetBundle,
    run: TaskRun,
    declared: RepairSetRequest,
) -> RepairPlan:
    """The checked indices of a declared repair set.

    Raises:
        InvalidRepairSetError: The task takes no repair set; a file is not in the training
            split; a file is a forget sample (e.g. a known-poisoned image); too many images.
    """
    spec = run.spec
    if spec.repair_step is None or spec.repair_images is None:
        raise InvalidRepairSetError(f"task {run.name} takes no repair set; remove repair_set")
    keys = train_file_keys(settings, bundle)
    excluded = set(run.manifest_indices)
    n_train = len(keys)
    if declared.files is not None:
        where = {key: i for i, key in enumerate(keys)}
        wanted = [f.strip().removeprefix("./").replace("\\", "/") for f in declared.files]
        missing = [f for f in wanted if f not in where]
        if missing:
            shown = ", ".join(repr(f) for f in missing[:3])
            raise InvalidRepairSetError(
                f"repair set file(s) not in the training split of dataset {run.data.name}: "
                f"{shown}{' ...' if len(missing) > 3 else ''}"
            )
        forget = [f for f in wanted if where[f] in excluded]
        if forget:
            raise InvalidRepairSetError(
                f"repair set file {forget[0]!r} is a forget sample (for a backdoor: a known "
                f"poisoned image; {len(forget)} in all); a repair set holds clean images only"
            )
        indices = check_repair_indices(
            [where[f] for f in wanted], n_train, excluded, spec.max_repair_fraction
        )
    else:
        assert declared.fraction is not None  # RepairSetRequest holds one of the two
        indices = draw_repair_indices(
            n_train, excluded, declared.fraction, declared.seed, spec.max_repair_fraction
        )
    return RepairPlan(
        step=spec.repair_step,
        indices=tuple(indices),
        files=tuple(keys[i] for i in indices),
        declared=declared.model_dump(mode="json", exclude_none=True),
        n_train=n_train,
        max_fraction=spec.max_repair_fraction,
    )


def run_repair(
    unlearned: nn.Module,
    original: nn.Module,
    plan: RepairPlan,
    run: TaskRun,
    batch_size: int,
    device: str | torch.device = "cpu",
) -> RepairResult:
    """The task's repair step on the plan's clean images; the forget set keeps the forgetting
    in place (:func:`delete.repair.repair`). Seeded: the same plan repairs the same way."""
    if run.spec.repair_images is None:  # resolve_repair_plan refused such a task already
        raise InvalidRepairSetError(f"task {run.name} takes no repair set")
    images = run.spec.repair_images(run.data, list(plan.indices))
    return repair(
        unlearned,
        original,
        make_loader(images, batch_size, shuffle=True, seed=0),
        make_loader(run.forget_set, batch_size, shuffle=True, seed=0),
        run.forget_classes,
        plan.step,
        device,
    )


#: Compute, never retried (as the unlearning itself).
run_repair_task = task(name="repair", cache_policy=NO_CACHE)(run_repair)
