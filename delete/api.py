"""The one-call API: ``delete.unlearn(model, forget_loader, forget_classes, ...)``."""

from __future__ import annotations

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
    IncompatibleInputError,
    InvalidClassError,
    InvalidForgetSetError,
    InvalidHparamError,
    MissingRetainDataError,
    UnlearningError,
    one_line,
)
from delete.methods import create_method, get_method_class
from delete.methods.base import DataLoaderLike, MethodConfig, UnlearnContext, UnlearningMethod
from delete.models.clone import clone_module
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
from delete.selection.sharpen import mean_top_probability, sharpening_scale

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
    """Width of the model's output (dim 1) on the first images of ``sample``.

    Raises:
        IncompatibleInputError: the model cannot read the images (their channels, size or
            dtype do not fit it), or takes one fixed batch size only. One line, before any
            copy is trained, not a shape error from inside the model in the first epoch.
        InvalidForgetSetError: the output has no class dimension.
    """
    was_training = model.training
    model.eval()
    try:
        out = _read_any_batch(model, sample, device)
    finally:
        model.train(was_training)
    if out.dim() < 2:
        raise InvalidForgetSetError(
            f"model output has shape {tuple(out.shape)}; expected (N, C, ...)"
        )
    return int(out.shape[1])


def _read_any_batch(model: nn.Module, sample: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The output on two images, once the model has read batches of 2, 1 and ``len(sample)``.

    Training, the selection's reads and an epoch's shorter last batch all need any batch
    size, so a model that reads some of these sizes but not all (a forward written as
    ``x.view(64, -1)``, a ``torch.export`` program with a static batch) is refused here.
    """
    outputs: dict[int, torch.Tensor] = {}
    errors: dict[int, IncompatibleInputError] = {}
    for size in dict.fromkeys(min(n, len(sample)) for n in (2, 1, len(sample))):
        try:
            outputs[size] = _read(model, sample[:size], device)
        except IncompatibleInputError as exc:
            errors[size] = exc
    if not outputs:
        raise next(iter(errors.values()))
    if errors:
        good, bad = next(iter(outputs)), next(iter(errors))
        raise IncompatibleInputError(
            f"the model reads a batch of {good} image{'s' * (good > 1)} of shape "
            f"{tuple(sample.shape[1:])} but not a batch of {bad}: its forward fixes the batch "
            f"size (e.g. x.view({good}, -1)); write x.flatten(1) so that it takes any batch"
        )
    return next(iter(outputs.values()))


def _read(model: nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``model(batch)`` without grad; a failure of the model's own code as one line."""
    with torch.no_grad():
        try:
            return model(batch.to(device))
        except UnlearningError:  # the library's own verdict (e.g. no logits in the output)
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the caller's forward raises
            what = f"a batch of shape {tuple(batch.shape)}, dtype {str(batch.dtype)[6:]}"
            raise IncompatibleInputError(
                f"the model cannot read the forget images ({what}): {one_line(exc, 300)}"
            ) from None


def _first_batch(loader: DataLoaderLike, what: str, at_least: int = 1) -> torch.Tensor:
    """The first batch of inputs, joined with the next ones until it holds ``at_least``
    images (a loader of single images still shows whether the model takes any batch size)."""
    batches: list[torch.Tensor] = []
    for inputs, _ in loader:
        if len(inputs) > 0:
            batches.append(inputs)
        if sum(len(b) for b in batches) >= at_least:
            break
    if not batches:
        raise InvalidForgetSetError(f"the {what} is empty; there is nothing to train on")
    if len(batches) == 1:
        return batches[0]
    try:
        return torch.cat(batches)
    except RuntimeError:  # images of different sizes per batch: the first batch alone
        return batches[0]


def _set_trainable(
    student: nn.Module, prefixes: tuple[str, ...] | None, *, keep_frozen: bool
) -> str | None:
    """Set which parameters the method may update; returns a note for the run record when
    the caller's own ``requires_grad`` flags decided it.

    ``prefixes`` decide when given (names that match nothing are refused). Without them, a
    parameter the caller froze stays at the original's value, as in any PyTorch training
    loop, unless ``keep_frozen`` is off (a method that re-initialises every layer) or the
    caller froze every parameter (a model frozen for inference: unlearning trains it all).
    """
    named = list(student.named_parameters())
    if prefixes is None:
        frozen = [name for name, param in named if not param.requires_grad]
        if keep_frozen and 0 < len(frozen) < len(named):
            return (
                f"{len(named) - len(frozen)} of {len(named)} parameter tensors: the caller "
                f"froze the rest ({_names([n.rsplit('.', 1)[0] for n in frozen])})"
            )
        for _, param in named:
            param.requires_grad_(True)
        if keep_frozen and frozen:
            return f"all {len(named)} parameter tensors: the caller had frozen every one"
        return None
    matched: set[str] = set()
    for name, param in named:
        hits = [p for p in prefixes if name == p or name.startswith(p.rstrip(".") + ".")]
        matched.update(hits)
        param.requires_grad_(bool(hits))
    unknown = sorted(set(prefixes) - matched)
    if unknown:
        groups = [name.rsplit(".", 1)[0] for name, _ in named]
        raise InvalidHparamError(
            f"trainable prefixes {unknown} match no parameter of the model "
            f"(it has: {_names(groups)})"
        )
    return None


def _names(names: Sequence[str], most: int = 12) -> str:
    """The first ``most`` distinct names, comma-separated, ``...`` if there are more."""
    distinct = list(dict.fromkeys(names))
    return ", ".join(distinct[:most]) + (", ..." if len(distinct) > most else "")


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
    original = LogitsOnly(clone_module(model)).to(dev).eval()
    for p in original.parameters():
        p.requires_grad_(False)
    sample = _first_batch(forget_loader, "forget set", at_least=2)
    width = infer_num_classes(original, sample, dev)
    if num_classes is not None and num_classes != width:
        raise InvalidHparamError(
            f"num_classes={num_classes!r} but the model outputs {width} logits per image"
        )
    classes = validate_forget_classes(forget_classes, width)
    if retain_loader is not None and algo.needs_retain:
        _first_batch(retain_loader, "retain set")

    # Conv nets train and read faster channels-last; only where the logits stay the same.
    channels_last = to_channels_last_if_same(original, sample.to(dev))
    own = clone_module(model).to(dev)
    if channels_last:
        own.to(memory_format=torch.channels_last)
    caller_flags = [param.requires_grad for param in own.parameters()]
    trainable = _set_trainable(
        own, algo.config.trainable, keep_frozen=not type(algo).reinitialises
    )  # the caller's parameter names
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
    if trainable is not None:
        ctx.note("trainable", trainable)
    if original.read_probabilities:
        ctx.note("outputs", "probabilities (each row sums to 1): their log is distilled")
    if auto and sel_config.sharpen_below is not None:
        _sharpen(original, student, sample.to(dev), sel_config.sharpen_below, ctx)
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
    # Frozen for unlearning only: the result has the caller's own flags back.
    for param, flag in zip(own.parameters(), caller_flags, strict=True):
        param.requires_grad_(flag)
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


def _sharpen(
    original: LogitsOnly,
    student: LogitsOnly,
    images: torch.Tensor,
    target: float,
    ctx: UnlearnContext,
) -> None:
    """Scale both models' logits when the original reads soft on the forget images."""
    with torch.no_grad():
        logits = original(images)
    scale = sharpening_scale(logits, target)
    if scale == 1.0:
        return
    original.scale = student.scale = scale
    ctx.note(
        "logit_scale",
        f"{scale:.2f}: the original's mean top-1 probability on the forget images read "
        f"{mean_top_probability(logits):.2f}, below {target}; the selection trained and read "
        f"logits times {scale:.2f}",
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
        setting = candidate.to_dict()
        head = setting.pop("head", None)
        if head is not None:  # the selection trains that layer alone; the record says so
            setting["trainable"] = (head,)
        return create_method(
            method,
            **{
                **hparams,
                **setting,
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
