"""Automatic selection: which candidate (BatchNorm policy x learning rate) and when to stop.

A model the project never saw cannot be tuned against a Retrain the user does not have, so
:func:`select_and_train` probes candidates for ``probe_epochs`` each, from the gentlest
step up, keeps the first that is forgetting (and that a selection sample, when there is one,
does not veto), and trains it until a stopping rule fires. Everything is decided from
:class:`~delete.selection.signals.EpochSignals`, measured after every epoch in eval mode:

* **forget data only** (the library default): DELETE's forgetting term and retention term on
  the forget images. It stops when forgetting is done *and* the retention term has stopped
  improving, never at the first epoch with nothing left to forget (retained accuracy keeps
  recovering long after that); the epoch with the lowest DELETE loss is kept;
* **with a selection sample** (retained images used only to choose, never to train): the
  sample also vetoes a candidate that collapses retained accuracy, it must stop improving
  too before the run stops, and its accuracy picks the epoch to keep.

The training itself is the one engine's (:class:`~delete.engine.EngineRun`), one epoch at a
time; the state of the kept epoch is restored at the end.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from delete.engine import CHECKPOINT_FILE, EngineResult, EngineRun, load_checkpoint
from delete.errors import CheckpointError, InvalidHparamError, NonFiniteLossError, one_line
from delete.methods.base import UnlearnContext, UnlearningMethod
from delete.selection.signals import EpochSignals, ProbeSet, measure

__all__ = [
    "Candidate",
    "SelectionConfig",
    "Trial",
    "SelectionReport",
    "candidates_for",
    "default_candidates",
    "select_and_train",
    "has_batchnorm",
    "forget_score",
    "score",
    "Stopper",
]

log = logging.getLogger(__name__)

FORGET_ONLY = "forget-only"
SELECTION_SAMPLE = "selection-sample"


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer (whose statistics a policy must decide).

    Example:
        >>> has_batchnorm(nn.Sequential(nn.Linear(2, 2))), has_batchnorm(nn.BatchNorm1d(2))
        (False, True)
    """
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@dataclass(frozen=True)
class Candidate:
    """One setting the selection may choose.

    Attributes:
        lr: Learning rate (SGD with momentum; each step's gradient norm is clipped, so the
            step length is bounded by ``lr`` whatever the model's scale).
        freeze_bn: BatchNorm statistics frozen (eval mode) or re-estimated (train mode).
    """

    lr: float
    freeze_bn: bool = True

    @property
    def label(self) -> str:
        """``lr=0.003 bn=frozen``: how reports name the candidate.

        Example:
            >>> Candidate(0.003, False).label
            'lr=0.003 bn=train'
        """
        return f"lr={self.lr:g} bn={'frozen' if self.freeze_bn else 'train'}"

    def to_dict(self) -> dict[str, Any]:
        return {"lr": self.lr, "freeze_bn": self.freeze_bn}


#: Learning rates tried by default (with gradient-norm clipping at 1).
DEFAULT_LRS: tuple[float, ...] = (1e-3, 3e-3, 1e-2)


def default_candidates(model: nn.Module) -> tuple[Candidate, ...]:
    """The grid tried on ``model``: frozen BatchNorm statistics at :data:`DEFAULT_LRS`.

    Train-mode BatchNorm is not in the default grid, with or without a selection sample.
    Forget-only batches estimate the statistics of the forgotten class alone, which collapsed
    retained accuracy on a torchvision ResNet-18 (94 -> 21), and nothing on the forget images
    can see that happen. With frozen statistics and clipped gradient steps, every model
    measured (SmallCNN, ResNet-18, MobileNetV3, a plain CNN, a ViT; README, Benchmark) kept
    its retained accuracy, so the extra candidates would cost time and win nothing. A user
    may still list ``Candidate(lr, freeze_bn=False)`` in :class:`SelectionConfig`; with a
    selection sample a collapsing candidate is then vetoed.

    Example:
        >>> [c.label for c in default_candidates(nn.BatchNorm1d(2))]
        ['lr=0.001 bn=frozen', 'lr=0.003 bn=frozen', 'lr=0.01 bn=frozen']
    """
    return tuple(Candidate(lr, True) for lr in DEFAULT_LRS)


