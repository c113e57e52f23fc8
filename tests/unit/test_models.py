"""Model builders (CIFAR ResNet-18, torchvision by name) and the safety of model files."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from delete.checkpoint import load_model, save_model, state_dict_sha256
from delete.errors import CheckpointError, UnknownModelError, UnlearningError
from delete.models import (
    ModelSpec,
    SmallCNN,
    build_model,
    build_torchvision_classifier,
    list_models,
    list_torchvision_classifiers,
    resnet18_cifar,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Several test processes share two cores; more threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resnet18_cifar_has_the_cifar_stem() -> None:
    torch.manual_seed(0)
    model = resnet18_cifar(num_classes=10).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the standard figure
    gray = resnet18_cifar(num_classes=4, in_channels=1).eval()
    assert gray(torch.randn(1, 1, 32, 32)).shape == (1, 4)


def test_resnet18_cifar_is_registered() -> None:
    assert {"small_cnn", "resnet18_cifar"} <= set(list_models())
    model = build_model(ModelSpec("resnet18_cifar", num_classes=7, in_channels=3, image_size=32))
    assert model.fc.out_features == 7


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_classifier_by_name(name: str) -> None:
    torch.manual_seed(0)
    model = build_torchvision_classifier(name, num_classes=5).eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    gray = build_torchvision_classifier(name, num_classes=5, in_channels=1).eval()
    assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    first_conv = next(m for m in gray.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 1
    via_spec = build_model(ModelSpec(f"torchvision:{name}", num_classes=3, in_channels=1))
    assert sum(p.numel() for p in via_spec.parameters()) > 0


def test_torchvision_builder_passes_kwargs() -> None:
    model = build_torchvision_classifier("mobilenet_v3_small", 2, dropout=0.5)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5]


def test_unknown_models_are_clear_errors() -> None:
    assert "resnet18" in list_torchvision_classifiers()
    with pytest.raises(
        UnknownModelError, match="unknown torchvision classifier 'resnet19'"
    ) as info:
        build_torchvision_classifier("resnet19", 10)
    assert "did you mean resnet18" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UnknownModelError, match="fasterrcnn"):
        build_torchvision_classifier("fasterrcnn_resnet50_fpn", 10)  # detection, not classification
    with pytest.raises(UnknownModelError, match="never downloaded"):
        build_torchvision_classifier("resnet18", 10, weights="DEFAULT")
    with pytest.raises(UnknownModelError, match="rejected"):
        build_torchvision_classifier("resnet18", 10, depth=3)
    with pytest.raises(UnknownModelError, match="unknown architecture 'no_such'"):
        build_model(ModelSpec("no_such", num_classes=2))
    with pytest.raises(ValueError):  # still a ValueError, as before
        build_model(ModelSpec("torchvision:no_such", num_classes=2))
    assert issubclass(UnknownModelError, UnlearningError)


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("resnet18_cifar", num_classes=10, in_channels=3, image_size=32),
        ModelSpec("torchvision:mobilenet_v3_small", num_classes=4, in_channels=1, image_size=32),
        ModelSpec("small_cnn", num_classes=3, in_channels=1, image_size=8, kwargs={"width": 8}),
        # MNASNet refuses a state without its modules' format versions (safetensors holds
        # tensors only; the file carries them as metadata).
        ModelSpec("torchvision:mnasnet0_5", num_classes=4, in_channels=1, image_size=32),
    ],
    ids=lambda s: s.arch,
)
def test_model_spec_round_trip(spec: ModelSpec, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(spec).eval()
    path = save_model(model, spec, tmp_path / "model.safetensors")
    loaded, loaded_spec = load_model(path)
    assert loaded_spec == spec and not loaded.training
    assert state_dict_sha256(loaded) == state_dict_sha256(model)
    x = torch.rand(2, spec.in_channels, spec.image_size, spec.image_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class _Planted:
    """Pickles to a call that writes a marker file: what a planted checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_load_model_refuses_a_planted_pickle(tmp_path: Path) -> None:
    proof, marker = tmp_path / "proof", tmp_path / "marker"
    live = tmp_path / "live.pt"
    torch.save({"weight": torch.zeros(1), "x": _Planted(proof)}, live)
    torch.load(live, weights_only=False)  # the payload really runs when unpickled...
    assert proof.exists()

    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1)
    planted = tmp_path / "model.pt"
    state = dict(SmallCNN(10, 1).state_dict())
    torch.save({**state, "features.0.weight": _Planted(marker)}, planted)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_model(planted, spec)
    assert "\n" not in str(info.value)
    disguised = tmp_path / "model.safetensors"  # a pickle renamed to look safe
    disguised.write_bytes(pickle.dumps(_Planted(marker)))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(disguised)
    assert not marker.exists()  # ...but load_model never runs it


