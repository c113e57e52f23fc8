"""Images of the kept classes inverted from the original model alone (no retained data).

With forget data only, every signal the selection reads lives on the forget images, and a
model can drift on the kept classes while all of them keep improving: a small DenseNet-BC
(AdamW, ``docs/bench/outside_models.py``), digit 5, lost 1.2 points at epoch 6 and 9.6 at
epoch 22 while DELETE's retention term on the forget images fell from 0.48 to 0.06 (on forget
images held out of training too) and the top-1 agreement with the teacher rose. Images the
original assigns to the kept classes, synthesised from its weights as DeepInversion does
(Yin et al., CVPR 2020: cross-entropy towards a class, the BatchNorm layers' running
statistics as a prior, and a total-variation prior), follow that drift: the student's
accuracy on 72 of them read 100 % at epochs 6-9 and 90.3 % at epoch 22. The selection reads
them, never trains on them (``SelectionConfig.synthetic_rerun_drop``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["other_classes", "synthesize"]


def _bn_prior(model: nn.Module, penalties: list[Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that append, for every BatchNorm layer with running statistics, how far the
    batch's statistics at its input sit from them (the DeepInversion prior)."""

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], _: Tensor) -> None:
        x = inputs[0]
        dims = [d for d in range(x.dim()) if d != 1]
        # E[x^2] - E[x]^2: ``Tensor.var`` over (N, H, W) of an NCHW tensor took 4.5 ms where
        # two means take 0.5 (48 x 16 x 28 x 28, one thread), half the SmallCNN's inversion.
        mean = x.mean(dims)
        var = ((x * x).mean(dims) - mean * mean).clamp(min=0)
        assert isinstance(module, nn.modules.batchnorm._BatchNorm)
        running_mean, running_var = module.running_mean, module.running_var
        assert running_mean is not None and running_var is not None
        penalties.append((mean - running_mean).norm() + (var - running_var).norm())

    return [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]


def _total_variation(x: Tensor) -> Tensor:
    """Mean absolute difference between neighbouring pixels (0 for inputs that are not images).

    Example:
        >>> float(_total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])))
        1.0
    """
    if x.dim() < 4:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (
        x[..., :, 1:] - x[..., :, :-1]
    ).abs().mean()


def _targets(kept: list[int], count: int, generator: torch.Generator) -> Tensor:
    """``count`` class indices spread evenly over ``kept`` (a seeded subset of the classes
    when there are more classes than images).

    Example:
        >>> _targets([0, 2, 3], 7, torch.Generator().manual_seed(0)).tolist()
        [0, 2, 3, 0, 2, 3, 0]
    """
    classes = torch.tensor(kept)
    if len(kept) > count:
        classes = classes[torch.randperm(len(kept), generator=generator)[:count]].sort().values
    return classes.repeat(count // len(classes) + 1)[:count]


def other_classes(
    original: nn.Module, images: Tensor, kept: list[int], device: torch.device, *, seed: int = 0
) -> Tensor:
    """For each image, a seeded kept class other than the one ``original`` ranks first among
    ``kept`` (the class DELETE trains a forget image towards); that class itself when only one
    is kept.

    Example:
        >>> net = nn.Linear(4, 4, bias=False)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.eye(4))
        >>> x = torch.eye(4)[[0, 1]]  # the net ranks class 0 first for one, class 1 for the other
        >>> targets = other_classes(net, x, [0, 1, 2], torch.device("cpu")).tolist()
        >>> [t != first for t, first in zip(targets, [0, 1])], set(targets) <= {0, 1, 2}
        ([True, True], True)
    """
    with torch.no_grad():
        logits = original(images.to(device)).float().cpu()
    classes = torch.tensor(kept)
    first = logits[:, classes].argmax(1)  # an index into ``kept``
    if len(kept) < 2:
        return classes[first]
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, len(kept), (len(images),), generator=generator)
    return classes[(first + shift) % len(kept)]


