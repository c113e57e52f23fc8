"""Signals the automatic selection reads after every epoch: pure functions, then a probe.

DELETE's loss on a forget image splits exactly into a *forgetting term*
``-log(1 - p_forget)`` and a *retention term* ``KL(t_hat || p_hat)`` over the retained classes
(see :mod:`delete.losses`). Both are measured here with the student in **eval mode**, the way
the model will be used, on a fixed sample of forget images; so are the forget accuracy and the
retained-class agreement with the teacher. With a selection sample (retained images that are
never trained on) the retained accuracy is measured as well.

The retention term is also read on the forget images *rotated by 90 degrees*
(:func:`rotated`): images the teacher assigns to other classes, so the term there measures how
well the student keeps the teacher's behaviour away from the forgotten class, which forget
images themselves cannot show. Measured on the zoo, it told apart the two BatchNorm policies
where forget-only data could not (:func:`~delete.selection.auto.fallback_for`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from delete.errors import DatasetError, InvalidForgetSetError, InvalidHparamError
from delete.metrics.per_class_accuracy import per_class_accuracy

log = logging.getLogger(__name__)

__all__ = [
    "EpochSignals",
    "ProbeSet",
    "forgetting_term",
    "retention_term",
    "retained_agreement",
    "forget_accuracy",
    "retained_accuracy",
    "rotated",
    "rotated_reading",
    "measure",
    "selection_reading",
    "worst_class_drop",
    "one_class_rise",
    "logits_on",
]


def _forget_mask(num_classes: int, forget_classes: tuple[int, ...], device: torch.device) -> Tensor:
    mask = torch.zeros(num_classes, dtype=torch.bool, device=device)
    mask[list(forget_classes)] = True
    return mask


def forgetting_term(student_logits: Tensor, forget_classes: tuple[int, ...]) -> float:
    """Mean ``-log(1 - p_forget)`` over the batch: 0 when no mass is left on forget classes.

    Example:
        >>> round(forgetting_term(torch.tensor([[0.0, 0.0]]), (0,)), 4)  # p_forget = 1/2
        0.6931
    """
    logp = F.log_softmax(student_logits.float(), dim=1)
    mask = _forget_mask(student_logits.shape[1], forget_classes, student_logits.device)
    log_p_forget = torch.logsumexp(logp[:, mask], dim=1)
    # log(1 - p) computed stably from log p: log1p(-exp(log p)), clamped away from p = 1.
    return float((-torch.log1p(-log_p_forget.exp().clamp(max=1 - 1e-7))).mean())


def retention_term(
    student_logits: Tensor, teacher_logits: Tensor, forget_classes: tuple[int, ...]
) -> float:
    """Mean ``KL(t_hat || p_hat)`` over the retained classes (each renormalised).

    Example:
        >>> t = torch.tensor([[9.0, 1.0, 2.0]])
        >>> retention_term(t, t, (0,))
        0.0
        >>> round(retention_term(torch.tensor([[0.0, 2.0, 1.0]]), t, (0,)), 4)
        0.4621
    """
    mask = ~_forget_mask(student_logits.shape[1], forget_classes, student_logits.device)
    log_p = F.log_softmax(student_logits.float()[:, mask], dim=1)
    t = F.softmax(teacher_logits.float()[:, mask], dim=1)
    return max(float(F.kl_div(log_p, t, reduction="batchmean")), 0.0)


def retained_agreement(
    student_logits: Tensor, teacher_logits: Tensor, forget_classes: tuple[int, ...]
) -> float:
    """Share of samples whose best *retained* class is the same for student and teacher.

    Example:
        >>> s = torch.tensor([[0.0, 2.0, 1.0], [0.0, 1.0, 2.0]])
        >>> retained_agreement(s, torch.tensor([[9.0, 1.0, 0.0], [9.0, 1.0, 0.0]]), (0,))
        0.5
    """
    mask = ~_forget_mask(student_logits.shape[1], forget_classes, student_logits.device)
    return float(
        (student_logits[:, mask].argmax(1) == teacher_logits[:, mask].argmax(1)).float().mean()
    )


def forget_accuracy(student_logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent on forget images (their labels are forget classes).

    Example:
        >>> forget_accuracy(torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
        50.0
    """
    return 100.0 * float((student_logits.argmax(1) == labels).float().mean())


