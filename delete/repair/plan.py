"""Which training images a declared repair set may hold: checked, or drawn with a seed."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

from delete.errors import InvalidRepairSetError

__all__ = [
    "NO_CLEAN_DATA",
    "THREAT_MODELS",
    "WITH_REPAIR_SET",
    "check_repair_fraction",
    "check_repair_indices",
    "draw_repair_indices",
    "max_repair_images",
]

#: The two threat models of a deletion: DELETE alone on the forget samples (the paper's: no
#: clean data at all), or DELETE then a repair step on a declared set of clean images.
NO_CLEAN_DATA = "no-clean-data"
WITH_REPAIR_SET = "declared-repair-set"
THREAT_MODELS = (NO_CLEAN_DATA, WITH_REPAIR_SET)


def max_repair_images(n_train: int, max_fraction: float) -> int:
    """The most images a repair set may hold: ``max_fraction`` of the training split, rounded
    down (at least one).

    Example:
        >>> max_repair_images(4000, 0.01), max_repair_images(50, 0.01)
        (40, 1)
    """
    return max(1, int(n_train * max_fraction + 1e-9))


def check_repair_indices(
    indices: Sequence[int], n_train: int, excluded: Collection[int], max_fraction: float
) -> list[int]:
    """``indices`` sorted, once each, after the checks a repair set must pass.

    Raises:
        InvalidRepairSetError: Empty; an index outside the training split; an index that is a
            forget sample (e.g. a known-poisoned image); more than ``max_fraction`` of it.

    Example:
        >>> check_repair_indices([5, 2], 1000, excluded={7}, max_fraction=0.01)
        [2, 5]
        >>> try:
        ...     check_repair_indices([7], 1000, excluded={7}, max_fraction=0.01)
        ... except InvalidRepairSetError as exc:
        ...     print(exc)
        repair set holds 1 forget sample(s) (training index 7); a repair set holds clean images only
    """
    chosen = sorted({int(i) for i in indices})
    if not chosen:
        raise InvalidRepairSetError("repair set is empty")
    outside = [i for i in chosen if not 0 <= i < n_train]
    if outside:
        raise InvalidRepairSetError(
            f"repair set index {outside[0]} is outside the {n_train}-image training split"
        )
    forget = [i for i in chosen if i in excluded]
    if forget:
        shown = ", ".join(str(i) for i in forget[:3])
        raise InvalidRepairSetError(
            f"repair set holds {len(forget)} forget sample(s) (training index {shown}); "
            "a repair set holds clean images only"
        )
    limit = max_repair_images(n_train, max_fraction)
    if len(chosen) > limit:
        raise InvalidRepairSetError(
            f"repair set has {len(chosen)} images, more than {max_fraction:.2%} of the "
            f"{n_train}-image training split (at most {limit})"
        )
    return chosen


def check_repair_fraction(fraction: float, max_fraction: float) -> None:
    """Refuse a repair-set fraction outside ``(0, max_fraction]`` in one line.

    Example:
        >>> check_repair_fraction(0.01, 0.01)
        >>> try:
        ...     check_repair_fraction(0.05, 0.01)
        ... except InvalidRepairSetError as exc:
        ...     print(exc)
        repair set fraction 0.05 is not in (0, 0.01] of the training set
    """
    if not 0.0 < fraction <= max_fraction:
        raise InvalidRepairSetError(
            f"repair set fraction {fraction:g} is not in (0, {max_fraction:g}] of the training set"
        )


def draw_repair_indices(
    n_train: int, excluded: Collection[int], fraction: float, seed: int, max_fraction: float
) -> list[int]:
    """``fraction`` of the training split, drawn with ``seed`` among the samples not excluded.

    Raises:
        InvalidRepairSetError: ``fraction`` is not in ``(0, max_fraction]``.

    Example:
        >>> picked = draw_repair_indices(1000, excluded={0, 1}, fraction=0.01, seed=0,
        ...                              max_fraction=0.01)
        >>> len(picked), picked == draw_repair_indices(1000, {0, 1}, 0.01, 0, 0.01)
        (10, True)
    """
    check_repair_fraction(fraction, max_fraction)
    keep = torch.ones(n_train, dtype=torch.bool)
    keep[[i for i in excluded if 0 <= i < n_train]] = False
    candidates = torch.nonzero(keep).flatten()
    count = min(len(candidates), max(1, int(n_train * fraction + 1e-9)))
    generator = torch.Generator().manual_seed(seed)
    picked = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    return check_repair_indices(picked.tolist(), n_train, excluded, max_fraction)
