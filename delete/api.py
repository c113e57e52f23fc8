"""The one-call API: ``delete.unlearn(model, forget_loader, forget_classes, ...)``."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from delete._device import resolve_device
from delete.data.pairs import PairLoader
from delete.engine import EngineResult, run_engine
from delete.errors import (
    InvalidClassError,
    InvalidForgetSetError,
    InvalidHparamError,
    MissingRetainDataError,
)
from delete.methods import create_method, get_method_class
from delete.methods.base import DataLoaderLike, MethodConfig, UnlearnContext, UnlearningMethod
from delete.models.memory_format import to_channels_last_if_same
from delete.models.outputs import LogitsOnly
from delete.selection import (
    Candidate,
    ProbeSet,
    SelectionConfig,
    SelectionReport,
    candidates_for,
    fallback_for,
)
from delete.selection import select_and_train as _select_and_train

__all__ = [
    "UnlearnResult",
    "unlearn",
    "run_unlearning",
    "validate_forget_classes",
    "infer_num_classes",
    "wants_selection",
]


@dataclass
class UnlearnResult:
    """A trained copy of the model plus what the run recorded."""

    model: nn.Module
    method: str
    config: MethodConfig
    forget_classes: tuple[int, ...]
    num_classes: int
    device: str
    engine: EngineResult
    selection: SelectionReport | None = None
    #: How the run was carried out where that was decided at run time: the students' memory
    #: ``layout`` (``channels_last`` or ``contiguous``) and what the method noted
    #: (:meth:`~delete.methods.base.UnlearnContext.note`; DELETE's ``teacher_logits``).
    runtime: dict[str, str] = field(default_factory=dict)


def validate_forget_classes(
    forget_classes: Iterable[Any] | int, num_classes: int
) -> tuple[int, ...]:
    """Check that forget classes are integers in range, distinct, and not every class.

    Returns:
        The classes as a sorted tuple of ``int``.

    Example:
        >>> validate_forget_classes([3, 1], num_classes=10)
        (1, 3)
        >>> validate_forget_classes(3, num_classes=10)  # one class, given bare
        (3,)
    """
    if not isinstance(forget_classes, Iterable) or (
        isinstance(forget_classes, torch.Tensor) and forget_classes.dim() == 0
    ):
        forget_classes = [forget_classes]  # one class given bare: unlearn(model, loader, 3)
    classes = list(forget_classes)
    if not classes:
        raise InvalidClassError("forget_classes is empty; name at least one class to forget")
    ints: list[int] = []
    for c in classes:
        if (
            isinstance(c, bool)
            or not isinstance(c, int | torch.Tensor)
            and not hasattr(c, "__index__")
        ):
            raise InvalidClassError(f"forget class {c!r} is not a class index")
        ints.append(int(c))
    duplicates = sorted({c for c in ints if ints.count(c) > 1})
    if duplicates:
        raise InvalidClassError(f"forget classes are duplicated: {duplicates}")
    out_of_range = [c for c in ints if not 0 <= c < num_classes]
    if out_of_range:
        raise InvalidClassError(
            f"forget class(es) {out_of_range} out of range for a model with {num_classes} classes"
        )
    if len(ints) >= num_classes:
        raise InvalidClassError(
            f"cannot forget every class ({num_classes} of {num_classes}); keep at least one"
        )
    return tuple(sorted(ints))


def infer_num_classes(model: nn.Module, sample: torch.Tensor, device: torch.device) -> int:
    """Width of the model's output (dim 1) on one sample batch."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(sample[:1].to(device))
    model.train(was_training)
    if out.dim() < 2:
        raise InvalidForgetSetError(
            f"model output has shape {tuple(out.shape)}; expected (N, C, ...)"
        )
    return int(out.shape[1])


def _first_batch(loader: DataLoaderLike, what: str) -> torch.Tensor:
    for inputs, _ in loader:
        if len(inputs) > 0:
            return inputs
    raise InvalidForgetSetError(f"the {what} is empty; there is nothing to train on")


def _set_trainable(student: nn.Module, prefixes: tuple[str, ...] | None) -> None:
    """Unfreeze the parameters the method may update; refuse prefixes that match nothing."""
    matched: set[str] = set()
    for name, param in student.named_parameters():
        hits = [p for p in prefixes or () if name == p or name.startswith(p.rstrip(".") + ".")]
        matched.update(hits)
        param.requires_grad_(prefixes is None or bool(hits))
    unknown = sorted(set(prefixes or ()) - matched)
    if unknown:
        groups = list(dict.fromkeys(n.rsplit(".", 1)[0] for n, _ in student.named_parameters()))
        shown = ", ".join(groups[:12]) + (", ..." if len(groups) > 12 else "")
        raise InvalidHparamError(
            f"trainable prefixes {unknown} match no parameter of the model (it has: {shown})"
        )