def worst_class_drop(original: Tensor, now: Tensor) -> float:
    """The largest per-class accuracy drop (points) from ``original`` to ``now``, both
    :func:`~delete.metrics.per_class_accuracy` readings (classes absent from either, ``nan``,
    are skipped).

    Example:
        >>> original = torch.tensor([100.0, 96.0, float("nan")])
        >>> worst_class_drop(original, torch.tensor([98.0, 90.0, 50.0]))
        6.0
    """
    drops = original - now
    drops = drops[~drops.isnan()]
    return float(drops.max()) if drops.numel() else 0.0


def one_class_rise(original: Tensor, student: Tensor, labels: Tensor) -> tuple[float, int]:
    """How far one class's logit rose against each image's own class, on the images of the
    other classes, beyond what the median class's rose: in units of the original's mean
    margin on those images, and which class. Columns outside ``labels``' classes (the
    forgotten ones) are not read.

    Training can shift every image's boundary with one kept class at once: a SiLU CNN with
    GroupNorm and label smoothing forgetting digit 3 sent 83 test images of other digits to
    class 6 (8.33 points) while it still read every image inverted from the original right.
    On those images class 6's logit had risen 2.90 against the images' own, the median class
    0.50, and the original's margin was 5.86: a rise of 0.41. Healthy runs spread their rise
    over the classes (``docs/bench/one_class_rise_cpu.md``).

    Example:
        >>> before = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 4.0]])
        >>> after = before.clone(); after[:, 2] += 2.0  # class 2 rises on every image
        >>> rise, cls = one_class_rise(before, after, torch.tensor([0, 1, 2]))
        >>> round(rise, 2), cls  # +2 on the others' images; they lost 1 (median); margin 4
        (0.75, 2)
        >>> one_class_rise(before, before + 1.0, torch.tensor([0, 1, 2]))[0]  # all alike
        0.0
    """
    classes = labels.unique()
    own_o = original.float().gather(1, labels[:, None])
    own_s = student.float().gather(1, labels[:, None])
    kept_o = original.float()[:, classes]
    others = kept_o.masked_fill(classes[None, :] == labels[:, None], float("-inf"))
    margin = float((own_o[:, 0] - others.max(1).values).mean())
    gain = (student.float()[:, classes] - own_s) - (kept_o - own_o)  # rise against own class
    rises = torch.stack(
        [
            gain[labels != c, i].mean() if bool((labels != c).any()) else gain.new_zeros(())
            for i, c in enumerate(classes.tolist())
        ]
    )
    top = int(rises.argmax())
    return float((rises[top] - rises.median()) / max(margin, 1e-6)), int(classes[top])


