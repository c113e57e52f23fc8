"""A request's ``task`` and the pipeline side of the tasks: model tags and task runs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError

from delete.applications import list_tasks
from delete.data import DatasetBundle, ImageTensorDataset
from delete.errors import InvalidClassError
from tasks._common import PipelineError
from tasks.applications import model_task, prepare_task_run
from tasks.requests import DeletionRequest, RequestError, parse_request
from tests.unit._requests import request_fields as _fields

NUM_CLASSES = 10
TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 10


# --- DeletionRequest.task -------------------------------------------------------------------


def test_task_defaults_to_classification() -> None:
    assert DeletionRequest.model_validate(_fields()).task == "classification"
    assert parse_request(_fields()).to_json_dict()["task"] == "classification"


@pytest.mark.parametrize("task", ["classification", "face", "backdoor", "segmentation"])
def test_every_registered_task_is_accepted(task: str) -> None:
    assert DeletionRequest.model_validate(_fields(task=task)).task == task


def test_an_unknown_task_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValidationError) as info:
        DeletionRequest.model_validate(_fields(task="ocr"))
    text = str(info.value)
    assert "unknown task 'ocr'" in text
    for known in list_tasks():
        assert known in text
    with pytest.raises(RequestError) as wrapped:
        parse_request(_fields(task="ocr"), "req.yaml")
    message = str(wrapped.value)
    assert message.startswith("req.yaml: field 'task': unknown task 'ocr'")
    assert "\n" not in message


@pytest.mark.parametrize("value", [3, None, ["face"], True])
def test_a_non_string_task_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="task"):
        DeletionRequest.model_validate(_fields(task=value))


def test_a_task_is_case_sensitive() -> None:
    with pytest.raises(ValidationError, match="unknown task"):
        DeletionRequest.model_validate(_fields(task="Face"))


def test_the_task_is_part_of_the_content_hash() -> None:
    face = parse_request(_fields(task="face"))
    backdoor = parse_request(_fields(task="backdoor"))
    assert face.content_hash() != backdoor.content_hash()
    assert face.content_hash() == parse_request(_fields(task="face")).content_hash()


# --- model_task -----------------------------------------------------------------------------


def test_model_without_tags_is_a_classification_model() -> None:
    assert model_task({}) == ("classification", {})
    assert model_task({"task": "face"}) == ("face", {})
    assert model_task({"task": "face", "task.options": ""}) == ("face", {})


def test_model_task_options_are_parsed_from_json() -> None:
    tags = {"task": "backdoor", "task.options": '{"target": 3, "poison_rate": 0.1}'}
    assert model_task(tags) == ("backdoor", {"target": 3, "poison_rate": 0.1})


@pytest.mark.parametrize("raw", ["[1, 2]", "3", '"target"', "null"])
def test_model_task_options_must_be_a_json_object(raw: str) -> None:
    with pytest.raises(PipelineError, match="task.options"):
        model_task({"task": "backdoor", "task.options": raw})


# --- prepare_task_run -----------------------------------------------------------------------


def _split(per_class: int, seed: int) -> ImageTensorDataset:
    """28x28 noise with a bright square (so scene composition finds ink), classes interleaved."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(NUM_CLASSES * per_class) % NUM_CLASSES
    labels = labels[torch.randperm(len(labels), generator=g)]
    images = 0.3 * torch.rand(len(labels), 1, 28, 28, generator=g)
    images[:, :, 8:20, 8:20] = 1.0
    return ImageTensorDataset(
        images, labels, sample_ids=[f"s{seed}-{i}" for i in range(len(labels))]
    )


@pytest.fixture(scope="module")
def bundle() -> DatasetBundle:
    return DatasetBundle(
        "tiny-digits",
        _split(TRAIN_PER_CLASS, 0),
        _split(TEST_PER_CLASS, 1),
        [str(d) for d in range(NUM_CLASSES)],
    )


def _labels(dataset: Any) -> torch.Tensor:
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


def _train_indices_of(bundle: DatasetBundle, label: int) -> list[int]:
    return torch.nonzero(bundle.train.labels == label).flatten().tolist()


def test_face_forgets_an_identity_by_name(bundle: DatasetBundle) -> None:
    run = prepare_task_run("face", bundle, {}, ["id-3"])
    assert run.forget_classes == (3,)
    assert run.class_names == [f"id-{d}" for d in range(NUM_CLASSES)]
    assert run.num_classes == NUM_CLASSES
    forget_labels = _labels(run.forget_set)
    assert len(forget_labels) == TRAIN_PER_CLASS
    assert set(forget_labels.tolist()) == {3}
    assert 3 not in set(_labels(run.retain_set).tolist())
    assert len(run.forget_set) + len(run.retain_set) == len(bundle.train)
    assert run.manifest_indices == _train_indices_of(bundle, 3)


