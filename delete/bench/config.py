"""Benchmark configuration (full and quick presets) and its result record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["BenchConfig", "BenchResult", "DEFAULT_SCENARIOS", "QUICK_SCENARIOS"]

#: Three single classes and one 2-class case (digits 1 and 7 look alike: the hard pair).
DEFAULT_SCENARIOS: tuple[tuple[int, ...], ...] = ((3,), (5,), (8,), (1, 7))
#: Quick mode: one single class (every method keeps its own epochs, so one scenario fits).
QUICK_SCENARIOS: tuple[tuple[int, ...], ...] = ((3,),)


@dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs.

    Attributes:
        dataset: A bundled dataset name (``mnist5k``, ``digits``) or any registered one
            (then ``data_root`` is needed).
        seeds: One original model is trained per seed; every method run uses the same seed.
        scenarios: Forget-class sets, each evaluated for every seed.
        methods: Method names to run (``None``: every registered method). ``retrain`` is
            always run, as the reference of the time ratio and of ``js_to_reference``.
        train_epochs: Epochs of the original model and of Retrain (same recipe).
        train_lr: Peak learning rate of that recipe (SGD, cosine).
        batch_size: Batch size of every loader.
        epoch_scale: Multiplies every unlearning method's epochs (rounded up, at least 1);
            quick mode uses it to cut every method by the same factor.
        method_hparams: Per-method overrides, applied after the method's defaults and its
            module's ``RECOMMENDED_HPARAMS[dataset]``.
        augment_unlearning: Give unlearning methods augmented training loaders. Off by
            default: every method sees the same plain images (and DELETE may cache its
            teacher). Retrain always uses the original model's recipe, augmentation included.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        mia: Compute the membership-inference attacks.
        mia_max_shadow: Cap on the SVC attack's shadow samples per side.
        threads: ``torch.set_num_threads`` for the run (``None``: leave as is).
        out_dir: Where the CSV/Markdown/PNG and model files go (``None``: nothing written).
        save_models: Save the original and retrained weights (safetensors) under ``out_dir``.
        data_root: Folder of an on-disk dataset.
        progress: Show tqdm progress bars.
        quick: Informational: the config came from :meth:`quick_preset`.
    """

    dataset: str = "mnist5k"
    seeds: tuple[int, ...] = (0, 1, 2)
    scenarios: tuple[tuple[int, ...], ...] = DEFAULT_SCENARIOS
    methods: tuple[str, ...] | None = None
    train_epochs: int = 15
    train_lr: float = 0.05
    batch_size: int = 64
    epoch_scale: float = 1.0
    method_hparams: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    augment_unlearning: bool = False
    device: str = "auto"
    mia: bool = True
    mia_max_shadow: int | None = 1000
    threads: int | None = None
    out_dir: Path | None = None
    save_models: bool = True
    data_root: str | None = None
    progress: bool = True
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed")
        if not self.scenarios or any(len(s) == 0 for s in self.scenarios):
            raise ValueError("scenarios must be non-empty tuples of forget classes")
        if self.train_epochs < 1 or self.batch_size < 1 or self.epoch_scale <= 0:
            raise ValueError("train_epochs, batch_size and epoch_scale must be positive")

    @classmethod
    def quick_preset(cls, **overrides: Any) -> BenchConfig:
        """The ``--quick`` configuration: seed 0 and forget class 3 only.

        Every method keeps its own (recommended) epochs and the original model and Retrain
        their full recipe, so the quick table is one cell (seed 0, class 3) of the full
        benchmark; only the SVC attack is cut to at most 500 shadow samples a side. About
        6 minutes on 2 shared CPU cores for all ten methods on MNIST-5k.

        Example:
            >>> cfg = BenchConfig.quick_preset(dataset="digits")
            >>> cfg.seeds, cfg.scenarios, cfg.train_epochs, cfg.epoch_scale
            ((0,), ((3,),), 15, 1.0)
        """
        base = cls(
            seeds=(0,),
            scenarios=QUICK_SCENARIOS,
            mia_max_shadow=500,
            quick=True,
        )
        return replace(base, **overrides)

    def describe(self) -> str:
        """One line saying what this configuration runs."""
        scen = ", ".join("+".join(map(str, s)) for s in self.scenarios)
        mode = "quick" if self.quick else "full"
        return (
            f"{mode} benchmark on {self.dataset}: {len(self.seeds)} seed(s) {list(self.seeds)}, "
            f"forget scenarios [{scen}], original/Retrain {self.train_epochs} epochs, "
            f"unlearning epochs x{self.epoch_scale:g}, "
            f"methods {'all registered' if self.methods is None else ', '.join(self.methods)}"
        )


@dataclass
class BenchResult:
    """Everything one benchmark produced.

    Attributes:
        config: The configuration that ran.
        rows: One dict per (seed, scenario, method) run, the rows of ``results.csv``;
            ``method == "original"`` rows evaluate the model before unlearning.
        summary: One dict per method with ``<metric>_mean`` / ``<metric>_std``, the rows of
            ``summary.csv``.
        markdown: The ``summary.md`` table.
        files: Written files by role (``results``, ``summary_csv``, ``summary_md``, ``plot``).
        seconds: Wall-clock duration of the whole benchmark.
    """

    config: BenchConfig
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    markdown: str
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
