"""Automatic choice of hyper-parameters and of when to stop, from forget data (and optionally
a selection sample of retained images that is never trained on)."""

from __future__ import annotations

from delete.selection.auto import (
    TRIAL_OUTCOMES,
    Candidate,
    SelectionConfig,
    SelectionReport,
    Stopper,
    Trial,
    candidates_for,
    default_candidates,
    fallback_for,
    forget_score,
    has_batchnorm,
    score,
    select_and_train,
    trial_label,
)
from delete.selection.signals import EpochSignals, ProbeSet, measure

__all__ = [
    "Candidate",
    "EpochSignals",
    "ProbeSet",
    "SelectionConfig",
    "SelectionReport",
    "TRIAL_OUTCOMES",
    "Stopper",
    "Trial",
    "candidates_for",
    "default_candidates",
    "fallback_for",
    "forget_score",
    "has_batchnorm",
    "measure",
    "score",
    "select_and_train",
    "trial_label",
]
