"""``repair()``: run a registered repair step after unlearning, through the one engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from delete._device import resolve_device
from delete.data.pairs import PairLoader
from delete.engine import EngineResult, run_engine
from delete.errors import InvalidForgetSetError, MissingRetainDataError
from delete.methods.base import DataLoaderLike, MethodConfig, UnlearnContext
from delete.models.clone import clone_module
from delete.repair._registry import create_repair

__all__ = ["RepairResult", "repair"]


@dataclass(frozen=True)
class RepairResult:
    """The repaired model and what the step recorded."""

    model: nn.Module
    step: str
    config: MethodConfig
    repair_images: int
    engine: EngineResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no model) for run and audit records."""
        return {
            "step": self.step,
            "config": dataclasses.asdict(self.config),
            "repair_images": self.repair_images,
            "steps": self.engine.steps,
            "seconds": round(self.engine.seconds, 3),
        }


def repair(
    unlearned: nn.Module,
    original: nn.Module,
    repair_loader: DataLoaderLike,
    forget_loader: DataLoaderLike,
    forget_classes: Sequence[int],
    step: str = "distill",
    device: str | torch.device = "auto",
    *,
    progress: bool = False,
    **hparams: Any,
) -> RepairResult:
    """Restore behaviour that unlearning took, from a small declared repair set.

    Args:
        unlearned: The unlearned model (copied; never modified).
        original: The model before unlearning, the teacher (copied, frozen).
        repair_loader: The declared repair set: images whose original behaviour is to be kept
            (for a backdoor: clean images chosen by the defender).
        forget_loader: The forget set the unlearning used; steps that keep the forgetting in
            place while repairing read it.
        forget_classes: The forgotten classes, as the unlearning had them.
        step: A name from :func:`delete.repair.list_repairs`.
        device: Where to run.
        progress: Show the engine's progress bar.
        **hparams: The step's hyper-parameters (its config dataclass fields).

    Raises:
        MissingRetainDataError: The repair set is empty.
        InvalidForgetSetError: The forget set is empty.
        InvalidHparamError / UnknownMethodError: A bad hyper-parameter or step name.
    """
    algo = create_repair(step, **hparams)
    # Read as (inputs, labels) whatever the loaders yield, as delete.unlearn does.
    repair_loader = PairLoader(repair_loader, "repair set")
    forget_loader = PairLoader(forget_loader, "forget set")
    images = sum(len(batch[1]) for batch in repair_loader)
    if images == 0:
        raise MissingRetainDataError(f"repair step {step!r} got an empty repair set")
    if not any(True for _ in forget_loader):
        raise InvalidForgetSetError(f"repair step {step!r} got an empty forget set")
    dev = resolve_device(device)
    home = next(unlearned.parameters()).device
    teacher = clone_module(original).to(dev).eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    student = clone_module(unlearned).to(dev)
    width = int(teacher(next(iter(forget_loader))[0][:1].to(dev)).shape[1])
    ctx = UnlearnContext(
        student=student,
        original=teacher,
        forget_loader=forget_loader,
        retain_loader=repair_loader,
        forget_classes=tuple(sorted(int(c) for c in forget_classes)),
        num_classes=width,
        device=dev,
        generator=torch.Generator().manual_seed(algo.config.seed),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(algo.config.seed)
        engine = run_engine(algo, ctx, progress=progress)
    return RepairResult(student.to(home).eval(), step, algo.config, images, engine)
