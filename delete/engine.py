"""The one training engine every method runs on.

Methods supply batches and a loss; the engine owns the optimisation loop, bf16 autocast on
CUDA, BatchNorm freezing, NaN/inf detection, the progress bar, logging, per-epoch
checkpoints and resumption after a crash.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from delete.errors import CheckpointError, NonFiniteLossError, one_line
from delete.methods.base import UnlearnContext, UnlearningMethod
from delete.progress import EpochProgress, report_epoch

__all__ = [
    "CHECKPOINT_FILE",
    "EngineResult",
    "EngineRun",
    "load_checkpoint",
    "run_engine",
    "set_batchnorm_eval",
    "untrained_norm",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "engine_checkpoint.pt"


@dataclass
class EngineResult:
    """What a run of the engine produced, besides the trained ``ctx.student``."""

    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    resumed_from_epoch: int = 0


def set_batchnorm_eval(module: nn.Module, *, untrained_only: bool = False) -> None:
    """Put every BatchNorm layer in eval mode so its running statistics stay fixed; with
    ``untrained_only``, only those whose parameters are all frozen (:func:`untrained_norm`)."""
    for sub in module.modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and (
            not untrained_only or untrained_norm(sub)
        ):
            sub.eval()


def untrained_norm(layer: nn.Module) -> bool:
    """Whether ``layer`` has parameters and none of them is trained: a layer the caller froze
    (or ``trainable=`` left out) keeps its running statistics under every BatchNorm policy,
    as it keeps its weights.

    Example:
        >>> bn = nn.BatchNorm2d(4)
        >>> untrained_norm(bn), untrained_norm(bn.requires_grad_(False))
        (False, True)
        >>> untrained_norm(nn.BatchNorm2d(4, affine=False))  # no weights: the policy decides
        False
    """
    params = list(layer.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def _fingerprint(method: UnlearningMethod, ctx: UnlearnContext) -> str:
    return json.dumps(
        {
            "method": method.name,
            "config": method.config.to_dict(),
            "forget_classes": list(ctx.forget_classes),
            "num_classes": ctx.num_classes,
        },
        sort_keys=True,
        default=str,
    )


def _save_checkpoint(
    path: Path,
    *,
    epoch: int,
    fingerprint: str,
    ctx: UnlearnContext,
    optimizer: torch.optim.Optimizer,
    result: EngineResult,
) -> None:
    payload: dict[str, Any] = {
        "epoch": epoch,
        "fingerprint": fingerprint,
        "student": ctx.student.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch_losses": list(result.epoch_losses),
        "steps": result.steps,
        "cpu_rng": torch.get_rng_state(),
        "generator": ctx.generator.get_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    # Atomic rename: a kill -9 mid-write leaves the previous checkpoint intact.
    os.replace(tmp, path)


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to the run ``fingerprint``, else ``None``.

    Raises:
        CheckpointError: The file is unreadable (truncated, pickled, not a checkpoint).
    """
    if not path.exists():
        return None
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same failure to the user
        raise CheckpointError(f"engine checkpoint {path} is unreadable: {one_line(exc)}") from exc
    if payload.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to a different run configuration", path)
        return None
    return payload


