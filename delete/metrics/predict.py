"""Model outputs on a dataset, for every metric that reads logits."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from delete._device import resolve_device
from delete.data.lazy_dataset import LazyImageDataset
from delete.data.tensor_dataset import ImageTensorDataset
from delete.metrics._validation import MetricInputError
from delete.metrics.shared import model_state_key, shared
from delete.models.outputs import logits_of
from delete.progress import EpochProgress, has_listeners, report_epoch

__all__ = ["predict"]


def _batches(
    source: Dataset | Iterable[tuple[Tensor, Tensor]], batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    if isinstance(source, LazyImageDataset):
        # Decoded per item: slicing ``.images`` would materialise the whole float tensor again.
        yield from DataLoader(source.with_transform(None), batch_size=batch_size, shuffle=False)
    elif isinstance(source, ImageTensorDataset):
        # No augmentation at evaluation; the tensors are sliced directly (no per-item reads).
        plain = source.with_transform(None)
        for start in range(0, len(plain), batch_size):
            yield plain.images[start : start + batch_size], plain.labels[start : start + batch_size]
    elif isinstance(source, Dataset):
        yield from DataLoader(source, batch_size=batch_size, shuffle=False, num_workers=0)
    else:
        yield from source


#: Tells one evaluation pass's progress events from the next one's.
_passes = itertools.count(1)


def predict(
    model: nn.Module,
    dataset_or_loader: Dataset | Iterable[tuple[Tensor, Tensor]],
    device: str | torch.device = "auto",
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """Run ``model`` in eval mode without gradients over a dataset or a loader.

    Args:
        model: A classifier returning logits ``(N, C)`` (or an output that holds them:
            :func:`~delete.models.outputs.logits_of`). Its train/eval mode and its device
            are restored afterwards.
        dataset_or_loader: An :class:`~delete.data.ImageTensorDataset` (read without its
            augmentation transform), any map-style dataset of ``(image, label)``, or an
            iterable of ``(images, labels)`` batches (used as is).
        device: Where to run (``"auto"`` picks CUDA when present).
        batch_size: Batch size for datasets; ignored for loaders.

    Returns:
        ``(logits, labels)`` on the CPU: float32 ``(N, C)`` and int64 ``(N,)``.

    Raises:
        MetricInputError: The data is empty or ``batch_size`` is not positive.

    Example:
        >>> ds = ImageTensorDataset(torch.zeros(5, 1, 2, 2), torch.tensor([0, 1, 0, 1, 1]))
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> logits, labels = predict(model, ds, device="cpu", batch_size=2)
        >>> tuple(logits.shape), labels.tolist()
        ((5, 3), [0, 1, 0, 1, 1])
    """
    if batch_size < 1:
        raise MetricInputError(f"batch_size must be positive, got {batch_size}")
    dev = resolve_device(device)
    if not isinstance(dataset_or_loader, Dataset):
        return _predict(model, dataset_or_loader, dev, batch_size)
    # A dataset (not a caller's loader, which may yield anything) is predicted once per model
    # state inside delete.metrics.shared_predictions(); the tensors handed out are copies.
    data = dataset_or_loader
    key = ("predict", id(model), model_state_key(model), id(data), batch_size, str(dev))
    logits, labels = shared(key, (model, data), lambda: _predict(model, data, dev, batch_size))
    return logits.clone(), labels.clone()


def _predict(
    model: nn.Module,
    dataset_or_loader: Dataset | Iterable[tuple[Tensor, Tensor]],
    dev: torch.device,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    params = list(model.parameters())
    home = params[0].device if params else dev
    was_training = model.training
    model.to(dev).eval()
    all_logits: list[Tensor] = []
    all_labels: list[Tensor] = []
    batches = _batches(dataset_or_loader, batch_size)
    # Batch progress only for a sized dataset read here (a caller's loader may be anything).
    sized = isinstance(dataset_or_loader, Dataset) and hasattr(dataset_or_loader, "__len__")
    total = -(-len(dataset_or_loader) // batch_size) if sized else 0  # type: ignore[arg-type]
    run = next(_passes)
    try:
        with torch.no_grad():
            for done, (inputs, labels) in enumerate(batches, start=1):
                all_logits.append(logits_of(model(inputs.to(dev))).float().cpu())
                all_labels.append(torch.as_tensor(labels).long().cpu())
                if total > 1 and has_listeners():
                    report_epoch(
                        EpochProgress("evaluate", "evaluate", run, done, total, unit="batches")
                    )
    finally:
        model.to(home).train(was_training)
    if not all_logits or sum(len(x) for x in all_labels) == 0:
        raise MetricInputError("predict() got no samples; the dataset or loader is empty")
    return torch.cat(all_logits), torch.cat(all_labels)
