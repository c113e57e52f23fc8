"""The contract every unlearning method fulfils, so one engine can run them all.

A method supplies *what* to train on (``batches``) and *how* to score a batch
(``training_step``); the engine in :mod:`delete.engine` owns the loop, the optimizer step,
AMP, BatchNorm freezing, non-finite loss detection, progress, logging and checkpoints.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from delete.errors import InvalidHparamError

__all__ = ["MethodConfig", "Batch", "UnlearnContext", "UnlearningMethod", "DataLoaderLike"]

DataLoaderLike = Iterable[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class MethodConfig:
    """Hyper-parameters every method shares. Subclasses change defaults and add fields.

    Attributes:
        epochs: Passes over the method's training data.
        lr: SGD learning rate.
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        freeze_bn: Keep BatchNorm running statistics fixed (BN layers stay in eval mode).
        amp: Use bf16 autocast when the device is CUDA; ignored elsewhere.
        seed: Seed of the method's own randomness (random labels, shuffles, noise).
        grad_clip: Max gradient norm, or ``None`` for no clipping.
        trainable: Parameter-name prefixes (as in ``model.named_parameters()``) the method
            may update; every other parameter stays at the original's value. ``None`` trains
            every parameter the caller left trainable (``requires_grad``), or all of them when
            the caller froze every one; a method that re-initialises trains all. Restricting
            the update is how a defence keeps features the forget set does
            not cover (e.g. the backdoor recipe trains only the layers that see the trigger).
    """

    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    freeze_bn: bool = False
    amp: bool = True
    seed: int = 0
    grad_clip: float | None = None
    trainable: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.trainable is not None:
            if isinstance(self.trainable, str):
                object.__setattr__(self, "trainable", (self.trainable,))
            elif isinstance(self.trainable, list):
                object.__setattr__(self, "trainable", tuple(self.trainable))
            prefixes = self.trainable
            if not prefixes or not all(isinstance(x, str) and x for x in prefixes):
                raise InvalidHparamError(
                    f"trainable must be non-empty parameter-name prefixes, got {prefixes!r}"
                )
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            raise InvalidHparamError(f"epochs must be a positive integer, got {self.epochs!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise InvalidHparamError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr <= 0:
            raise InvalidHparamError(f"lr must be positive, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view, for logging and audit records."""
        return dataclasses.asdict(self)


@dataclass
class Batch:
    """One optimisation step's data. ``kind`` tells the method which objective applies."""

    kind: str
    inputs: Tensor
    targets: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.kind,
            self.inputs.to(device, non_blocking=True),
            self.targets.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.extra.items()},
        )


_NOTES = "run_notes"


@dataclass
class UnlearnContext:
    """Everything a method may read while it trains.

    Attributes:
        student: The copy being trained (on ``device``).
        original: A frozen copy of the input model in eval mode (the teacher for distillation).
        forget_loader: Yields ``(images, labels)`` of the data to forget.
        retain_loader: Yields retained data, or ``None`` when the caller has none.
        forget_classes: Sorted class indices to forget.
        num_classes: Width of the model's output.
        device: Where training runs.
        generator: Seeded CPU generator for the method's own randomness.
        state: The method's own state for this run.
        shared: What every run of one request may reuse, because it depends on neither the
            candidate nor the training so far (DELETE's teacher logits on the forget images).
            The automatic selection hands one dict to all its runs; each run keeps its own
            ``state``.
    """

    student: nn.Module
    original: nn.Module
    forget_loader: DataLoaderLike
    retain_loader: DataLoaderLike | None
    forget_classes: tuple[int, ...]
    num_classes: int
    device: torch.device
    generator: torch.Generator
    state: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)

    def note(self, key: str, value: str) -> None:
        """Record how the run was carried out where it was decided at run time (DELETE: its
        teacher's logits computed once or every step); the run record holds :attr:`notes`.

        Example:
            >>> ctx = UnlearnContext(*[None] * 4, (1,), 2, torch.device("cpu"), None)
            >>> ctx.note("teacher_logits", "computed once"); ctx.notes
            {'teacher_logits': 'computed once'}
        """
        self.shared.setdefault(_NOTES, {})[key] = value

    @property
    def notes(self) -> dict[str, str]:
        """What :meth:`note` recorded, by every run of the request."""
        return dict(self.shared.get(_NOTES, {}))

    @property
    def retain_classes(self) -> tuple[int, ...]:
        forget = set(self.forget_classes)
        return tuple(c for c in range(self.num_classes) if c not in forget)


class UnlearningMethod(ABC):
    """Base class of a registered method. See :func:`delete.methods.register_method`."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    needs_retain: ClassVar[bool] = False
    #: Run the automatic selection (:mod:`delete.selection`) when no lr/epochs is given.
    auto_select: ClassVar[bool] = False
    #: Re-initialises every layer, so parameters the caller froze are trained too (a frozen
    #: one would stay random).
    reinitialises: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    def prepare(self, ctx: UnlearnContext) -> None:  # noqa: B027 - optional hook
        """Set up state before the first epoch (re-initialise, cache, compute masks)."""

    def batches(self, ctx: UnlearnContext, epoch: int) -> Iterator[Batch]:
        """Batches of one epoch. The default walks the forget set once."""
        for inputs, targets in ctx.forget_loader:
            yield Batch("forget", inputs, targets)

    @abstractmethod
    def training_step(self, batch: Batch, ctx: UnlearnContext) -> Tensor:
        """The scalar loss to minimise on ``batch`` (already on ``ctx.device``)."""

    def after_backward(self, ctx: UnlearnContext) -> None:  # noqa: B027 - optional hook
        """Adjust gradients before the optimizer step (e.g. SalUn's saliency mask)."""

    def configure_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """SGD with the config's learning rate, momentum and weight decay."""
        cfg = self.config
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
