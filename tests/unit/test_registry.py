"""One registry behaviour for methods, models, datasets and tasks.

Each of the four public registration functions is driven through the same contract: a taken
name is refused for another entry with one line naming the name and the entry holding it, the
same entry again changes nothing, and an unknown name lists the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from torch import nn

import delete.applications  # registers the task architectures, so the known lists are fixed
from delete.applications import TASKS, UnknownTaskError, register_task
from delete.data import DatasetBundle, load_dataset, load_mnist5k, register_dataset
from delete.data.registry import _LOADERS
from delete.errors import (
    DatasetError,
    DuplicateRegistrationError,
    UnknownMethodError,
    UnknownModelError,
)
from delete.methods import UnlearningMethod, create_method, register_method
from delete.methods._registry import _REGISTRY
from delete.models import ModelSpec, SmallCNN, build_model, register_model
from delete.models._registry import _BUILDERS
from delete.registry import Registry


class _OtherMethod(UnlearningMethod):
    """A method class that is not the one registered as ``delete``."""


def _other_builder(num_classes: int, in_channels: int) -> nn.Module:
    return nn.Linear(in_channels, num_classes)


def _other_loader() -> DatasetBundle:
    raise AssertionError("never loaded")


@dataclass(frozen=True)
class Case:
    """How one registry is driven through its public functions."""

    register: Callable[[str, Any], Any]
    registry: Registry[Any]
    taken: str  # a built-in name
    holder: str  # how the refusal names the entry holding it
    same: Any  # the built-in entry itself
    other: Any  # something else under the taken name
    lookup: Callable[[str], Any]
    unknown_error: type[Exception]
    unknown_message: str


CASES = {
    "methods": Case(
        register=lambda name, cls: register_method(name)(cls),
        registry=_REGISTRY,
        taken="delete",
        holder="delete.methods.delete.DeleteMethod",
        same=_REGISTRY.get("delete"),
        other=_OtherMethod,
        lookup=create_method,
        unknown_error=UnknownMethodError,
        unknown_message="unknown unlearning method 'nope'; known: bad_teacher, boundary_shrink, "
        "delete, finetune, gradient_ascent, l1_sparse, random_label, retrain, salun, scrub",
    ),
    "models": Case(
        register=lambda name, fn: register_model(name)(fn),
        registry=_BUILDERS,
        taken="small_cnn",
        holder="delete.models.small_cnn.SmallCNN",
        same=SmallCNN,
        other=_other_builder,
        lookup=lambda name: build_model(ModelSpec(name, 2)),
        unknown_error=UnknownModelError,
        unknown_message="unknown architecture 'nope'; known: face_cosine, resnet18_cifar, "
        "small_cnn, tiny_fcn, tiny_unet, torchvision:<name> or package.module:callable",
    ),
    "datasets": Case(
        register=lambda name, fn: register_dataset(name, needs_root=False)(fn),
        registry=_LOADERS,
        taken="mnist5k",
        holder="delete.data.offline.load_mnist5k",
        same=load_mnist5k,
        other=_other_loader,
        lookup=load_dataset,
        unknown_error=DatasetError,
        unknown_message="unknown dataset 'nope'; known: cifar10, cifar100, digits, "
        "imagefolder, mnist5k",
    ),
    "tasks": Case(
        register=lambda name, spec: register_task(replace(spec, name=name)),
        registry=TASKS,
        taken="face",
        holder="TaskSpec('face')",
        same=TASKS.get("face"),
        other=replace(TASKS.get("face"), summary="another face task"),
        lookup=delete.applications.get_task,
        unknown_error=UnknownTaskError,
        unknown_message="unknown task 'nope'; known: backdoor, classification, face, segmentation",
    ),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    chosen = CASES[request.param]
    before = chosen.registry.names()
    yield chosen
    for name in set(chosen.registry.names()) - set(before):
        chosen.registry.unregister(name)  # leave the registry as the other tests expect it


def test_a_taken_name_is_refused_in_one_line_naming_the_holder(case: Case) -> None:
    holder = case.registry.get(case.taken)
    with pytest.raises(DuplicateRegistrationError) as info:
        case.register(case.taken, case.other)
    message = str(info.value)
    assert message == (
        f"{case.registry.kind} {case.taken!r} is already registered as {case.holder}"
    )
    assert "\n" not in message
    assert case.registry.get(case.taken) is holder


def test_the_same_entry_again_changes_nothing(case: Case) -> None:
    before, holder = case.registry.names(), case.registry.get(case.taken)
    case.register(case.taken, case.same)
    assert case.registry.names() == before and case.registry.get(case.taken) is holder


def test_an_unknown_name_lists_the_known_ones_in_one_line(case: Case) -> None:
    with pytest.raises(case.unknown_error) as info:
        case.lookup("nope")
    assert str(info.value) == case.unknown_message


def test_a_new_name_is_registered_and_found(case: Case) -> None:
    case.register("_throwaway", case.other)
    assert "_throwaway" in case.registry.names()
    with pytest.raises(DuplicateRegistrationError, match="'_throwaway' is already registered"):
        case.register("_throwaway", case.same)


def test_the_registry_by_itself() -> None:
    colours: Registry[int] = Registry("colour", KeyError, also_known=("#rrggbb",))
    colours.add("red", 1)
    assert colours.register("blue")(2) == 2
    assert list(colours) == ["blue", "red"] and len(colours) == 2 and "red" in colours
    assert colours.items() == [("blue", 2), ("red", 1)] and colours["red"] == 1
    with pytest.raises(KeyError, match="unknown colour 'green'; known: blue, red, #rrggbb"):
        colours.get("green")
    assert colours.unregister("red") == 1 and colours.names() == ["blue"]
    with pytest.raises(KeyError, match="unknown colour 'red'"):
        colours.unregister("red")