def retained_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in percent on retained images.

    Example:
        >>> retained_accuracy(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
        100.0
    """
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


@dataclass(frozen=True)
class EpochSignals:
    """What the selection knows about a candidate after one epoch.

    Attributes:
        epoch: Epochs trained so far.
        forget_acc: Forget-image accuracy in percent (eval mode).
        forgetting: Mean forgetting term on forget images.
        retention: Mean retention term (KL over retained classes) on forget images.
        agreement: Retained-class top-1 agreement with the teacher on forget images.
        selection_acc: Retained accuracy on the selection sample, or ``None`` where it was
            not read.
        selection_worst_drop: The largest drop of one class's accuracy on the selection
            sample against the original's (points), read with ``selection_acc``.
        rotated_retention: The retention term on the rotated forget images
            (:func:`rotated`), or ``None`` where the inputs are not square images.
    """

    epoch: int
    forget_acc: float
    forgetting: float
    retention: float
    agreement: float
    selection_acc: float | None = None
    selection_worst_drop: float | None = None
    rotated_retention: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochSignals:
        """Inverse of :meth:`to_dict` (values as rounded there)."""
        return cls(
            **{
                k: data[k]
                for k in (
                    "epoch",
                    "forget_acc",
                    "forgetting",
                    "retention",
                    "agreement",
                    "selection_acc",
                )
            },
            selection_worst_drop=data.get("selection_worst_drop"),
            rotated_retention=data.get("rotated_retention"),
        )

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            "epoch": self.epoch,
            "forget_acc": round(self.forget_acc, 3),
            "forgetting": round(self.forgetting, 5),
            "retention": round(self.retention, 5),
            "agreement": round(self.agreement, 4),
            "selection_acc": None if self.selection_acc is None else round(self.selection_acc, 3),
            "selection_worst_drop": None
            if self.selection_worst_drop is None
            else round(self.selection_worst_drop, 3),
            "rotated_retention": None
            if self.rotated_retention is None
            else round(self.rotated_retention, 5),
        }


@dataclass
class ProbeSet:
    """Fixed tensors the signals are measured on, gathered once before any training.

    Attributes:
        forget_inputs: Up to ``max_forget`` forget images (no augmentation is re-drawn).
        forget_labels: Their labels.
        teacher_logits: The original model's logits on them (eval mode).
        selection_inputs: Retained images of the selection sample, or ``None``.
        selection_labels: Their labels, or ``None``.
        original_selection_acc: The original model's accuracy on the selection sample.
        original_selection_classes: The original's accuracy per class on the sample
            (:func:`~delete.metrics.per_class_accuracy`; ``nan`` for a class it lacks).
        rotated_inputs: The forget images rotated by 90 degrees (:func:`rotated`), or
            ``None`` where they are not square images.
        rotated_teacher: The original model's logits on them.
    """

    forget_inputs: Tensor
    forget_labels: Tensor
    teacher_logits: Tensor
    selection_inputs: Tensor | None = None
    selection_labels: Tensor | None = None
    original_selection_acc: float | None = None
    original_selection_classes: Tensor | None = None
    rotated_inputs: Tensor | None = None
    rotated_teacher: Tensor | None = None

    @classmethod
    def gather(
        cls,
        original: nn.Module,
        forget_loader: Iterable[tuple[Tensor, Tensor]],
        device: torch.device,
        *,
        selection_loader: Iterable[tuple[Tensor, Tensor]] | None = None,
        max_forget: int = 512,
        max_selection: int = 2048,
        rotate: bool = True,
        forget_classes: tuple[int, ...] = (),
    ) -> ProbeSet:
        """Take the first ``max_forget`` forget images and the selection sample; with
        ``rotate``, their rotated copies and the original's logits on them too (a forward
        pass that only a run compared with another BatchNorm policy needs).

        With ``forget_classes``, the labels are checked against them both ways. Forget
        images labelled with a kept class are refused (:func:`_check_forget_labels`), and
        images of ``forget_classes`` in the selection sample are left out of it: the sample
        stands for retained data, and a forgotten image there would read as damage (a sample
        drawn from every class, a tenth of it the forgotten class, would read about ten
        points short once forgotten and hold every run open for nothing).

        Raises:
            InvalidForgetSetError: A forget image is labelled with a class that is kept.
            DatasetError: The selection sample holds only images of the forget classes.
        """
        fx, fy = _take(forget_loader, max_forget, "forget set")
        teacher = logits_on(original, fx, device)
        if teacher.dim() != 2:
            raise InvalidHparamError(
                f"automatic selection reads (N, C) classifier logits, but the model returns "
                f"{tuple(teacher.shape)}; pass lr= and epochs= (e.g. the task's TaskSpec"
                ".delete_hparams) to run a fixed setting"
            )
        _check_forget_labels(fy, forget_classes)
        turned = rotated(fx) if rotate else None
        turned_teacher = None if turned is None else logits_on(original, turned, device)
        if selection_loader is None:
            return cls(fx, fy, teacher, rotated_inputs=turned, rotated_teacher=turned_teacher)
        sx, sy = _take(selection_loader, max_selection, "selection sample")
        sx, sy = _without_classes(sx, sy, forget_classes)
        probe = cls(fx, fy, teacher, rotated_inputs=turned, rotated_teacher=turned_teacher)
        return probe.with_selection(original, sx, sy, device)

    def with_selection(
        self, original: nn.Module, inputs: Tensor, labels: Tensor, device: torch.device
    ) -> ProbeSet:
        """This probe with ``inputs`` and ``labels`` as its selection sample, and the
        ``original``'s accuracy on it (overall and per class)."""
        logits = logits_on(original, inputs, device)
        return dataclasses.replace(
            self,
            selection_inputs=inputs,
            selection_labels=labels,
            original_selection_acc=retained_accuracy(logits, labels),
            original_selection_classes=per_class_accuracy(logits, labels, logits.shape[1]),
        )