def candidates_for(
    model: nn.Module, hparams: dict[str, Any], config: SelectionConfig
) -> tuple[Candidate, ...]:
    """The candidates of one call: the config's, else the default grid narrowed by what the
    caller pinned (``freeze_bn`` keeps that policy, ``lr`` that learning rate).

    Example:
        >>> cfg = SelectionConfig()
        >>> [c.label for c in candidates_for(nn.Linear(2, 2), {"lr": 0.02}, cfg)]
        ['lr=0.02 bn=frozen']
        >>> [c.label for c in candidates_for(nn.Linear(2, 2), {"freeze_bn": False}, cfg)][:1]
        ['lr=0.001 bn=train']
    """
    if config.candidates is not None:
        return config.candidates
    grid = default_candidates(model)
    if "freeze_bn" in hparams:
        grid = tuple(Candidate(c.lr, bool(hparams["freeze_bn"])) for c in grid)
    if "lr" in hparams:
        grid = tuple(dict.fromkeys(Candidate(float(hparams["lr"]), c.freeze_bn) for c in grid))
    return grid


@dataclass(frozen=True)
class SelectionConfig:
    """How the selection searches and stops.

    Attributes:
        candidates: Settings to try; ``None`` uses :func:`default_candidates`.
        probe_epochs: Epochs every candidate trains before the best is kept.
        max_epochs: Epochs the kept candidate may train in all (its probe included).
        min_epochs: Never stop before this many epochs.
        forget_threshold: Forget-image accuracy (percent, eval mode) at or below which
            forgetting counts as done.
        patience: Epochs without improvement of the retention signal before stopping.
        min_delta: Improvement that counts: points of selection accuracy, or a relative
            decrease of the retention term (0.05 = 5 %).
        grad_clip: Gradient-norm clip of every candidate.
        max_forget_probe: Forget images the signals are measured on.
        max_selection: Selection-sample images used.
        probe_forget_max: Forget accuracy (percent) a candidate must reach within the probe
            to count as forgetting; the smallest such learning rate is kept.
        veto_drop: With a selection sample, a candidate whose selection accuracy after the
            probe is more than this many points below the original's is vetoed (a collapse).
    """

    candidates: tuple[Candidate, ...] | None = None
    probe_epochs: int = 2
    max_epochs: int = 30
    min_epochs: int = 3
    forget_threshold: float = 1.0
    patience: int = 3
    min_delta: float = 0.1
    grad_clip: float = 1.0
    max_forget_probe: int = 128
    max_selection: int = 512
    probe_forget_max: float = 50.0
    veto_drop: float = 10.0

    def __post_init__(self) -> None:
        if self.probe_epochs < 1 or self.max_epochs < self.probe_epochs:
            raise InvalidHparamError(
                f"selection needs 1 <= probe_epochs <= max_epochs, got {self.probe_epochs}"
                f" and {self.max_epochs}"
            )
        if self.patience < 1 or self.min_epochs < 1:
            raise InvalidHparamError("selection patience and min_epochs must be positive")
        if self.candidates is not None and not self.candidates:
            raise InvalidHparamError("selection candidates is empty; give at least one")


def forget_score(signals: EpochSignals, threshold: float) -> float:
    """How well a state fits DELETE's target on the forget images; higher is better.

    Minus the eval-mode DELETE loss on the forget images (forgetting + retention terms),
    less 1000 per point of forget accuracy above ``threshold``, so a state that still
    remembers never beats one that forgot. Candidates are ranked by it in both modes.

    Example:
        >>> s = EpochSignals(3, forget_acc=0.0, forgetting=0.01, retention=0.2, agreement=0.9)
        >>> round(forget_score(s, 1.0), 3)
        -0.21
        >>> forget_score(EpochSignals(3, 40.0, 0.5, 0.1, 0.9), 1.0) < -1000
        True
    """
    penalty = 1000.0 * max(signals.forget_acc - threshold, 0.0)
    return -(signals.forgetting + signals.retention) - penalty


