"""Identity datasets for face unlearning.

* Your own faces: an ImageFolder tree, one folder per identity (``root/<identity>/<image>``),
  read with torchvision's ImageFolder rules (sorted folder names are the identities).
* Offline stand-in: no face dataset can be downloaded where this library is tested, so the
  tests and the benchmark treat the ten classes of the real MNIST-5k images as ten
  *identities*. The pipeline (embedding + cosine identity head, verification by cosine
  similarity) is exactly the one used for faces; only the images differ.
"""

from __future__ import annotations

import os

from delete.applications._mnist import _mnist5k
from delete.data import DatasetBundle, load_image_folder

__all__ = ["load_face_data", "load_identity_folder", "load_mnist_identities"]


def load_identity_folder(
    root: str | os.PathLike[str],
    image_size: int = 64,
    *,
    grayscale: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    augment: bool = True,
) -> DatasetBundle:
    """Face images in identity folders, decoded into memory, split per identity.

    Args:
        root: ``root/<identity>/<image>`` (or ``root/train/...`` and ``root/test/...``).
        image_size: Every image is resized to ``image_size x image_size``.
        grayscale: Decode to one channel instead of RGB.
        test_fraction: Per-identity held-out fraction (the test split is the verification set:
            half of each identity's test images are its gallery, the rest its probes).
        seed: Seed of the split.
        augment: Random crop + horizontal flip on the train split.

    Raises:
        DatasetError: Missing folder, no identity folders or no images.

    Example:
        >>> load_identity_folder("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        delete.errors.DatasetError: image folder /nonexistent does not exist: ...
    """
    return load_image_folder(
        root,
        image_size,
        test_fraction=test_fraction,
        seed=seed,
        augment=augment,
        grayscale=grayscale,
        in_memory=True,
        name="faces",
    )


def load_mnist_identities(*, seed: int = 0, augment: bool = True) -> DatasetBundle:
    """The real MNIST-5k digits as ten stand-in identities ``id-0`` .. ``id-9``.

    No face dataset can be fetched offline, so tests and the benchmark use the digit classes
    as identities (400 training and 100 test images each).

    Example:
        >>> bundle = load_mnist_identities(augment=False)
        >>> bundle.class_names[:2], len(bundle.train), len(bundle.test)
        (['id-0', 'id-1'], 4000, 1000)
    """
    bundle = _mnist5k(seed, augment)
    names = [f"id-{i}" for i in range(bundle.num_classes)]
    return DatasetBundle("mnist5k-identities", bundle.train, bundle.test, names)


def load_face_data(
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int = 64,
    grayscale: bool = False,
    seed: int = 0,
    augment: bool = True,
    bundle: DatasetBundle | None = None,
) -> DatasetBundle:
    """Identity folders under ``root``; without ``root``, MNIST-5k digits as ten identities.

    ``bundle``: an already-loaded labelled dataset whose classes are the identities (the
    pipeline's DVC-pinned data); the demo's digit classes are named ``id-<digit>``, a team's
    identity folders keep their names. ``root`` and ``augment`` are then unused.

    Example:
        >>> load_face_data(augment=False).class_names[3]
        'id-3'
    """
    if bundle is not None:
        digits = all(name.isdigit() for name in bundle.class_names)
        names = [f"id-{name}" if digits else name for name in bundle.class_names]
        return DatasetBundle(f"{bundle.name}-identities", bundle.train, bundle.test, names)
    if root is None:
        return load_mnist_identities(seed=seed, augment=augment)
    return load_identity_folder(root, image_size, grayscale=grayscale, seed=seed, augment=augment)