def rotated(images: Tensor) -> Tensor | None:
    """``images`` rotated by 90 degrees, or ``None`` unless they are a batch of square images
    (``N, C, H, H``), the only shape a rotation keeps.

    Example:
        >>> rotated(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])).tolist()
        [[[[2.0, 4.0], [1.0, 3.0]]]]
        >>> rotated(torch.zeros(2, 3, 4, 5)) is None, rotated(torch.zeros(2, 8)) is None
        (True, True)
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        return None
    return torch.rot90(images, 1, (2, 3))


def _take(loader: Iterable[tuple[Tensor, Tensor]], limit: int, what: str) -> tuple[Tensor, Tensor]:
    """The first ``limit`` images and labels of ``loader``, as one batch."""
    xs, ys, n = [], [], 0
    for x, y in loader:
        xs.append(x)
        ys.append(y)
        n += len(y)
        if n >= limit:
            break
    if not xs:
        if what == "forget set":
            raise InvalidForgetSetError("the forget set is empty; there is nothing to forget")
        raise DatasetError(
            f"the {what} (selection_loader) is empty; pass retained images, or leave it out"
            " to select from the forget data alone"
        )
    shapes = list(dict.fromkeys(tuple(x.shape[1:]) for x in xs))
    if len(shapes) > 1:  # read as one batch by every candidate, every epoch
        error = InvalidForgetSetError if what == "forget set" else DatasetError
        raise error(
            f"the automatic selection reads the {what} as one batch, but its images come in "
            f"{len(shapes)} shapes ({', '.join(map(str, shapes[:3]))}); resize them to one, "
            "or pass lr= and epochs= to run a fixed setting"
        )
    return torch.cat(xs)[:limit], torch.cat(ys)[:limit]


def _class_labels(labels: Tensor, classes: tuple[int, ...]) -> bool:
    """Whether ``labels`` are one class index per image and there are classes to check them
    against (a segmentation mask holds every class of its scene, and is not checked)."""
    return bool(classes) and labels.dim() == 1 and not labels.is_floating_point()


def _check_forget_labels(labels: Tensor, classes: tuple[int, ...]) -> None:
    """Refuse forget images (the probe's) labelled with a class that is kept.

    The selection reads forgetting as the accuracy on the forget set's own labels, so an
    image labelled with a kept class would read as never forgotten, and the run would train
    to its last epoch for nothing.

    Example:
        >>> _check_forget_labels(torch.tensor([3, 3]), (3,))
        >>> _check_forget_labels(torch.tensor([3, 5]), (3,))
        Traceback (most recent call last):
        ...
        delete.errors.InvalidForgetSetError: the forget set holds images labelled 5, which is \
not a forget class ([3]); pass only the images of the classes to forget
    """
    if not _class_labels(labels, classes):
        return
    others = sorted(set(labels.tolist()) - set(classes))
    if others:
        named = ", ".join(map(str, others[:5])) + (" ..." if len(others) > 5 else "")
        raise InvalidForgetSetError(
            f"the forget set holds images labelled {named}, which "
            f"{'is' if len(others) == 1 else 'are'} not a forget class ({list(classes)}); pass "
            "only the images of the classes to forget"
        )


def _without_classes(
    inputs: Tensor, labels: Tensor, classes: tuple[int, ...]
) -> tuple[Tensor, Tensor]:
    """The selection sample less its images of ``classes`` (class labels only).

    Example:
        >>> x, y = _without_classes(torch.arange(4.0), torch.tensor([0, 3, 1, 3]), (3,))
        >>> x.tolist(), y.tolist()
        ([0.0, 2.0], [0, 1])
    """
    if not _class_labels(labels, classes):
        return inputs, labels
    keep = ~torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))
    if not bool(keep.any()):
        raise DatasetError(
            f"the selection sample holds only images of the forget classes {list(classes)}; "
            "it must hold retained images"
        )
    if not bool(keep.all()):
        log.warning(
            "the selection sample held %d image(s) of the forget classes %s; they are left "
            "out of it (it stands for retained data)",
            int((~keep).sum()),
            list(classes),
        )
    return inputs[keep], labels[keep]


@torch.no_grad()
def logits_on(model: nn.Module, inputs: Tensor, device: torch.device, batch: int = 256) -> Tensor:
    """``model``'s logits on ``inputs`` in eval mode, on the CPU, in batches of ``batch`` (its
    mode is restored after)."""
    was_training = model.training
    model.eval()
    out = [
        model(inputs[i : i + batch].to(device)).float().cpu() for i in range(0, len(inputs), batch)
    ]
    model.train(was_training)
    return torch.cat(out)


def selection_reading(
    student: nn.Module, probe: ProbeSet, device: torch.device
) -> tuple[float, float | None] | None:
    """The student's accuracy on the selection sample and its worst class's drop against the
    original's there, or ``None`` without a sample."""
    if probe.selection_inputs is None or probe.selection_labels is None:
        return None
    logits = logits_on(student, probe.selection_inputs, device)
    worst = None
    if probe.original_selection_classes is not None:
        now = per_class_accuracy(logits, probe.selection_labels, logits.shape[1])
        worst = worst_class_drop(probe.original_selection_classes, now)
    return retained_accuracy(logits, probe.selection_labels), worst


