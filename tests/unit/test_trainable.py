"""``MethodConfig.trainable``: restrict unlearning to some parameters, freeze the rest."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import delete
from delete.errors import InvalidHparamError
from delete.methods.base import MethodConfig
from delete.models import SmallCNN


def _model() -> SmallCNN:
    torch.manual_seed(0)
    return SmallCNN(10, 1, width=8)


def _loader(batches: int = 2, size: int = 8, label: int = 3) -> list[tuple[Tensor, Tensor]]:
    """Random 8x8 images, all labelled ``label``: a tiny forget set."""
    g = torch.Generator().manual_seed(1)
    return [
        (torch.rand(size, 1, 8, 8, generator=g), torch.full((size,), label, dtype=torch.long))
        for _ in range(batches)
    ]


def _params(model: nn.Module) -> dict[str, Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _changed(before: dict[str, Tensor], model: nn.Module) -> dict[str, bool]:
    """Which parameters differ from ``before`` (BN running stats are buffers, not compared)."""
    return {name: not torch.equal(before[name], p.detach()) for name, p in model.named_parameters()}


def _run(model: nn.Module, **hparams: object) -> delete.UnlearnResult:
    return delete.run_unlearning(
        model, _loader(), [3], "delete", "cpu", epochs=2, lr=0.05, progress=False, **hparams
    )


def test_trainable_classifier_updates_only_the_head_and_leaves_the_input_alone() -> None:
    model = _model()
    original = _params(model)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}

    result = _run(model, trainable=("classifier",))

    changed = _changed(original, result.model)
    features = [n for n in changed if n.startswith("features.")]
    head = [n for n in changed if n.startswith("classifier.")]
    assert features and head
    assert not any(changed[n] for n in features), [n for n in features if changed[n]]
    assert any(changed[n] for n in head)
    assert result.config.trainable == ("classifier",)
    # The caller's model is never modified: neither its weights nor its requires_grad flags.
    assert not any(_changed(original, model).values())
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


def test_trainable_none_trains_every_layer() -> None:
    model = _model()
    original = _params(model)

    result = _run(model)

    assert result.config.trainable is None
    changed = _changed(original, result.model)
    assert any(changed[n] for n in changed if n.startswith("features."))
    assert any(changed[n] for n in changed if n.startswith("classifier."))


def test_a_layer_prefix_freezes_the_other_layers_of_the_same_block() -> None:
    model = _model()
    original = _params(model)

    result = _run(model, trainable=["features.8"])  # the last conv only

    changed = _changed(original, result.model)
    assert changed["features.8.weight"]
    assert not any(v for n, v in changed.items() if n != "features.8.weight")


def test_a_str_is_normalised_to_a_one_element_tuple() -> None:
    assert MethodConfig(trainable="classifier").trainable == ("classifier",)


def test_a_list_is_normalised_to_a_tuple() -> None:
    config = MethodConfig(trainable=["features.0", "classifier"])
    assert config.trainable == ("features.0", "classifier")
    assert isinstance(config.trainable, tuple)
    assert MethodConfig().trainable is None


@pytest.mark.parametrize("bad", [(), [], "", ("classifier", ""), ("classifier", 3)])
def test_empty_or_non_string_prefixes_are_refused(bad: object) -> None:
    with pytest.raises(InvalidHparamError, match="trainable"):
        MethodConfig(trainable=bad)  # type: ignore[arg-type]


def test_a_prefix_matching_no_parameter_is_refused_by_name() -> None:
    model = _model()
    with pytest.raises(InvalidHparamError) as info:
        _run(model, trainable=("classifier", "backbone"))
    message = str(info.value)
    assert "\n" not in message
    assert "'backbone'" in message
    assert "'classifier'" not in message.split("match no parameter")[0]
    assert "features.0" in message  # lists what the model has


def test_a_prefix_is_matched_at_module_boundaries_not_as_a_substring() -> None:
    with pytest.raises(InvalidHparamError, match="'feat'"):
        _run(_model(), trainable="feat")


def test_retrain_refuses_trainable() -> None:
    from delete.methods import create_method

    with pytest.raises(InvalidHparamError, match="re-initialises every layer"):
        create_method("retrain", trainable=("classifier",))


def test_the_unlearned_model_is_fully_trainable_again() -> None:
    torch.manual_seed(0)
    model = SmallCNN(10, 1, width=8)
    batches = [(torch.rand(4, 1, 8, 8), torch.full((4,), 3))]
    result = delete.run_unlearning(
        model, batches, [3], "delete", "cpu", epochs=1, progress=False, trainable=("classifier",)
    )
    assert all(p.requires_grad for p in result.model.parameters())


def _freeze(model: nn.Module, prefix: str) -> dict[str, bool]:
    """Freeze the parameters under ``prefix`` as a caller would; returns every flag."""
    for name, param in model.named_parameters():
        if name.startswith(prefix + "."):
            param.requires_grad_(False)
    return {name: p.requires_grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("automatic", [False, True], ids=["fixed", "automatic"])
def test_parameters_the_caller_froze_stay_at_the_original(automatic: bool) -> None:
    model = _model()
    flags = _freeze(model, "features")
    original = _params(model)

    if automatic:
        result = delete.run_unlearning(model, _loader(), [3], "delete", "cpu", progress=False)
        assert result.selection is not None
    else:
        result = _run(model)

    changed = _changed(original, result.model)
    assert not any(v for n, v in changed.items() if n.startswith("features.")), changed
    assert any(v for n, v in changed.items() if n.startswith("classifier."))
    # The result carries the caller's flags, and the record says whose choice it was.
    assert {n: p.requires_grad for n, p in result.model.named_parameters()} == flags
    trained = sum(flags.values())
    assert result.runtime["trainable"] == (
        f"{trained} of {len(flags)} parameter tensors: the caller froze the rest "
        "(features.0, features.1, features.4, features.5, features.8, features.9)"
    )


def test_a_model_frozen_for_inference_is_trained_whole_and_handed_back_frozen() -> None:
    model = _model().requires_grad_(False)
    original = _params(model)

    result = _run(model)

    changed = _changed(original, result.model)
    assert any(v for n, v in changed.items() if n.startswith("features."))
    assert any(v for n, v in changed.items() if n.startswith("classifier."))
    assert not any(p.requires_grad for p in result.model.parameters())
    n = len(original)
    assert (
        result.runtime["trainable"] == f"all {n} parameter tensors: the caller had frozen every one"
    )


def test_prefixes_decide_over_the_callers_flags() -> None:
    model = _model()
    flags = _freeze(model, "classifier")
    original = _params(model)

    result = _run(model, trainable=("classifier",))

    changed = _changed(original, result.model)
    assert any(v for n, v in changed.items() if n.startswith("classifier."))
    assert not any(v for n, v in changed.items() if n.startswith("features."))
    assert {n: p.requires_grad for n, p in result.model.named_parameters()} == flags
    assert "trainable" not in result.runtime


def test_an_unfrozen_model_has_no_trainable_note() -> None:
    assert "trainable" not in _run(_model()).runtime


def test_retrain_trains_the_layers_the_caller_froze_since_it_reinitialises_them() -> None:
    model = _model()
    _freeze(model, "features")
    original = _params(model)
    retain = _loader(label=1)

    result = delete.run_unlearning(
        model, _loader(), [3], "retrain", "cpu", retain_loader=retain, epochs=1, progress=False
    )

    changed = _changed(original, result.model)
    assert all(changed.values()), [n for n, v in changed.items() if not v]
    assert "trainable" not in result.runtime


def _bn_stats(model: nn.Module) -> dict[str, Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if "running" in n}


@pytest.mark.parametrize("how", ["caller", "prefixes"])
def test_a_frozen_batchnorm_keeps_its_statistics_under_the_train_mode_policy(how: str) -> None:
    """Forget-only batches would re-estimate them; a frozen layer is left as it was, whole."""
    model = _model()
    if how == "caller":
        _freeze(model, "features")
        hparams: dict[str, object] = {}
    else:
        hparams = {"trainable": ("classifier",)}
    stats = _bn_stats(model)

    result = _run(model, freeze_bn=False, **hparams)

    after = _bn_stats(result.model)
    assert all(torch.equal(stats[n], after[n]) for n in stats), [
        n for n in stats if not torch.equal(stats[n], after[n])
    ]


def test_a_trained_batchnorm_follows_the_train_mode_policy() -> None:
    """The control of the test above: the same run with nothing frozen moves the statistics."""
    model = _model()
    stats = _bn_stats(model)

    after = _bn_stats(_run(model, freeze_bn=False).model)

    assert all(not torch.equal(stats[n], after[n]) for n in stats if "mean" in n)


def test_the_selection_offers_no_train_mode_for_a_frozen_batchnorm() -> None:
    model = _model()
    _freeze(model, "features")
    result = delete.run_unlearning(model, _loader(), [3], "delete", "cpu", progress=False)
    assert result.selection is not None
    tried = [trial.candidate.label for trial in result.selection.trials]
    assert tried and not any("bn=train" in label for label in tried), tried
    assert "train mode" not in result.selection.stop_reason


class _OneByOne(nn.Module):
    """BatchNorm on a 1x1 map, as torchvision's classifiers have at small inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4)
        )
        self.classifier = nn.Linear(4, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))  # type: ignore[no-any-return]


def test_a_batch_of_one_image_trains_on_the_running_statistics() -> None:
    """A forget set of 64k + 1 images ends in a batch of one: under the train-mode policy it
    trains on the running statistics (PyTorch refuses batch statistics of one value)."""
    torch.manual_seed(0)
    model = _OneByOne()
    bn = model.features[2]
    tracked = int(bn.num_batches_tracked)

    result = delete.run_unlearning(
        model,
        _loader(1, 1),
        [3],
        "delete",
        "cpu",
        epochs=2,
        lr=0.05,
        progress=False,
        freeze_bn=False,
    )

    after = result.model.features[2]
    assert result.engine.steps == 2
    assert int(after.num_batches_tracked) == tracked
    assert torch.equal(after.running_mean, bn.running_mean)
    assert not torch.equal(result.model.classifier.weight, model.classifier.weight)
    # The batches of more than one image still re-estimate the statistics.
    mixed = delete.run_unlearning(
        model,
        _loader(1, 8) + _loader(1, 1),
        [3],
        "delete",
        "cpu",
        epochs=1,
        lr=0.05,
        progress=False,
        freeze_bn=False,
    )
    assert int(mixed.model.features[2].num_batches_tracked) == tracked + 1