def test_face_refuses_an_unknown_identity(bundle: DatasetBundle) -> None:
    with pytest.raises(InvalidClassError, match="id-42"):
        prepare_task_run("face", bundle, {}, ["id-42"])


BACKDOOR = {"target": 0, "poison_rate": 0.1, "known_fraction": 0.05}


def test_backdoor_forgets_the_target_on_the_known_poisoned_samples(bundle: DatasetBundle) -> None:
    run = prepare_task_run("backdoor", bundle, BACKDOOR, [0])
    assert run.forget_classes == (0,)
    assert run.options == BACKDOOR
    expected_known = round(0.05 * len(bundle.train))
    assert len(run.manifest_indices) == len(run.forget_set) == expected_known
    assert len(run.retain_set) == len(bundle.train) - expected_known
    # The known samples are poisoned ones: relabelled to the target, truly of another class.
    assert set(_labels(run.forget_set).tolist()) == {0}
    assert bool((bundle.train.labels[run.manifest_indices] != 0).all())
    assert run.manifest_indices == sorted(set(run.manifest_indices))
    assert set(run.manifest_indices) <= set(run.data.poisoned.poisoned.tolist())
    # Each index points at the same image in the bundle and (triggered) in the forget set.
    forget_ids = [run.forget_set.sample_ids[i] for i in range(len(run.forget_set))]
    assert forget_ids == [bundle.train.sample_ids[i] for i in run.manifest_indices]


@pytest.mark.parametrize("requested", [[1], [0, 1], ["1"]])
def test_backdoor_refuses_anything_but_the_target(
    bundle: DatasetBundle, requested: list[int | str]
) -> None:
    with pytest.raises(InvalidClassError, match="target label 0"):
        prepare_task_run("backdoor", bundle, BACKDOOR, requested)


SEGMENTATION = {"num_train": 20, "num_test": 8}


def test_segmentation_forgets_a_digit_class_by_name(bundle: DatasetBundle) -> None:
    run = prepare_task_run("segmentation", bundle, SEGMENTATION, ["3"])
    assert run.forget_classes == (4,)  # class 0 is the background, digit d is d + 1
    assert run.class_names[0] == "background"
    assert run.class_names[4] == "3"
    assert len(run.data.train) == 20
    assert len(run.data.test) == 8
    assert len(run.forget_set) + len(run.retain_set) == 20
    assert len(run.forget_set) > 0
    for i in range(len(run.forget_set)):
        assert bool((run.forget_set[i][1] == 4).any())
    assert run.manifest_indices == _train_indices_of(bundle, 3)


@pytest.mark.parametrize("requested", [["background"], [0], ["background", "3"]])
def test_segmentation_refuses_to_forget_the_background(
    bundle: DatasetBundle, requested: list[int | str]
) -> None:
    with pytest.raises(InvalidClassError, match="background"):
        prepare_task_run("segmentation", bundle, SEGMENTATION, requested)


def test_an_unknown_task_is_refused(bundle: DatasetBundle) -> None:
    with pytest.raises(KeyError, match="ocr"):
        prepare_task_run("ocr", bundle, {}, [3])


def test_the_shipped_example_requests_parse() -> None:
    from pathlib import Path

    from tasks.requests import load_request

    examples = sorted((Path(__file__).parents[2] / "requests" / "examples").glob("*.yaml"))
    tasks = {load_request(str(path)).task for path in examples}
    assert tasks == {"classification", "face", "backdoor", "segmentation"}


def test_task_requests_use_the_task_recipe_and_batch_size() -> None:
    from delete.applications import get_task
    from flows.unlearn import _method_hparams

    face = _method_hparams("delete", "mnist5k-identities", {}, "face")
    assert face == {**get_task("face").delete_hparams, "batch_size": 16}
    assert _method_hparams("delete", "x", {"epochs": 2}, "backdoor")["epochs"] == 2
    assert _method_hparams("finetune", "x", {}, "segmentation") == {"batch_size": 32}


def test_registry_listing_shows_creation_times_in_iso_utc() -> None:
    from tasks.registry import _iso_utc

    assert _iso_utc(0) == "1970-01-01T00:00:00+00:00"
    assert _iso_utc(None) is None