def score(signals: EpochSignals, threshold: float) -> float:
    """Which epoch's state to keep; higher is better.

    With a selection sample: its retained accuracy, less 1000 per point of forget accuracy
    above ``threshold``. Forget data only: :func:`forget_score`.

    Example:
        >>> score(EpochSignals(3, 0.0, 0.5, 0.1, 0.9, selection_acc=97.0), 1.0)
        97.0
        >>> score(EpochSignals(3, 40.0, 0.5, 0.1, 0.9, selection_acc=97.0), 1.0) < 0
        True
    """
    if signals.selection_acc is None:
        return forget_score(signals, threshold)
    return signals.selection_acc - 1000.0 * max(signals.forget_acc - threshold, 0.0)


class Stopper:
    """The stopping rule, fed one :class:`EpochSignals` per epoch.

    It stops when forgetting is done *and* the retention term (and, with a selection sample,
    the selection accuracy too) has not improved by ``min_delta`` for ``patience`` epochs, or
    at ``max_epochs``. It never stops while the forget accuracy is above the threshold:
    retained accuracy often dips right after forgetting and recovers over the next epochs.

    Example:
        >>> cfg = SelectionConfig(patience=2, min_epochs=1, max_epochs=10)
        >>> stop = Stopper(cfg)
        >>> sig = lambda e, fa, r: EpochSignals(e, fa, 0.0, r, 1.0)
        >>> [stop.update(sig(1, 50.0, 0.5)), stop.update(sig(2, 0.0, 0.2))]
        [False, False]
        >>> [stop.update(sig(3, 0.0, 0.2)), stop.update(sig(4, 0.0, 0.2))]
        [False, True]
        >>> stop.reason
        'forgotten (forget accuracy 0.0% <= 1.0%) and retention term stopped improving for 2 epochs'
    """

    def __init__(self, config: SelectionConfig) -> None:
        self.config = config
        self.best_retention: float | None = None
        self.best_selection: float | None = None
        self.since_best = 0
        self.reason = ""

    def _improved(self, signals: EpochSignals) -> bool:
        cfg = self.config
        better = False
        if (
            self.best_retention is None
            or signals.retention < self.best_retention * (1.0 - cfg.min_delta) - 1e-6
        ):
            self.best_retention = signals.retention
            better = True
        if signals.selection_acc is not None and (
            self.best_selection is None
            or signals.selection_acc > self.best_selection + cfg.min_delta
        ):
            self.best_selection = signals.selection_acc
            better = True
        return better

    def update(self, signals: EpochSignals) -> bool:
        """Record one epoch; ``True`` means stop now (``reason`` says why)."""
        cfg = self.config
        forgotten = signals.forget_acc <= cfg.forget_threshold
        # Improvement is tracked only once forgotten: before that the retention signal
        # is measured on a model that still predicts the forget class.
        if not forgotten:
            self.best_retention = self.best_selection = None
            self.since_best = 0
        elif self._improved(signals):
            self.since_best = 0
        else:
            self.since_best += 1
        what = (
            "retention term and selection accuracy"
            if signals.selection_acc is not None
            else "retention term"
        )
        if signals.epoch >= cfg.max_epochs:
            self.reason = f"max_epochs={cfg.max_epochs} reached" + (
                "" if forgotten else f" before forgetting was done ({signals.forget_acc:.1f}%)"
            )
            return True
        if forgotten and signals.epoch >= cfg.min_epochs and self.since_best >= cfg.patience:
            self.reason = (
                f"forgotten (forget accuracy {signals.forget_acc:.1f}% <= "
                f"{cfg.forget_threshold:.1f}%) and {what} stopped improving for "
                f"{cfg.patience} epochs"
            )
            return True
        return False


