"""The benchmark's per-task settings, quick and full: data sizes, epochs, hyper-parameters.

Kept apart from the runner so the numbers the README quotes live in one reviewed place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from delete.training import TrainConfig

__all__ = ["BenchCase", "NOT_APPLICABLE", "SKIPPED_EVERYWHERE", "bench_cases"]


@dataclass(frozen=True)
class BenchCase:
    """One task's benchmark scenario.

    Attributes:
        task: A name from :data:`delete.applications.TASKS`.
        title: Section title of the Markdown report.
        forget_label: How the forgotten class is described in the report.
        data_options: Keyword arguments of the task's ``load_data``.
        forget_classes: Classes to forget (``None``: the task's default, e.g. the backdoor target).
        train: Recipe of the original and of the retrained model.
        delete_hparams: DELETE's hyper-parameters for the headline row (``None``: the task's
            recommended :attr:`~delete.applications.TaskSpec.delete_hparams`).
        delete_variants: Extra DELETE rows ``(label, hparams)``, e.g. an epochs sweep.
        baseline_hparams: Per-baseline hyper-parameter overrides.
        baseline_epochs_cap: Upper bound on every baseline's epochs (``None``: their defaults).
        forget_cap: Use at most this many forget-set samples (``None``: all).
        retain_cap: Give retain-based baselines at most this many retained samples.
        batch_size: Batch size of the forget and retain loaders (``None``: the task's
            :attr:`~delete.applications.TaskSpec.unlearn_batch_size`, as the pipeline uses).
        model_kwargs: Overrides of the task's default architecture arguments.
        notes: What a reader of the table must know (printed under it).
    """

    task: str
    title: str
    forget_label: str
    data_options: Mapping[str, Any] = field(default_factory=dict)
    forget_classes: tuple[int, ...] | None = None
    train: TrainConfig = TrainConfig()
    delete_hparams: Mapping[str, Any] | None = None
    delete_variants: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    baseline_hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    baseline_epochs_cap: int | None = None
    forget_cap: int | None = None
    retain_cap: int | None = None
    batch_size: int | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


#: Registered methods no task benchmark runs, and why.
SKIPPED_EVERYWHERE: dict[str, str] = {
    "delete": "reported as the DELETE row",
    "retrain": "a full training; the Retrain row is that reference, trained with the task's "
    "own recipe and loss",
}

#: Per task, registered methods that do not apply, and why.
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "segmentation": {
        "random_label": "draws one random class per sample; segmentation targets are "
        "per-pixel masks",
        "salun": "built on random_label's per-sample relabelling",
    },
}


def bench_cases(quick: bool) -> list[BenchCase]:
    """The three application scenarios; ``quick`` shrinks data, epochs and baselines.

    Example:
        >>> [case.task for case in bench_cases(quick=True)]
        ['face', 'backdoor', 'segmentation']
    """
    return [
        BenchCase(
            task="face",
            title="Face identities (real MNIST-5k digits as 10 stand-in identities)",
            forget_label="identity id-3",
            forget_classes=(3,),
            train=TrainConfig(epochs=4 if quick else 10, lr=0.05),
            delete_variants=(("DELETE lr=1e-3, 10 ep, BN trained", {"lr": 1e-3, "epochs": 10}),),
            baseline_epochs_cap=2 if quick else None,
            retain_cap=1000 if quick else None,
            notes=(
                "TAR at FAR=1e-2, one threshold over all impostor pairs. An embedding network "
                "verifies identities it never saw: the retrained model still verifies the "
                "forgotten identity, so tar_forget near 0 goes beyond exact unlearning.",
            ),
        ),
        BenchCase(
            task="backdoor",
            title="Backdoor removal (BadNets 3x3 trigger, real MNIST-5k, SmallCNN)",
            forget_label="target label 0 on the 40 known triggered images (1% of train)",
            data_options={"target": 0, "poison_rate": 0.05, "known_fraction": 0.01},
            train=TrainConfig(epochs=6 if quick else 12, lr=0.05),
            delete_variants=tuple(
                (f"DELETE lr=1e-3, {epochs} ep", {"lr": 1e-3, "epochs": epochs})
                for epochs in (5, 10, 40)
            )
            + (("DELETE lr=1e-2, 20 ep", {"lr": 1e-2, "epochs": 20}),),
            baseline_epochs_cap=2 if quick else None,
            retain_cap=1000 if quick else None,
            notes=(
                "Target: ASR < 5% with clean accuracy down by at most 2 points, from <= 1% of "
                "the training set known as poisoned. DELETE alone misses it: with triggered "
                "images only and no retained data, nothing anchors the target class on clean "
                "images, and target_clean_acc falls with the ASR (the DELETE rows trace the "
                "trade-off).",
                "Retain-based baselines get the training set minus the known samples, which "
                "still holds the unknown poisoned ones. Retrain is trained on clean data.",
            ),
        ),
        BenchCase(
            task="segmentation",
            title="Semantic segmentation (scenes of real MNIST-5k digits, TinyFCN)",
            forget_label='class "3" (index 4)',
            data_options={"num_train": 2000 if quick else 4000, "num_test": 300 if quick else 500},
            forget_classes=(4,),
            train=TrainConfig(epochs=4 if quick else 8, lr=0.1, batch_size=32),
            baseline_epochs_cap=1 if quick else 3,
            forget_cap=300 if quick else None,
            retain_cap=300 if quick else 1000,
            notes=(
                "The forget set is the training scenes containing a 3. Baselines whose "
                "forget-side objective is per image (gradient_ascent, bad_teacher, scrub's "
                "max-step, boundary_shrink's relabelling) act on every pixel of those scenes, "
                "background and other digits included.",
            ),
        ),
    ]