def rotated_reading(
    student: nn.Module, probe: ProbeSet, forget_classes: tuple[int, ...], device: torch.device
) -> float | None:
    """The retention term on the probe's rotated forget images, or ``None`` without them."""
    if probe.rotated_inputs is None or probe.rotated_teacher is None:
        return None
    logits = logits_on(student, probe.rotated_inputs, device)
    return retention_term(logits, probe.rotated_teacher, forget_classes)


def measure(
    student: nn.Module,
    probe: ProbeSet,
    forget_classes: tuple[int, ...],
    device: torch.device,
    epoch: int,
    *,
    with_selection: bool = True,
    with_rotated: bool = False,
) -> EpochSignals:
    """The student's :class:`EpochSignals` on ``probe`` (eval mode, no gradients).

    Args:
        with_selection: Read the selection sample too (when the probe has one). It costs a
            forward pass over every image of the sample, so the selection reads it only
            where a decision needs it.
        with_rotated: Read the retention term on the rotated forget images too (when the
            probe has them); only a run compared with another BatchNorm policy needs it.
    """
    logits = logits_on(student, probe.forget_inputs, device)
    forget_acc = forget_accuracy(logits, probe.forget_labels)
    reading = selection_reading(student, probe, device) if with_selection else None
    turned = rotated_reading(student, probe, forget_classes, device) if with_rotated else None
    return EpochSignals(
        epoch=epoch,
        forget_acc=forget_acc,
        forgetting=forgetting_term(logits, forget_classes),
        retention=retention_term(logits, probe.teacher_logits, forget_classes),
        agreement=retained_agreement(logits, probe.teacher_logits, forget_classes),
        selection_acc=None if reading is None else reading[0],
        selection_worst_drop=None if reading is None else reading[1],
        rotated_retention=turned,
    )
