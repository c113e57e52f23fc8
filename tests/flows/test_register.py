"""A team's own model and dataset: ``unlearn register`` -> ``submit`` -> ``process``.

A torchvision ResNet-18 is trained for a few steps in the test on a small generated RGB
ImageFolder (non-square 40x30 PNG and JPEG images, resized to 32 by the card's preprocess),
registered from a model card, then made to forget one class named by its folder name. Bad
cards are each refused in one line with nothing registered and nothing versioned.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.flows.conftest import LENIENT_GATES, init_project_root, write_request

CLASSES = ("cls-a", "cls-b", "cls-c")
N_TRAIN, N_TEST = 10, 5
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NAME = "shapes-resnet18"
CARD = f"""\
name: {NAME}
architecture: torchvision:resnet18
architecture_kwargs: {{num_classes: 3}}
weights: incoming/shapes.safetensors
dataset: datasets/shapes
preprocess: {{channels: 3, size: 32, mean: {list(MEAN)}, std: {list(STD)}}}
task: classification
"""


@pytest.fixture(autouse=True)
def _store_of_each_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here has its own project root: MLflow's ``set_tracking_uri`` exports
    ``MLFLOW_TRACKING_URI``, which would send the next root's CLI to the previous root's store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _cli(root: Path, *args: str) -> tuple[int, str, str]:
    from flows.cli import app

    result = CliRunner().invoke(app, ["--root", str(root), *args])
    return result.exit_code, result.stdout, result.stderr


def _image(label: int, index: int) -> np.ndarray:
    """A 30x40 (H x W) RGB image whose dominant channel is the class (easy to learn)."""
    rng = np.random.default_rng(1000 * label + index)
    pixels = rng.integers(0, 90, size=(30, 40, 3))
    pixels[..., label % 3] += 150
    return pixels.clip(0, 255).astype(np.uint8)


def make_image_folder(
    directory: Path, classes: tuple[str, ...] = CLASSES, test_classes: tuple[str, ...] = CLASSES
) -> Path:
    """``train/<class>/*`` and ``test/<class>/*``: PNG and JPEG files, 40 wide by 30 high."""
    from PIL import Image

    for split, names, count in (("train", classes, N_TRAIN), ("test", test_classes, N_TEST)):
        for name in names:
            label = CLASSES.index(name) if name in CLASSES else len(CLASSES)
            folder = directory / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                suffix = "png" if i % 2 == 0 else "jpg"
                offset = 0 if split == "train" else 100
                Image.fromarray(_image(label, i + offset)).save(folder / f"{name}-{i:03d}.{suffix}")
    return directory


def train_weights(dataset: Path, target: Path, num_classes: int = 3, steps: int = 12) -> Path:
    """A ResNet-18 trained briefly on the preprocessed folder, saved as a bare state_dict."""
    from safetensors.torch import save_file

    from delete.data import load_image_folder
    from delete.models import build_torchvision_classifier
    from delete.training import make_loader

    torch.manual_seed(0)
    bundle = load_image_folder(
        dataset / "train", 32, test_root=dataset / "test", augment=False, mean=MEAN, std=STD
    )
    model = build_torchvision_classifier("resnet18", num_classes)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = make_loader(bundle.train, 10, shuffle=True, seed=0)
    model.train()
    done = 0
    while done < steps:
        for images, labels in loader:
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimiser.step()
            done += 1
            if done == steps:
                break
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.eval().state_dict().items()}
    if target.suffix == ".safetensors":
        save_file(state, str(target))
    else:
        torch.save(state, target)
    return target


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Trained weights (3 classes) and wrong-shaped ones (5 classes), made once."""
    base = tmp_path_factory.mktemp("weights")
    data = make_image_folder(base / "data")
    return {
        "good": train_weights(data, base / "shapes.safetensors"),
        "five_classes": train_weights(data, base / "five.safetensors", num_classes=5, steps=1),
    }


def new_root(base: Path, weights: Path | None = None, card: str = CARD) -> Path:
    """A project root with the dataset, the incoming weights and ``card.yaml``."""
    base.mkdir(parents=True, exist_ok=True)
    root = init_project_root(base, LENIENT_GATES)
    make_image_folder(root / "datasets" / "shapes")
    if weights is not None:
        (root / "incoming").mkdir(exist_ok=True)
        (root / "incoming" / "shapes.safetensors").write_bytes(weights.read_bytes())
    (root / "card.yaml").write_text(card)
    return root


# --- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory, weights_cache: dict[str, Path]
) -> dict[str, Any]:
    """register -> submit -> process on one project root, through the CLI."""
    import os

    from tasks.settings import PipelineSettings

    os.environ.pop("MLFLOW_TRACKING_URI", None)  # see _store_of_each_root

    root = new_root(tmp_path_factory.mktemp("team-root"), weights_cache["good"])
    registered = _cli(root, "register", str(root / "card.yaml"))
    request = write_request(
        root / "forget-b.yaml",
        "forget-cls-b",
        model=f"{NAME}@champion",
        forget_classes='["cls-b"]',
        hparams="{epochs: 2, lr: 0.001}",
    )
    submitted = _cli(root, "submit", str(request))
    processed = _cli(root, "process", "--json")
    return {
        "root": root,
        "settings": PipelineSettings.from_env(root),
        "register": registered,
        "submit": submitted,
        "process": processed,
    }


@pytest.mark.slow
def test_register_tags_version_one_champion(pipeline: dict[str, Any]) -> None:
    from delete.checkpoint import file_sha256
    from tasks.registry import CHAMPION, ModelRegistry

    code, out, err = pipeline["register"]
    assert code == 0, err
    assert out.startswith(f"{NAME} version 1 registered @champion"), out
    root, settings = pipeline["root"], pipeline["settings"]
    assert ModelRegistry.of(settings).get_alias(NAME, CHAMPION) in (
        1,
        2,
    )  # 2 once the request passed its gates
    tags = ModelRegistry.of(settings).version_tags(NAME, 1)
    dvc_md5 = (root / "datasets" / "shapes.dvc").read_text().split("md5: ")[1].split()[0]
    assert tags["architecture"] == "torchvision:resnet18"
    assert json.loads(tags["architecture.kwargs"]) == {"num_classes": 3}
    assert tags["weights.source_sha256"] == file_sha256(root / "incoming" / "shapes.safetensors")
    assert tags["dataset.path"] == "datasets/shapes"
    assert tags["dataset.dvc_md5"] == tags["data.dvc_md5"] == dvc_md5
    assert json.loads(tags["preprocess"]) == {
        "channels": 3,
        "size": 32,
        "mean": list(MEAN),
        "std": list(STD),
    }
    assert json.loads(tags["class_names"]) == list(CLASSES)
    assert tags["task"] == "classification" and tags["request_id"] == "register"
    assert tags["pipeline.complete"] == "true" and tags["gate.verdict"] == "n/a"
    # the task's own evaluation of an original model: every class retained, per-class in the run
    assert 0.0 <= float(tags["metric.acc_retain"]) <= 100.0
    assert not any("/" in t for t in tags)  # per-class values are not tags
    spec = json.loads(tags["model.spec"])
    assert spec["arch"] == "torchvision:resnet18" and spec["image_size"] == 32
    assert "num_classes" not in spec["kwargs"]  # the builder gets it from the dataset
    remote = root / "dvc-remote" / "files" / "md5" / dvc_md5[:2] / dvc_md5[2:]
    assert remote.is_file(), "the dataset's DVC directory object was not pushed"


def _normalised(path: Path) -> np.ndarray:
    """The card's preprocessing written out by hand: RGB, 32x32 bilinear, /255, (x-mean)/std."""
    from PIL import Image

    with Image.open(path) as img:
        pixels = np.asarray(img.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    scaled = pixels.astype(np.float32).transpose(2, 0, 1) / 255.0
    return (scaled - np.array(MEAN, np.float32)[:, None, None]) / np.array(STD, np.float32)[
        :, None, None
    ]


@pytest.mark.slow
def test_registered_onnx_matches_torch_on_normalised_images(pipeline: dict[str, Any]) -> None:
    import mlflow
    import onnxruntime as ort

    from delete.checkpoint import load_model
    from delete.models import ModelSpec
    from tasks.image_dataset import read_image_folder
    from tasks.model_card import Preprocess
    from tasks.registry import ModelRegistry

    root, settings = pipeline["root"], pipeline["settings"]
    assert pipeline["register"][0] == 0
    source = ModelRegistry.of(settings).client.get_model_version_download_uri(NAME, "1")
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{source}/model.onnx",
        dst_path=str(root / "onnx-check"),
        tracking_uri=settings.mlflow_tracking_uri,
    )
    preprocess = Preprocess(channels=3, size=32, mean=MEAN, std=STD)
    bundle = read_image_folder(root / "datasets" / "shapes", preprocess, "check")
    files = sorted((root / "datasets" / "shapes" / "test").rglob("*.*"))
    by_hand = np.stack([_normalised(f) for f in files])
    images = torch.stack([bundle.test[i][0] for i in range(len(bundle.test))])
    assert [Path(p).name for p in bundle.test.paths] == [f.name for f in files]
    # the dataset hands the model exactly the normalised tensor the card describes
    np.testing.assert_allclose(images.numpy(), by_hand, atol=1e-5)
    spec = ModelSpec("torchvision:resnet18", num_classes=3, in_channels=3, image_size=32)
    model, _ = load_model(root / "incoming" / "shapes.safetensors", spec)
    session = ort.InferenceSession(local, providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: by_hand})
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(by_hand)).numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4, rtol=1e-3)


@pytest.mark.slow
def test_request_by_folder_name_forgets_only_that_class(pipeline: dict[str, Any]) -> None:
    from tasks.audit import read_request_record
    from tasks.registry import ModelRegistry

    root, settings = pipeline["root"], pipeline["settings"]
    assert pipeline["submit"][0] == 0, pipeline["submit"][2]
    code, out, err = pipeline["process"]
    assert code == 0, (out, err)
    (result,) = json.loads(out)
    assert result["state"] == "done" and result["version"] == 2, result
    record = read_request_record(settings, "forget-cls-b")
    assert record["request"]["forget_classes"] == ["cls-b"]
    assert record["forget_classes"] == [1] and record["forget_class_names"] == ["cls-b"]
    assert (
        record["data_version"]["md5"]
        == ModelRegistry.of(settings).version_tags(NAME, 1)["dataset.dvc_md5"]
    )
    manifest = root / "forget_sets" / "forget-cls-b" / "manifest.csv"
    rows = list(csv.DictReader(manifest.open()))
    assert len(rows) == N_TRAIN
    assert {Path(r["file"]).parent.as_posix() for r in rows} == {"datasets/shapes/train/cls-b"}
    assert {r["label"] for r in rows} == {"1"}
    for row in rows:
        digest = hashlib.sha256((root / row["file"]).read_bytes()).hexdigest()
        assert digest == row["sha256"]
    tags = ModelRegistry.of(settings).version_tags(NAME, 2)
    # the new version carries the data and architecture on, for the next request against it
    assert tags["dataset.path"] == "datasets/shapes" and tags["forget_classes"] == "[1]"
    assert tags["parent.version"] == "1"
    assert json.loads(tags["method.hparams"])["epochs"] == 2
    code, out, err = _cli(root, "audit", "certificate", "forget-cls-b")
    assert code == 0 and "forget-cls-b" in out, err


# --- refusals -------------------------------------------------------------------------------


def _assert_refused(root: Path, needle: str, *, marker: Path | None = None) -> str:
    from tasks.registry import ModelRegistry
    from tasks.settings import PipelineSettings

    code, _, err = _cli(root, "register", str(root / "card.yaml"))
    if marker is not None:
        assert not marker.exists(), "the pickle payload ran"
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (root / "mlflow" / "mlflow.db").exists(), "refused, yet an MLflow store was made"
    assert ModelRegistry.of(PipelineSettings.from_env(root)).list_versions() == []
    assert not (root / "datasets" / "shapes.dvc").exists(), "refused, yet the data was versioned"
    assert not (root / "artifacts" / "register").exists()
    return lines[0]


def test_refuses_card_without_a_required_key(tmp_path: Path) -> None:
    card = "\n".join(line for line in CARD.splitlines() if not line.startswith("dataset:"))
    root = new_root(tmp_path, None, card + "\n")
    _assert_refused(root, "card.yaml: missing required key 'dataset'")


def test_refuses_card_with_an_unknown_key(tmp_path: Path) -> None:
    root = new_root(tmp_path, None, CARD + "labels: [a, b]\n")
    _assert_refused(root, "unknown key 'labels'")


def test_refuses_architecture_that_cannot_be_imported(
    tmp_path: Path, weights_cache: dict[str, Path]
) -> None:
    card = CARD.replace("torchvision:resnet18", "team_models_missing.nets:FaceNet")
    root = new_root(tmp_path, weights_cache["good"], card)
    _assert_refused(root, "module 'team_models_missing.nets' cannot be imported")


def test_refuses_weights_with_wrong_shapes(tmp_path: Path, weights_cache: dict[str, Path]) -> None:
    card = CARD.replace("{num_classes: 3}", "{}")
    root = new_root(tmp_path, weights_cache["five_classes"], card)
    line = _assert_refused(root, "weights do not load into torchvision:resnet18")
    assert "size mismatch for fc.weight" in line


def test_refuses_weights_with_missing_keys(tmp_path: Path, weights_cache: dict[str, Path]) -> None:
    from safetensors.torch import load_file, save_file

    root = new_root(tmp_path, weights_cache["good"])
    target = root / "incoming" / "shapes.safetensors"
    state = load_file(str(target))
    del state["fc.bias"]
    save_file(state, str(target))
    line = _assert_refused(root, "weights do not load into torchvision:resnet18")
    assert "Missing key(s)" in line and "fc.bias" in line


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a pickle that runs code when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_refuses_a_pickle_payload_without_running_it(tmp_path: Path) -> None:
    root = new_root(tmp_path, None, CARD.replace("shapes.safetensors", "shapes.pt"))
    marker = tmp_path / "pwned-by-register"
    (root / "incoming").mkdir()
    torch.save({"fc.weight": _Payload(marker)}, root / "incoming" / "shapes.pt")
    # the payload is live: loading it the unsafe way does run it
    live = tmp_path / "pwned-by-unsafe-load"
    torch.save({"fc.weight": _Payload(live)}, tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert live.exists()
    line = _assert_refused(root, "not a weights-only checkpoint", marker=marker)
    assert "shapes.pt" in line


def test_refuses_dataset_without_test_split(tmp_path: Path, weights_cache: dict[str, Path]) -> None:
    import shutil

    root = new_root(tmp_path, weights_cache["good"])
    shutil.rmtree(root / "datasets" / "shapes" / "test")
    _assert_refused(root, "dataset datasets/shapes has no test/ folder")


def test_refuses_test_class_missing_from_train(
    tmp_path: Path, weights_cache: dict[str, Path]
) -> None:
    root = new_root(tmp_path, weights_cache["good"])
    make_image_folder(
        root / "datasets" / "shapes", classes=(), test_classes=("cls-zzz",)
    )  # test/cls-zzz only
    _assert_refused(root, "classes absent from the train folder: ['cls-zzz']")


def test_refuses_dataset_outside_the_project_root(
    tmp_path: Path, weights_cache: dict[str, Path]
) -> None:
    outside = make_image_folder(tmp_path / "elsewhere" / "shapes")
    root = new_root(tmp_path / "root", weights_cache["good"])
    root_card = CARD.replace("datasets/shapes", str(outside))
    (root / "card.yaml").write_text(root_card)
    _assert_refused(root, "is outside the project root")


@pytest.mark.slow
def test_refuses_a_name_already_registered(pipeline: dict[str, Any]) -> None:
    from tasks.registry import ModelRegistry

    root, settings = pipeline["root"], pipeline["settings"]
    before = ModelRegistry.of(settings).list_versions(NAME)
    code, _, err = _cli(root, "register", str(root / "card.yaml"))
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1, err
    assert lines[0] == (
        f"error: model '{NAME}' is already registered; register under a new name "
        "(a new version of it comes only from deletion requests)"
    )
    assert ModelRegistry.of(settings).list_versions(NAME) == before


# --- other card forms -----------------------------------------------------------------------


def tiny_net(num_classes: int, width: int = 4) -> torch.nn.Module:
    """A team's own architecture, importable as ``tests.flows.test_register:tiny_net``."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(width, num_classes),
    )


def test_importable_callable_grayscale_non_square_card_validates_and_exports(
    tmp_path: Path,
) -> None:
    """A ``package.module:callable`` architecture, a ``.pt`` state_dict, RGB files read as one
    channel at ``[24, 32]``: validated without a write, then exported with ONNX parity."""
    from tasks.export import package_model
    from tasks.register import validate_card
    from tasks.settings import PipelineSettings

    card = (
        "name: own-net\n"
        "architecture: tests.flows.test_register:tiny_net\n"
        "architecture_kwargs: {num_classes: 3, width: 4}\n"
        "weights: incoming/own.pt\n"
        "dataset: datasets/shapes\n"
        "preprocess: {channels: 1, size: [24, 32], mean: [0.5], std: [0.25]}\n"
    )
    root = new_root(tmp_path, None, card)
    (root / "incoming").mkdir()
    torch.manual_seed(0)
    torch.save(tiny_net(3).state_dict(), root / "incoming" / "own.pt")
    checked = validate_card(PipelineSettings.from_env(root), root / "card.yaml")
    assert checked.spec.arch == "tests.flows.test_register:tiny_net"
    assert checked.spec.kwargs == {"num_classes": 3, "width": 4}  # a callable gets them all
    assert checked.spec.input_hw == (24, 32) and checked.spec.in_channels == 1
    assert checked.bundle.test[0][0].shape == (1, 24, 32)
    assert not (root / "datasets" / "shapes.dvc").exists() and not (root / ".dvc").exists()
    package = package_model(checked.model, checked.spec, tmp_path / "pkg")
    assert set(package.parity["max_abs_diff"]) == {"1", "7"}  # checked at two batch sizes
    assert max(package.parity["max_abs_diff"].values()) <= 1e-4, package.parity
    import onnxruntime as ort

    session = ort.InferenceSession(package.onnx_path, providers=["CPUExecutionProvider"])
    image = checked.bundle.test[0][0].unsqueeze(0)  # (1, 1, 24, 32): the card's input
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits, checked.model(image).numpy(), atol=1e-4)


def test_refuses_a_model_that_does_not_fit_its_task(
    tmp_path: Path, weights_cache: dict[str, Path]
) -> None:
    """A plain classifier declared a face model: face verification needs embeddings."""
    card = CARD.replace("task: classification", "task: face")
    root = new_root(tmp_path, weights_cache["good"], card)
    _assert_refused(root, "model does not fit task 'face'")


def test_refuses_an_unknown_task(tmp_path: Path, weights_cache: dict[str, Path]) -> None:
    root = new_root(
        tmp_path, weights_cache["good"], CARD.replace("task: classification", "task: ocr")
    )
    _assert_refused(root, "unknown task 'ocr'")


def test_a_face_card_is_validated_with_the_face_metrics(tmp_path: Path) -> None:
    """``task: face`` on a team's identity folders: the folder names stay the identities and
    the model is evaluated with verification as well as identity accuracy, before any write."""
    from delete.applications.face.model import CosineFaceNet
    from tasks.register import validate_card
    from tasks.settings import PipelineSettings

    card = (
        "name: team-faces\n"
        "architecture: face_cosine\n"
        "architecture_kwargs: {embedding_dim: 16, width: 8}\n"
        "weights: incoming/faces.pt\n"
        "dataset: datasets/shapes\n"
        "preprocess: {channels: 3, size: 32}\n"
        "task: face\n"
    )
    root = new_root(tmp_path, None, card)
    (root / "incoming").mkdir()
    torch.manual_seed(0)
    net = CosineFaceNet(num_classes=3, in_channels=3, embedding_dim=16, width=8)
    torch.save(net.eval().state_dict(), root / "incoming" / "faces.pt")
    checked = validate_card(PipelineSettings.from_env(root), root / "card.yaml")
    assert checked.card.task == "face"
    assert {"acc_retain", "tar_retain"} <= set(checked.metrics)
    assert sorted(k for k in checked.metrics if "/" in k) == [f"class_acc/{c}" for c in CLASSES]
    assert not (root / "datasets" / "shapes.dvc").exists()  # validation writes nothing