def wants_selection(
    method: str, hparams: dict[str, Any], selection: SelectionConfig | bool | None
) -> bool:
    """Whether a call runs the automatic selection.

    ``selection=True``/a :class:`SelectionConfig` asks for it and ``False`` refuses it. Left
    at ``None``, methods that select by default (DELETE) do so unless ``lr`` or ``epochs`` is
    given: a fixed setting runs exactly as given, as the paper-faithful benchmark rows need.

    Example:
        >>> wants_selection("delete", {}, None), wants_selection("delete", {"lr": 0.1}, None)
        (True, False)
        >>> wants_selection("finetune", {}, None), wants_selection("finetune", {}, True)
        (False, True)
    """
    if selection is not None:
        return selection is not False
    cls = get_method_class(method)
    return cls.auto_select and not ({"lr", "epochs"} & set(hparams))


def run_unlearning(
    model: nn.Module,
    forget_loader: DataLoaderLike,
    forget_classes: Sequence[int] | int,
    method: str = "delete",
    device: str | torch.device = "auto",
    *,
    retain_loader: DataLoaderLike | None = None,
    selection_loader: DataLoaderLike | None = None,
    selection: SelectionConfig | bool | None = None,
    num_classes: int | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    **hparams: Any,
) -> UnlearnResult:
    """Like :func:`unlearn`, but also returns the run's record (config, losses, timing and,
    when the automatic selection ran, its :class:`~delete.selection.SelectionReport`)."""
    # Triples with sample indices and Hugging Face-style mappings read as (inputs, labels);
    # anything else is refused here in one line, not as an unpacking error in training.
    forget_loader = PairLoader(forget_loader, "forget set")
    retain_loader = PairLoader.wrap(retain_loader, "retain set")
    selection_loader = PairLoader.wrap(selection_loader, "selection sample")
    auto = wants_selection(method, hparams, selection)
    sel_config = selection if isinstance(selection, SelectionConfig) else SelectionConfig()
    if auto:
        # Validate everything the candidates share before any work is done.
        create_method(method, **{**hparams, "epochs": sel_config.max_epochs})
    algo = create_method(method, **hparams)
    if algo.needs_retain and retain_loader is None:
        raise MissingRetainDataError(
            f"method {method!r} needs retained training data; pass retain_loader=..."
        )
    dev = resolve_device(device)
    home_device = next(model.parameters()).device if any(True for _ in model.parameters()) else dev

    # Both run behind LogitsOnly: a model whose train-mode forward returns more than logits
    # (GoogLeNet's aux heads, a mapping with "logits") trains like any other; the caller gets
    # their own module back.
    original = LogitsOnly(copy.deepcopy(model)).to(dev).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    sample = _first_batch(forget_loader, "forget set")
    width = num_classes if num_classes is not None else infer_num_classes(original, sample, dev)
    classes = validate_forget_classes(forget_classes, width)
    if retain_loader is not None and algo.needs_retain:
        _first_batch(retain_loader, "retain set")

    # Conv nets train and read faster channels-last; only where the logits stay the same.
    channels_last = to_channels_last_if_same(original, sample.to(dev))
    own = copy.deepcopy(model).to(dev)
    if channels_last:
        own.to(memory_format=torch.channels_last)
    _set_trainable(own, algo.config.trainable)  # the caller's parameter names
    student = LogitsOnly(own)
    generator = torch.Generator().manual_seed(algo.config.seed)
    ctx = UnlearnContext(
        student=student,
        original=original,
        forget_loader=forget_loader,
        retain_loader=retain_loader,
        forget_classes=classes,
        num_classes=width,
        device=dev,
        generator=generator,
    )
    report: SelectionReport | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(algo.config.seed)
        if auto:
            engine, report = _run_selection(
                method,
                hparams,
                ctx,
                original,
                sel_config,
                selection_loader,
                progress,
                checkpoint_dir,
            )
            # The setting that produced the kept state, as a fixed run would record it.
            algo = _candidate_method(method, hparams, sel_config)(report.chosen, report.best_epoch)
        else:
            engine = run_engine(algo, ctx, progress=progress, checkpoint_dir=checkpoint_dir)
    for param in student.parameters():  # frozen for unlearning only; the result is a plain model
        param.requires_grad_(True)
    if channels_last:  # the caller's layout back (ONNX export, state dicts, their own code)
        own.to(memory_format=torch.contiguous_format)
    return UnlearnResult(
        model=own.to(home_device).eval(),
        method=method,
        config=algo.config,
        forget_classes=classes,
        num_classes=width,
        device=str(dev),
        engine=engine,
        selection=report,
        runtime={"layout": "channels_last" if channels_last else "contiguous", **ctx.notes},
    )


