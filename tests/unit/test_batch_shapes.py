"""Loaders from outside the project: batches with sample indices, mappings, forget sets
labelled with a class that is kept, and selection samples that hold forget images."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import delete
from delete.errors import DatasetError, InvalidForgetSetError
from delete.repair import repair
from tests.unit._tiny import loader_of, tiny_data, tiny_problem

FIXED = {"device": "cpu", "epochs": 2, "lr": 0.01, "progress": False}


class _Indexed(Dataset[tuple[torch.Tensor, torch.Tensor, int]]):
    """``(image, label, index)``, as datasets that track samples return them."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i], self.labels[i], i


class _Mapping(_Indexed):
    """``{"pixel_values": ..., "labels": ...}``, as Hugging Face-style datasets return them."""

    def __getitem__(self, i: int) -> dict[str, object]:  # type: ignore[override]
        return {"pixel_values": self.images[i], "labels": int(self.labels[i]), "id": f"s{i}"}


def _forget_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = tiny_data()
    return images[labels == 1], labels[labels == 1]


@pytest.mark.parametrize("dataset", [_Indexed, _Mapping])
def test_other_batch_shapes_train_exactly_as_pairs(dataset: type[_Indexed]) -> None:
    model, pairs, _ = tiny_problem()
    images, labels = _forget_tensors()
    expected = delete.unlearn(model, pairs, [1], **FIXED)
    other = DataLoader(dataset(images, labels), batch_size=8, shuffle=False)
    got = delete.unlearn(model, other, [1], **FIXED)
    for key, value in expected.state_dict().items():
        assert torch.equal(got.state_dict()[key], value), key


def test_a_mapping_selection_sample_is_read_by_the_automatic_selection() -> None:
    model, forget, _ = tiny_problem()
    images, labels = tiny_data(seed=1)
    kept = labels != 1
    sample = DataLoader(_Mapping(images[kept], labels[kept]), batch_size=8)
    result = delete.run_unlearning(
        model, forget, [1], device="cpu", progress=False, selection_loader=sample
    )
    assert result.selection is not None
    assert result.selection.selection_size == int(kept.sum())


@pytest.mark.parametrize(
    ("batches", "named"),
    [
        ([(torch.zeros(4, 1, 8, 8),)], "a tuple of 1 item"),
        ([torch.zeros(4, 1, 8, 8)], "a Tensor"),
        ([{"img_path": ["a.png"], "labels": torch.tensor([1])}], "keys ['img_path', 'labels']"),
        ([(["a.png", "b.png"], torch.tensor([1, 1]))], "a non-tensor input"),
    ],
)
def test_a_batch_without_inputs_and_labels_is_refused_in_one_line(
    batches: list[object], named: str
) -> None:
    model, _, _ = tiny_problem()
    with pytest.raises(DatasetError, match="the forget set yields batches") as err:
        delete.unlearn(model, batches, [1], **FIXED)  # type: ignore[arg-type]
    assert named in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("selection", [True, False])
def test_a_dataset_given_where_a_loader_belongs_is_refused(selection: bool) -> None:
    model, _, _ = tiny_problem()
    dataset = TensorDataset(*_forget_tensors())
    hparams = {} if selection else {"epochs": 1, "lr": 0.01}
    with pytest.raises(
        DatasetError, match="yields single samples .* not batches; pass a DataLoader"
    ):
        delete.unlearn(model, dataset, [1], device="cpu", progress=False, **hparams)  # type: ignore[arg-type]


def test_the_selection_refuses_a_forget_set_labelled_with_a_kept_class() -> None:
    model, _, _ = tiny_problem()
    images, labels = _forget_tensors()
    wrong = loader_of(images, torch.full_like(labels, 2))
    with pytest.raises(
        InvalidForgetSetError, match=r"labelled 2, which is not a forget class \(\[1\]\)"
    ):
        delete.unlearn(model, wrong, [1], device="cpu", progress=False)
    mixed = labels.clone()
    mixed[::3] = 3
    with pytest.raises(InvalidForgetSetError, match="labelled 3"):
        delete.unlearn(model, loader_of(images, mixed), [1], device="cpu", progress=False)


def test_a_fixed_setting_trains_on_the_images_whatever_their_labels() -> None:
    # DELETE reads only the images; a fixed run has no labels-based signal to mislead.
    model, _, _ = tiny_problem()
    images, labels = _forget_tensors()
    out = delete.unlearn(model, loader_of(images, torch.full_like(labels, 2)), [1], **FIXED)
    assert out is not model


def test_repair_reads_triples_too() -> None:
    model, forget, retain = tiny_problem()
    unlearned = delete.unlearn(model, forget, [1], **FIXED)
    images, labels = tiny_data(seed=2)
    kept = labels != 1
    triples = DataLoader(_Indexed(images[kept], labels[kept]), batch_size=8)
    forget_triples = DataLoader(_Indexed(*_forget_tensors()), batch_size=8)
    result = repair(unlearned, model, triples, forget_triples, [1], device="cpu")
    assert result.model is not unlearned


def test_a_pair_loader_keeps_the_data_loader_counts() -> None:
    from delete.data import PairLoader
    from delete.methods._common import _num_samples

    loader = DataLoader(TensorDataset(*tiny_data(n=20)), batch_size=8, drop_last=True)
    wrapped = PairLoader(loader, "forget set")
    assert (len(wrapped), _num_samples(wrapped), wrapped.batch_size) == (2, 16, 8)


def test_forget_images_in_the_selection_sample_are_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, forget, _ = tiny_problem()
    images, labels = tiny_data(n=40, seed=1)  # ten images of each of the four classes
    sample = loader_of(images, labels)
    with caplog.at_level("WARNING", logger="delete.selection.signals"):
        result = delete.run_unlearning(
            model, forget, [1], device="cpu", progress=False, selection_loader=sample
        )
    assert result.selection is not None
    assert result.selection.selection_size == 30
    assert "held 10 image(s) of the forget classes [1]" in caplog.text


def test_a_selection_sample_of_forget_images_only_is_refused() -> None:
    model, forget, _ = tiny_problem()
    images, labels = _forget_tensors()
    with pytest.raises(DatasetError, match="holds only images of the forget classes"):
        delete.run_unlearning(
            model,
            forget,
            [1],
            device="cpu",
            progress=False,
            selection_loader=loader_of(images, labels),
        )
