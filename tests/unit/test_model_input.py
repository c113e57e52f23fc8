"""A model that cannot read the forget images is refused in one line before any training."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

import delete
from delete.errors import IncompatibleInputError, InvalidForgetSetError, InvalidHparamError
from tests.unit._tiny import loader_of


def _forget(channels: int = 3, size: int = 8, n: int = 12, batch: int = 8) -> DataLoader:
    """``n`` random images, all of the forgotten class 2, in batches of ``batch``."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, channels, size, size, generator=g)
    return loader_of(images, torch.full((n,), 2), batch_size=batch)


def _grey_cnn() -> nn.Module:
    """Reads 1-channel 8x8 images, 3 classes."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


class _FixedBatch(nn.Module):
    """A forward written with the batch size of its training loop, as some scripts do."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch
        self.conv = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.conv(x)).view(self.batch, -1))


def _unlearn(model: nn.Module, forget: object, **kwargs: object) -> None:
    delete.unlearn(model, forget, [2], device="cpu", progress=False, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("fixed", [True, False], ids=["fixed-lr", "automatic"])
def test_rgb_images_for_a_greyscale_model_are_refused_by_name(fixed: bool) -> None:
    with pytest.raises(IncompatibleInputError) as info:
        _unlearn(_grey_cnn(), _forget(channels=3), **({"epochs": 1, "lr": 0.01} if fixed else {}))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the model cannot read the forget images")
    assert "(2, 3, 8, 8)" in message and "float32" in message
    assert "channels" in message  # the model's own reason, kept


def test_images_of_another_size_are_refused_by_name() -> None:
    with pytest.raises(IncompatibleInputError, match=r"\(2, 1, 12, 12\).*mat1 and mat2"):
        _unlearn(_grey_cnn(), _forget(channels=1, size=12))


def test_integer_images_are_refused_with_their_dtype() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (6, 1, 8, 8), generator=g, dtype=torch.uint8)
    with pytest.raises(IncompatibleInputError, match="dtype uint8"):
        _unlearn(_grey_cnn(), loader_of(images, torch.full((6,), 2)))


@pytest.mark.parametrize("batch", [1, 4])
def test_a_forward_that_fixes_the_batch_size_is_named(batch: int) -> None:
    with pytest.raises(IncompatibleInputError) as info:
        _unlearn(_FixedBatch(batch), _forget(batch=batch))
    message = str(info.value)
    assert "\n" not in message
    assert f"reads a batch of {batch} image" in message
    assert "but not a batch of 2" in message and "x.flatten(1)" in message


def test_num_classes_that_disagrees_with_the_model_is_refused() -> None:
    with pytest.raises(InvalidHparamError, match="num_classes=5 but the model outputs 3 logits"):
        _unlearn(_grey_cnn(), _forget(channels=1), num_classes=5, epochs=1, lr=0.01)


def test_num_classes_that_agrees_is_accepted() -> None:
    _unlearn(_grey_cnn(), _forget(channels=1), num_classes=3, epochs=1, lr=0.01)


def test_the_model_is_left_in_its_own_mode_after_a_refusal() -> None:
    model = _grey_cnn().train()
    with pytest.raises(IncompatibleInputError):
        _unlearn(model, _forget(channels=3))
    assert model.training


def _any_size_model_and_batches() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A model that pools to any size, and three single-image batches of sizes 8, 10, 12."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(1, 1, s, s, generator=g), torch.tensor([2])) for s in (8, 10, 12)]
    return model, batches


def test_batches_of_single_images_of_different_sizes_still_train() -> None:
    """The sample joins single-image batches; a model that pools to any size still runs."""
    model, batches = _any_size_model_and_batches()
    _unlearn(model, batches, epochs=1, lr=0.01)


def test_the_automatic_selection_refuses_images_of_several_sizes_by_name() -> None:
    """It reads the forget images as one batch every epoch; a fixed run needs no such batch."""
    model, batches = _any_size_model_and_batches()
    with pytest.raises(InvalidForgetSetError) as info:
        _unlearn(model, batches)
    message = str(info.value)
    assert "\n" not in message
    assert "3 shapes ((1, 8, 8), (1, 10, 10), (1, 12, 12))" in message
    assert "lr= and epochs=" in message


def test_a_torch_export_program_with_a_static_batch_is_named() -> None:
    """Exported at a batch of 2, it reads the library's first read and nothing else."""
    model = _grey_cnn().eval()
    program = torch.export.export(model, (torch.rand(2, 1, 8, 8),)).module()
    with pytest.raises(IncompatibleInputError) as info:
        _unlearn(program, _forget(channels=1), epochs=1, lr=0.01)
    message = str(info.value)
    assert "\n" not in message
    assert "reads a batch of 2 images of shape (1, 8, 8) but not a batch of 1" in message


def test_a_torch_export_program_with_a_dynamic_batch_is_unlearned() -> None:
    model = _grey_cnn().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        model, (torch.rand(2, 1, 8, 8),), dynamic_shapes={"input": {0: batch}}
    ).module()
    _unlearn(program, _forget(channels=1), epochs=1, lr=0.01)