@dataclass(frozen=True)
class Trial:
    """One candidate's probe: its signals per epoch and what became of it."""

    candidate: Candidate
    signals: tuple[EpochSignals, ...]
    status: str  # "chosen", "dropped", "vetoed", "failed" or "skipped" (never probed)
    score: float | None
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(
            Candidate(float(data["lr"]), bool(data["freeze_bn"])),
            tuple(EpochSignals.from_dict(s) for s in data["signals"]),
            str(data["status"]),
            data["score"],
            data.get("error"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.label,
            **self.candidate.to_dict(),
            "status": self.status,
            "score": None if self.score is None else round(self.score, 5),
            "error": self.error,
            "signals": [s.to_dict() for s in self.signals],
        }


@dataclass(frozen=True)
class SelectionReport:
    """What the selection tried, what it chose and why it stopped (for run and audit records).

    Attributes:
        mode: ``forget-only`` or ``selection-sample``.
        trials: Every candidate's probe.
        chosen: The candidate that was trained on.
        epochs: Epochs the chosen candidate trained.
        best_epoch: The epoch whose state was kept.
        stop_reason: One sentence.
        history: The chosen candidate's signals, every epoch.
        selection_size: Images in the selection sample (0 without one).
    """

    mode: str
    trials: tuple[Trial, ...]
    chosen: Candidate
    epochs: int
    best_epoch: int
    stop_reason: str
    history: tuple[EpochSignals, ...] = field(default_factory=tuple)
    selection_size: int = 0

    @property
    def final(self) -> EpochSignals:
        """Signals of the kept epoch."""
        return next(s for s in self.history if s.epoch == self.best_epoch)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "chosen": self.chosen.label,
            **{f"chosen_{k}": v for k, v in self.chosen.to_dict().items()},
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "stop_reason": self.stop_reason,
            "selection_size": self.selection_size,
            "tried": [t.to_dict() for t in self.trials],
            "history": [s.to_dict() for s in self.history],
        }

    def summary(self) -> str:
        """One line for logs and certificates."""
        tried = ", ".join(f"{t.candidate.label} ({t.status})" for t in self.trials)
        return (
            f"{self.mode}: chose {self.chosen.label} of [{tried}]; kept epoch "
            f"{self.best_epoch} of {self.epochs}; stopped: {self.stop_reason}"
        )


MethodFactory = Callable[[Candidate, int], UnlearningMethod]


@dataclass
class _Live:
    candidate: Candidate
    ctx: UnlearnContext
    run: EngineRun
    signals: list[EpochSignals] = field(default_factory=list)


def _start(
    factory: MethodFactory,
    candidate: Candidate,
    ctx: UnlearnContext,
    config: SelectionConfig,
    progress: bool,
    checkpoint_dir: Path | None = None,
) -> _Live:
    student = copy.deepcopy(ctx.student)
    child = UnlearnContext(
        student=student,
        original=ctx.original,
        forget_loader=ctx.forget_loader,
        retain_loader=ctx.retain_loader,
        forget_classes=ctx.forget_classes,
        num_classes=ctx.num_classes,
        device=ctx.device,
        generator=torch.Generator().manual_seed(int(ctx.generator.initial_seed())),
    )
    method = factory(candidate, config.max_epochs)
    run = EngineRun(method, child, progress=progress, checkpoint_dir=checkpoint_dir)
    return _Live(candidate, child, run)


def _epoch(live: _Live, probe: ProbeSet, selection_from: float | None = None) -> EpochSignals:
    live.run.run_epoch()
    ctx = live.ctx
    sig = measure(
        ctx.student,
        probe,
        ctx.forget_classes,
        ctx.device,
        live.run.epoch,
        selection_from=selection_from,
    )
    live.signals.append(sig)
    return sig


def _vetoed(signals: list[EpochSignals], probe: ProbeSet, config: SelectionConfig) -> bool:
    """A collapse: the selection accuracy stayed far below the original's in *every* probe
    epoch. The best epoch counts, because a healthy candidate often dips for a few epochs
    right after forgetting and then recovers; a collapse (BatchNorm statistics re-estimated
    on forget-only batches) starts at the first epoch and stays."""
    accs = [s.selection_acc for s in signals if s.selection_acc is not None]
    if not accs or probe.original_selection_acc is None:
        return False
    return max(accs) < probe.original_selection_acc - config.veto_drop


