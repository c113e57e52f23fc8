"""Segmentation scenes composed from real MNIST-5k digits: a CPU-sized stand-in for VOC.

Each scene is a ``canvas_size`` square with two or three real handwritten digits pasted at
random places. Per-pixel labels: 0 = background, ``d + 1`` = digit ``d`` where the digit's
ink (its intensity after resizing) exceeds a threshold. Digits are placed without overlapping
when a free spot is found in a few tries; otherwise the later digit is pasted on top and its
ink wins. Everything is a function of the seed.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor

from delete.applications._mnist import _mnist5k
from delete.applications.segmentation.data import SegmentationBundle, SegmentationTensorDataset
from delete.data import DatasetBundle

__all__ = ["SCENE_CLASS_NAMES", "compose_digit_scenes", "load_mnist_scenes"]

#: Class names of the scene labels: background, then the ten digits.
SCENE_CLASS_NAMES = ["background"] + [str(d) for d in range(10)]

_PLACEMENT_TRIES = 20


def _boxes_overlap(a: tuple[int, int], b: tuple[int, int], side: int) -> bool:
    return abs(a[0] - b[0]) < side and abs(a[1] - b[1]) < side


def compose_digit_scenes(
    digits: Tensor,
    labels: Tensor,
    num_scenes: int,
    *,
    canvas_size: int = 32,
    digit_size: int = 16,
    digits_per_scene: tuple[int, int] = (2, 3),
    ink_threshold: float = 0.5,
    seed: int = 0,
) -> SegmentationTensorDataset:
    """Paste random digits onto blank canvases; label each digit's ink with ``label + 1``.

    Args:
        digits: Grayscale digit images ``(N, 1, h, w)`` in ``[0, 1]``.
        labels: Their classes ``(N,)`` (0..9).
        num_scenes: How many scenes to compose.
        canvas_size: Side of the square scenes.
        digit_size: Side the digits are resized to before pasting.
        digits_per_scene: Inclusive range of the number of digits per scene.
        ink_threshold: Resized intensity above which a pixel belongs to the digit.
        seed: Seed of every random choice (same seed, same scenes).

    Example:
        >>> digits = torch.zeros(2, 1, 8, 8); digits[:, :, 2:6, 2:6] = 1.0
        >>> ds = compose_digit_scenes(digits, torch.tensor([3, 7]), 4, canvas_size=20,
        ...                           digit_size=8, seed=0)
        >>> len(ds), sorted(torch.unique(ds.masks).tolist()) in ([0, 4, 8], [0, 4], [0, 8])
        (4, True)
    """
    lo, hi = digits_per_scene
    if not 1 <= lo <= hi:
        raise ValueError(
            f"digits_per_scene must be (lo, hi) with 1 <= lo <= hi, got {digits_per_scene}"
        )
    if digit_size > canvas_size:
        raise ValueError(f"digit_size {digit_size} exceeds canvas_size {canvas_size}")
    if len(digits) == 0 or len(digits) != len(labels):
        raise ValueError(
            f"need matching, non-empty digits and labels, got {len(digits)}/{len(labels)}"
        )
    resized = F.interpolate(
        digits.float(), size=(digit_size, digit_size), mode="bilinear", antialias=True
    ).clamp(0.0, 1.0)[:, 0]
    ink = resized > ink_threshold
    # Python's RNG: thousands of tiny draws, where torch.randint's per-call overhead adds up.
    rng = random.Random(seed)
    images = torch.zeros(num_scenes, 1, canvas_size, canvas_size)
    masks = torch.zeros(num_scenes, canvas_size, canvas_size, dtype=torch.long)
    label_list = [int(v) + 1 for v in labels.tolist()]
    span = canvas_size - digit_size + 1
    for s in range(num_scenes):
        count = rng.randint(lo, hi)
        picks = [rng.randrange(len(digits)) for _ in range(count)]
        placed: list[tuple[int, int]] = []
        for pick in picks:
            for _ in range(_PLACEMENT_TRIES):
                y, x = rng.randrange(span), rng.randrange(span)
                if not any(_boxes_overlap((y, x), p, digit_size) for p in placed):
                    break
            placed.append((y, x))
            window = (slice(y, y + digit_size), slice(x, x + digit_size))
            images[s, 0][window] = torch.maximum(images[s, 0][window], resized[pick])
            masks[s][window][ink[pick]] = label_list[pick]
    return SegmentationTensorDataset(
        images, masks, [f"scene-{seed}-{i:05d}" for i in range(num_scenes)]
    )


def load_mnist_scenes(
    *,
    num_train: int = 3000,
    num_test: int = 500,
    canvas_size: int = 32,
    digit_size: int = 16,
    digits_per_scene: tuple[int, int] = (2, 3),
    seed: int = 0,
    bundle: DatasetBundle | None = None,
) -> SegmentationBundle:
    """Scenes of real MNIST-5k digits: train scenes from the train split, test from the test split.

    ``bundle``: the labelled digits to compose from (the pipeline's DVC-pinned ones); default
    the bundled MNIST-5k.

    Classes: ``background`` (0) and the digits ``"0"``..``"9"`` (1..10).

    Example:
        >>> b = load_mnist_scenes(num_train=8, num_test=4, seed=1)
        >>> b.num_classes, b.image_shape, len(b.test)
        (11, (1, 32, 32), 4)
    """
    if bundle is None:
        bundle = _mnist5k(seed, False)

    def compose(
        images: Tensor, labels: Tensor, count: int, scene_seed: int
    ) -> SegmentationTensorDataset:
        return compose_digit_scenes(
            images,
            labels,
            count,
            canvas_size=canvas_size,
            digit_size=digit_size,
            digits_per_scene=digits_per_scene,
            seed=scene_seed,
        )

    # Test scenes use test digits only and another seed, so no digit image is in both splits.
    train = compose(bundle.train.images, bundle.train.labels, num_train, seed)
    test = compose(bundle.test.images, bundle.test.labels, num_test, seed + 10_000)
    return SegmentationBundle("mnist-scenes", train, test, list(SCENE_CLASS_NAMES))