class EngineRun:
    """One method's training, driven one epoch at a time.

    :func:`run_engine` runs every epoch of the config; the automatic selection in
    :mod:`delete.selection` drives several runs side by side and decides when each stops.
    The loop body lives here only, so every method and every driver share it.

    Args:
        method: A registered method instance.
        ctx: The unlearning context; ``ctx.student`` is trained in place.
        progress: Show a progress bar per epoch.
        checkpoint_dir: When given, a checkpoint is written after every epoch and an existing
            checkpoint of the same configuration is resumed from.
    """

    def __init__(
        self,
        method: UnlearningMethod,
        ctx: UnlearnContext,
        *,
        progress: bool = True,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.method = method
        self.ctx = ctx
        self.progress = progress
        self.result = EngineResult()
        self._started = time.perf_counter()
        method.prepare(ctx)
        self.params = [p for p in ctx.student.parameters() if p.requires_grad]
        self.optimizer = method.configure_optimizer(self.params)
        self.epoch = 0
        self._ckpt_path = (
            Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
        )
        self._fingerprint = _fingerprint(method, ctx)
        if self._ckpt_path is not None:
            self._ckpt_path.parent.mkdir(parents=True, exist_ok=True)
            payload = load_checkpoint(self._ckpt_path, self._fingerprint)
            if payload is not None:
                ctx.student.load_state_dict(payload["student"])
                self.optimizer.load_state_dict(payload["optimizer"])
                torch.set_rng_state(payload["cpu_rng"])
                ctx.generator.set_state(payload["generator"])
                self.result.epoch_losses = list(payload["epoch_losses"])
                self.result.steps = int(payload["steps"])
                self.epoch = self.result.resumed_from_epoch = int(payload["epoch"])
                log.info(
                    "%s: resuming from epoch %d of %d",
                    method.name,
                    self.epoch,
                    method.config.epochs,
                )
        report_epoch(
            EpochProgress("unlearn", method.name, id(self), self.epoch, method.config.epochs)
        )

    def enable_checkpoints(self, checkpoint_dir: str | os.PathLike[str]) -> None:
        """Checkpoint now, and after every following epoch (the selection turns this on for
        the candidate it keeps, once the probes are over, so a kill at any later point
        resumes at or after the end of the probes)."""
        self._ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE
        self._ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        self._checkpoint(self._ckpt_path)

    def _checkpoint(self, path: Path) -> None:
        _save_checkpoint(
            path,
            epoch=self.epoch,
            fingerprint=self._fingerprint,
            ctx=self.ctx,
            optimizer=self.optimizer,
            result=self.result,
        )

    def run_epoch(self) -> float:
        """Train one epoch; returns its mean loss.

        Raises:
            NonFiniteLossError: The loss became NaN or infinite.
        """
        method, ctx, cfg, result = self.method, self.ctx, self.method.config, self.result
        use_amp = cfg.amp and ctx.device.type == "cuda"
        ctx.student.train()
        set_batchnorm_eval(ctx.student, untrained_only=not cfg.freeze_bn)
        total, count = 0.0, 0
        bar = tqdm(
            method.batches(ctx, self.epoch),
            desc=f"{method.name} epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for batch in bar:
            batch = batch.to(ctx.device)
            # One image gives no batch statistics: PyTorch refuses it where a BatchNorm layer
            # sees a 1x1 map (torchvision's EfficientNetV2 at 32 px), and on a larger map the
            # running statistics would take one image's. A forget set of 64k + 1 images ends
            # in such a batch, so for that step alone BatchNorm reads its running statistics.
            alone = not cfg.freeze_bn and batch.inputs.shape[0] == 1
            if alone:
                set_batchnorm_eval(ctx.student)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = method.training_step(batch, ctx)
            if not torch.isfinite(loss).all():
                raise NonFiniteLossError(
                    f"{method.name}: loss became {float(loss.detach())} at epoch "
                    f"{self.epoch + 1}, step {result.steps + 1}; the unlearned model was discarded"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            method.after_backward(ctx)
            if cfg.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optimizer.step()
            if alone:
                ctx.student.train()
                set_batchnorm_eval(ctx.student, untrained_only=True)
            result.steps += 1
            total += float(loss.detach())
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        self.epoch += 1
        result.epoch_losses.append(total / max(count, 1))
        log.debug(
            "%s epoch %d/%d loss %.5f", method.name, self.epoch, cfg.epochs, result.epoch_losses[-1]
        )
        if self._ckpt_path is not None:
            self._checkpoint(self._ckpt_path)
        ctx.student.eval()
        report_epoch(
            EpochProgress(
                "unlearn", method.name, id(self), self.epoch, cfg.epochs, result.epoch_losses[-1]
            )
        )
        return result.epoch_losses[-1]

    def finish(self) -> EngineResult:
        """Put the student in eval mode and stamp the wall-clock time."""
        self.ctx.student.eval()
        self.result.seconds = time.perf_counter() - self._started
        return self.result


def run_engine(
    method: UnlearningMethod,
    ctx: UnlearnContext,
    *,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
) -> EngineResult:
    """Train ``ctx.student`` with ``method`` for ``method.config.epochs`` epochs.

    Args:
        method: A registered method instance.
        ctx: The unlearning context; ``ctx.student`` is trained in place.
        progress: Show a progress bar.
        checkpoint_dir: When given, a checkpoint is written after every epoch and an existing
            checkpoint of the same configuration is resumed from.

    Returns:
        Loss history, step count, wall-clock seconds and the epoch resumed from.

    Raises:
        NonFiniteLossError: The loss became NaN or infinite.
        CheckpointError: The checkpoint in ``checkpoint_dir`` is corrupt.
    """
    run = EngineRun(method, ctx, progress=progress, checkpoint_dir=checkpoint_dir)
    while run.epoch < method.config.epochs:
        run.run_epoch()
    return run.finish()