def synthesize(
    original: nn.Module,
    like: Tensor,
    kept: list[int],
    device: torch.device,
    *,
    count: int = 48,
    steps: int = 40,
    lr: float = 0.1,
    min_confidence: float = 0.9,
    seed: int = 0,
    label_smoothing: float = 0.0,
    start: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Up to ``count`` inputs that ``original`` assigns to the ``kept`` classes, optimised
    from noise inside the value range of ``like`` (the forget images, per channel), and the
    classes it assigns them (its argmax; images it puts in no kept class, or with less than
    ``min_confidence``, are left out).

    Gradients flow to the inputs only: the model's weights, buffers and mode are unchanged.

    Args:
        original: The model before unlearning (eval mode).
        like: Real inputs (the forget images): their shape and value range.
        kept: The classes to synthesise.
        device: Where to run.
        count: How many images (spread evenly over ``kept``).
        steps: Adam steps on the images. Stopping them once 90 % of the images were
            confident (about 25 steps on the SmallCNN) left them less converged, and the
            rerun they guide kept a DenseNet 3.56 points down instead of 2.67.
        lr: Adam's step size (on the images' logits).
        min_confidence: Keep only images ``original`` assigns to a kept class with at least
            this probability. A soft model's images sit near its decision boundaries, where
            any training flips them: an under-trained ShuffleNetV2 (mean 0.50-0.64 on its
            images) read a state that lost 0.4 points 20 points short on all of them, and
            0.0 on the few it held at 0.9 or more.
        seed: Seeds the starting noise.
        label_smoothing: Of the cross-entropy towards each image's class; 0 (the guard's)
            drives the images to saturation. ``docs/bench/soft_inverted_images.py`` tries
            softer targets; :func:`~delete.selection.auto._soft_check` carries forget
            images into :func:`other_classes` towards 0.111.
        start: Images to start from instead of noise and the classes to carry them
            towards: the forget images and :func:`other_classes` for the soft check
            (``count`` and ``seed`` are then unused).

    Returns:
        The images (on the CPU, ``like``'s dtype) and their labels.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
        >>> x, y = synthesize(net, torch.rand(5, 1, 2, 2), [1, 2], torch.device("cpu"), count=6,
        ...                   min_confidence=0.5)
        >>> x.shape[1:], bool((net(x).argmax(1) == y).all()), bool(set(y.tolist()) <= {1, 2})
        (torch.Size([1, 2, 2]), True, True)
    """
    generator = torch.Generator().manual_seed(seed)
    real = like.float()
    dims = [d for d in range(real.dim()) if d != 1] if real.dim() > 1 else [0]
    low, high = real.amin(dim=dims, keepdim=True), real.amax(dim=dims, keepdim=True)
    span = (high - low).clamp(min=1e-6)
    if start is not None:  # given images (real, or another inversion's) towards given classes
        images, target = start
        z = torch.logit(((images.float() - low) / span).clamp(1e-4, 1 - 1e-4))
    else:
        target = _targets(kept, count, generator)
        # Near the forget images' mean (inside the range), with noise that breaks symmetry.
        mean = ((real.mean(dim=0, keepdim=True) - low) / span).clamp(0.05, 0.95)
        noise = torch.randn((count, *real.shape[1:]), generator=generator)
        z = torch.logit(mean) + 0.5 * noise
    z = z.to(device).requires_grad_(True)
    low, span, y = low.to(device), span.to(device), target.to(device)
    penalties: list[Tensor] = []
    hooks = _bn_prior(original, penalties)
    optimizer = torch.optim.Adam([z], lr=lr)
    try:
        for _ in range(steps):
            penalties.clear()
            x = low + span * torch.sigmoid(z)
            loss = F.cross_entropy(
                original(x).float(), y, label_smoothing=label_smoothing
            ) + 1e-3 * _total_variation(x)
            if penalties:
                loss = loss + torch.stack(penalties).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=[z])  # the pixels only: the model's weights get no grad
            optimizer.step()
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        x = low + span * torch.sigmoid(z)
        probs = F.softmax(original(x).float(), dim=1)
    confidence, assigned = probs.max(1)
    inside = torch.isin(assigned, torch.tensor(kept, device=assigned.device))
    inside &= confidence >= min_confidence
    return x[inside].detach().to("cpu", like.dtype), assigned[inside].to("cpu")