def _run_selection(
    method: str,
    hparams: dict[str, Any],
    ctx: UnlearnContext,
    original: nn.Module,
    config: SelectionConfig,
    selection_loader: DataLoaderLike | None,
    progress: bool,
    checkpoint_dir: str | os.PathLike[str] | None,
) -> tuple[EngineResult, SelectionReport]:
    """The automatic selection; a pinned ``lr`` or ``freeze_bn`` narrows its candidates."""
    fallback = fallback_for(ctx.student, hparams, config)
    base = dataclasses.replace(config, candidates=candidates_for(ctx.student, hparams, config))
    steps, with_sample = _steps_per_pass(ctx.forget_loader), selection_loader is not None
    config = base.per_pass(steps, with_sample=with_sample)
    forget_only = base.forget_only_too(steps, with_sample=with_sample)
    probe = ProbeSet.gather(
        original,
        ctx.forget_loader,
        ctx.device,
        selection_loader=selection_loader,
        max_forget=config.max_forget_probe,
        max_selection=config.max_selection,
        # The rotated forget images rank the epochs to keep (``keep_by_rotated``) and judge
        # the BatchNorm fallback of a run without the sample.
        rotate=config.keep_by_rotated
        or (bool(fallback) and (not with_sample or forget_only is not None)),
        forget_classes=ctx.forget_classes,
    )
    return _select_and_train(
        _candidate_method(method, hparams, config),
        ctx,
        probe,
        config,
        progress=progress,
        checkpoint_dir=checkpoint_dir,
        fallback=fallback,
        forget_only=forget_only,
    )


def _steps_per_pass(loader: DataLoaderLike) -> int:
    """Optimizer steps in one pass over ``loader``: its length, else its batches counted."""
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return sum(1 for _ in loader)


def _candidate_method(
    method: str, hparams: dict[str, Any], config: SelectionConfig
) -> Callable[[Candidate, int], UnlearningMethod]:
    """``factory(candidate, epochs)``: the method with the caller's hyper-parameters, the
    candidate's lr and BatchNorm policy, and clipped steps (unless ``grad_clip`` was given)."""

    def factory(candidate: Candidate, epochs: int) -> UnlearningMethod:
        return create_method(
            method,
            **{
                **hparams,
                **candidate.to_dict(),
                "epochs": epochs,
                "grad_clip": hparams.get("grad_clip", config.grad_clip),
            },
        )

    return factory


def unlearn(
    model: nn.Module,
    forget_loader: DataLoaderLike,
    forget_classes: Sequence[int] | int,
    method: str = "delete",
    device: str | torch.device = "auto",
    *,
    retain_loader: DataLoaderLike | None = None,
    selection_loader: DataLoaderLike | None = None,
    selection: SelectionConfig | bool | None = None,
    **hparams: Any,
) -> nn.Module:
    """Return a copy of ``model`` that has forgotten ``forget_classes``.

    Args:
        model: Any ``nn.Module`` classifier returning logits ``(N, C)`` (or ``(N, C, H, W)``).
            It is never modified.
        forget_loader: Iterable of ``(images, labels)`` batches of the data to forget.
        forget_classes: Class indices to forget (one index may be given bare).
        method: A name from :func:`delete.list_methods`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
        retain_loader: Retained training data, for the baselines that need it.
        selection_loader: A small loader of retained images used only to choose among the
            automatic selection's candidates and when to stop, never to train (a validation
            split, in effect). Without it the selection reads the forget images alone.
        selection: ``None`` (default): DELETE selects its BatchNorm policy, learning rate and
            stopping epoch automatically unless ``lr`` or ``epochs`` is given; ``True`` or a
            :class:`~delete.selection.SelectionConfig` asks any method to; ``False`` runs
            the method's fixed defaults.
        **hparams: Method hyper-parameters (``epochs``, ``lr``, ``freeze_bn``, ``amp``...), and
            ``progress`` / ``checkpoint_dir`` / ``num_classes`` for the engine.

    Returns:
        A new model, in eval mode, on the input model's device.
    """
    engine_keys = {"progress", "checkpoint_dir", "num_classes"}
    engine_kwargs = {k: hparams.pop(k) for k in list(hparams) if k in engine_keys}
    return run_unlearning(
        model,
        forget_loader,
        forget_classes,
        method,
        device,
        retain_loader=retain_loader,
        selection_loader=selection_loader,
        selection=selection,
        **engine_kwargs,
        **hparams,
    ).model