def test_weights_only_pt_state_dict_still_loads(tmp_path: Path) -> None:
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1)
    model = SmallCNN(10, 1)
    torch.save(model.state_dict(), tmp_path / "ok.pt")
    loaded, _ = load_model(tmp_path / "ok.pt", spec)
    assert state_dict_sha256(loaded) == state_dict_sha256(model)


def test_truncated_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1)
    path = save_model(SmallCNN(10, 1), spec, tmp_path / "m.safetensors")
    data = path.read_bytes()
    for keep in (len(data) // 2, 6):
        path.write_bytes(data[:keep])
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            load_model(path)


def test_wrong_architecture_is_a_checkpoint_error(tmp_path: Path) -> None:
    spec = ModelSpec("small_cnn", num_classes=10, in_channels=1)
    path = save_model(SmallCNN(10, 1), spec, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="does not fit architecture 'small_cnn'"):
        load_model(path, ModelSpec("small_cnn", num_classes=5, in_channels=1))
    with pytest.raises(CheckpointError, match="does not fit architecture 'resnet18_cifar'"):
        load_model(path, ModelSpec("resnet18_cifar", num_classes=10, in_channels=1))
    odd = save_model(SmallCNN(10, 1), ModelSpec("gone_arch", 10), tmp_path / "odd.safetensors")
    with pytest.raises(CheckpointError, match="unbuildable architecture"):
        load_model(odd)


def test_a_state_without_format_versions_is_a_checkpoint_error(tmp_path: Path) -> None:
    # ``dict(state_dict())`` drops ``_metadata``; MNASNet then raises ValueError, which must
    # reach the user as one CheckpointError line, not a traceback.
    spec = ModelSpec("torchvision:mnasnet0_5", num_classes=4, in_channels=1, image_size=32)
    torch.save(dict(build_model(spec).state_dict()), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="does not fit architecture") as info:
        load_model(tmp_path / "bare.pt", spec)
    assert "\n" not in str(info.value)


def _header(path: Path) -> dict[str, object]:
    """The JSON header of a safetensors file (8 bytes of length, then the header)."""
    import json

    data = path.read_bytes()
    header: dict[str, object] = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return header


def test_a_model_file_carries_one_metadata_key(tmp_path: Path) -> None:
    # safetensors writes its metadata in the order of a Rust hash map, seeded per process: a
    # second key made the same model two different files (two SHA-256) one process in two.
    spec = ModelSpec("torchvision:mnasnet0_5", num_classes=4, in_channels=1, image_size=32)
    path = save_model(build_model(spec), spec, tmp_path / "m.safetensors")
    metadata = _header(path)["__metadata__"]
    assert isinstance(metadata, dict) and len(metadata) == 1, sorted(metadata)


def test_a_file_in_the_two_key_layout_still_loads(tmp_path: Path) -> None:
    """Files written before the one-key layout: spec and module versions under two keys."""
    import json

    from safetensors.torch import save_file

    spec = ModelSpec("torchvision:mnasnet0_5", num_classes=4, in_channels=1, image_size=32)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    state = model.state_dict()
    metadata = {
        "delete.model_spec": json.dumps(spec.to_dict()),
        "delete.module_versions": json.dumps(state._metadata),  # type: ignore[attr-defined]
    }
    old = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(old), metadata=metadata)
    loaded, loaded_spec = load_model(old)  # MNASNet needs the versions from the second key
    assert loaded_spec == spec and state_dict_sha256(loaded) == state_dict_sha256(model)


#: A fresh interpreter: save a seeded MNASNet to ``argv[1]`` and print the file's SHA-256.
_SAVE_ELSEWHERE = """
import sys, torch
from delete.checkpoint import file_sha256, save_model
from delete.models import ModelSpec, build_model
spec = ModelSpec("torchvision:mnasnet0_5", num_classes=4, in_channels=1, image_size=32)
torch.manual_seed(0)
print(file_sha256(save_model(build_model(spec), spec, sys.argv[1])))
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_same_model_is_the_same_file_in_every_process(tmp_path: Path) -> None:
    """What the registry's weights_sha256 relies on. With the metadata order left to each
    process, six interpreters agreed one time in 32."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    digests = {
        subprocess.run(
            [sys.executable, "-c", _SAVE_ELSEWHERE, str(tmp_path / f"{i}.safetensors")],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout.strip()
        for i in range(6)
    }
    assert len(digests) == 1, digests