_STATE_FILE = "selection.json"
_BEST_FILE = "selection_best.pt"


def _save_state(
    folder: Path, chosen: _Live, trials: list[Trial], best: EpochSignals, best_state: Any
) -> None:
    """What a resumed run needs after a crash: the choice, the trials, the kept epoch.

    ``best_state`` is ``None`` when the kept epoch did not change: its weights are on disk.
    """
    if best_state is not None:
        torch.save(best_state, folder / (_BEST_FILE + ".tmp"))
        os.replace(folder / (_BEST_FILE + ".tmp"), folder / _BEST_FILE)
    payload = {
        "chosen": chosen.candidate.to_dict(),
        "trials": [t.to_dict() for t in trials],
        "history": [s.to_dict() for s in chosen.signals],
        "best_epoch": best.epoch,
    }
    tmp = folder / (_STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, folder / _STATE_FILE)  # atomic, as the engine's own checkpoints


def _load_state(folder: Path) -> dict[str, Any] | None:
    path = folder / _STATE_FILE
    if not path.exists():
        return None
    try:
        payload: dict[str, Any] = json.loads(path.read_text())
        best = folder / _BEST_FILE
        payload["best_state"] = torch.load(best, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is the same failure
        raise CheckpointError(
            f"selection state in {folder} is unreadable: {one_line(exc)}"
        ) from exc
    return payload


def _probe_all(
    factory: MethodFactory,
    ctx: UnlearnContext,
    probe: ProbeSet,
    config: SelectionConfig,
    progress: bool,
) -> tuple[_Live, list[Trial]]:
    """Probe candidates from the gentlest step up; the first one on track is kept.

    Larger steps forget sooner but damage retained classes more, and the forget images
    cannot show that damage (measured: SmallCNN digit 8 lost 20 points at lr 0.01, 0.3 at
    0.001). So candidates are probed in order of learning rate (frozen BatchNorm first), and
    the first one whose forget accuracy fell to ``probe_forget_max`` within its probe, and
    that the selection sample does not veto, is kept: the larger steps are then never paid
    for (``skipped``). If none gets there, the one that forgets fastest (best
    :func:`forget_score`) is kept.
    """
    mode = SELECTION_SAMPLE if probe.selection_inputs is not None else FORGET_ONLY
    candidates = sorted(
        dict.fromkeys(config.candidates or default_candidates(ctx.student)),
        key=lambda c: (c.lr, not c.freeze_bn),
    )
    lives: list[_Live] = []
    trials: list[Trial] = []
    chosen: _Live | None = None
    for cand in candidates:
        if chosen is not None:
            trials.append(Trial(cand, (), "skipped", None))
            continue
        live = _start(factory, cand, ctx, config, progress)
        try:
            for _ in range(config.probe_epochs):
                _epoch(live, probe)
        except NonFiniteLossError as exc:
            trials.append(Trial(cand, tuple(live.signals), "failed", None, str(exc)))
            continue
        last = live.signals[-1]
        sc = forget_score(last, config.forget_threshold)
        if _vetoed(live.signals, probe, config):
            trials.append(Trial(cand, tuple(live.signals), "vetoed", sc))
            lives.append(live)
        elif last.forget_acc <= config.probe_forget_max:
            trials.append(Trial(cand, tuple(live.signals), "chosen", sc))
            chosen = live
        else:
            trials.append(Trial(cand, tuple(live.signals), "dropped", sc))
            lives.append(live)
    if chosen is None:
        if not lives:
            raise NonFiniteLossError(
                "every candidate diverged: " + "; ".join(t.candidate.label for t in trials)
            )
        # Nobody on track: the fastest forgetter that is not vetoed (else any).
        pool = [lv for lv in lives if not _vetoed(lv.signals, probe, config)] or lives
        chosen = max(pool, key=lambda lv: forget_score(lv.signals[-1], config.forget_threshold))
        trials = [
            Trial(t.candidate, t.signals, "chosen", t.score)
            if t.candidate == chosen.candidate
            else t
            for t in trials
        ]
    log.info("selection (%s): chose %s", mode, chosen.candidate.label)
    return chosen, trials


def select_and_train(
    factory: MethodFactory,
    ctx: UnlearnContext,
    probe: ProbeSet,
    config: SelectionConfig = SelectionConfig(),
    *,
    progress: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> tuple[EngineResult, SelectionReport]:
    """Probe every candidate, keep the best, train it until the stopping rule fires.

    Args:
        factory: ``factory(candidate, max_epochs)`` builds the method for one candidate.
        ctx: The unlearning context; ``ctx.student`` receives the kept state.
        probe: Forget images (and the selection sample) the signals are measured on.
        config: Search and stopping settings.
        progress: Per-epoch progress bars.
        checkpoint_dir: When given, the choice and the kept candidate's epochs are
            checkpointed there, and a killed run resumes after its probes.

    Returns:
        The kept candidate's engine record (its ``seconds`` cover the whole selection) and
        the :class:`SelectionReport`.

    Raises:
        NonFiniteLossError: Every candidate diverged.
        CheckpointError: A checkpoint in ``checkpoint_dir`` is unreadable.
    """
    mode = SELECTION_SAMPLE if probe.selection_inputs is not None else FORGET_ONLY
    started = time.perf_counter()
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    saved = _load_state(folder) if folder is not None else None
    stopper = Stopper(config)
    if saved is not None and folder is not None:
        # Resume: the probes are done and the choice is recorded; the kept candidate's
        # engine checkpoint brings its weights, optimizer and epoch back.
        candidate = Candidate(**saved["chosen"])
        chosen = _start(factory, candidate, ctx, config, progress, checkpoint_dir=folder)
        chosen.signals = [EpochSignals.from_dict(d) for d in saved["history"]][: chosen.run.epoch]
        trials = [Trial.from_dict(d) for d in saved["trials"]]
        best_sig = next(
            (s for s in chosen.signals if s.epoch == saved["best_epoch"]), chosen.signals[-1]
        )
        best_state = saved["best_state"]
    else:
        if folder is not None and (folder / CHECKPOINT_FILE).exists():
            # Not ours (no selection state beside it): refuse it if unreadable, else ignore.
            load_checkpoint(folder / CHECKPOINT_FILE, "")
        chosen, trials = _probe_all(factory, ctx, probe, config, progress)
        best_sig = chosen.signals[-1]
        best_state = copy.deepcopy(chosen.ctx.student.state_dict())
        if folder is not None:
            chosen.run.enable_checkpoints(folder)
            _save_state(folder, chosen, trials, best_sig, best_state)
    stopped = False
    for sig in chosen.signals:
        stopped = stopper.update(sig)
    while not stopped:
        try:
            # After the probes the sample's accuracy matters only once forgotten.
            sig = _epoch(chosen, probe, selection_from=config.forget_threshold)
        except NonFiniteLossError as exc:
            stopper.reason = f"the loss diverged; kept epoch {best_sig.epoch} ({exc})"
            break
        improved = score(sig, config.forget_threshold) >= score(best_sig, config.forget_threshold)
        if improved:
            best_sig, best_state = sig, copy.deepcopy(chosen.ctx.student.state_dict())
        if folder is not None:
            _save_state(folder, chosen, trials, best_sig, best_state if improved else None)
        stopped = stopper.update(sig)
    ctx.student.load_state_dict(best_state)
    ctx.student.eval()
    result = chosen.run.finish()
    result.seconds = time.perf_counter() - started
    report = SelectionReport(
        mode=mode,
        trials=tuple(trials),
        chosen=chosen.candidate,
        epochs=chosen.run.epoch,
        best_epoch=best_sig.epoch,
        stop_reason=stopper.reason,
        history=tuple(chosen.signals),
        selection_size=0 if probe.selection_labels is None else len(probe.selection_labels),
    )
    return result, report
