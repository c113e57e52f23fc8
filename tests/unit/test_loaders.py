"""On-disk loaders: fake CIFAR-10/100 in torchvision's pickle format, a tiny ImageFolder of PNGs."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from delete.data import (
    ByteImageDataset,
    ImageFileDataset,
    ImageTensorDataset,
    RandomCropFlip,
    list_datasets,
    load_cifar10,
    load_cifar100,
    load_dataset,
    load_image_folder,
    make_unlearning_splits,
)
from delete.errors import DatasetError, UnlearningError
from delete.training import make_loader

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"] + [
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def _pickle_like_cifar(payload: dict[str, object]) -> bytes:
    """Protocol 2 with numpy 1.x's global names, as the official batch files were written."""
    raw = pickle.dumps(payload, protocol=2)
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)


def _write_cifar10(root: Path, per_batch: int = 4, n_test: int = 6) -> dict[str, np.ndarray]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_x, train_y = [], []
    for b in range(1, 6):
        x = _images(rng, per_batch)
        y = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {
            "batch_label": f"training batch {b} of 5",
            "labels": y,
            "data": x,
            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        }
        (base / f"data_batch_{b}").write_bytes(_pickle_like_cifar(batch))
        train_x.append(x)
        train_y += y
    test_x = _images(rng, n_test)
    test_y = [i % 10 for i in range(n_test)]
    test = {"batch_label": "testing batch 1 of 1", "labels": test_y, "data": test_x}
    (base / "test_batch").write_bytes(_pickle_like_cifar(test))
    meta = {"num_cases_per_batch": per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072}
    (base / "batches.meta").write_bytes(_pickle_like_cifar(meta))
    return {
        "train_x": np.concatenate(train_x),
        "train_y": np.array(train_y),
        "test_x": test_x,
        "test_y": np.array(test_y),
    }


def _write_cifar100(root: Path, n_train: int = 10, n_test: int = 5) -> dict[str, np.ndarray]:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = _images(rng, n)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [f // 5 for f in fine]
        payload = {"filenames": [], "batch_label": split, "fine_labels": fine}
        payload |= {"coarse_labels": coarse, "data": x}
        (base / split).write_bytes(_pickle_like_cifar(payload))
        arrays |= {
            f"{split}_x": x,
            f"{split}_fine": np.array(fine),
            f"{split}_coarse": np.array(coarse),
        }
    meta = {
        "fine_label_names": [f"fine{i:02d}" for i in range(100)],
        "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
    }
    (base / "meta").write_bytes(_pickle_like_cifar(meta))
    return arrays


@pytest.fixture
def cifar10_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    return tmp_path, _write_cifar10(tmp_path)


def _as_chw(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32)).float() / 255.0


def test_cifar10_reads_torchvision_layout(cifar10_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_root
    bundle = load_cifar10(root, augment=False)
    assert bundle.name == "cifar10"
    assert bundle.class_names == CIFAR10_NAMES and bundle.num_classes == 10
    assert (len(bundle.train), len(bundle.test)) == (20, 6)
    assert bundle.image_shape == (3, 32, 32)
    assert isinstance(bundle.train, ByteImageDataset) and isinstance(
        bundle.train, ImageTensorDataset
    )
    assert bundle.train.byte_images.dtype == torch.uint8  # held as bytes, not 4x the memory
    assert torch.equal(bundle.train.labels, torch.from_numpy(raw["train_y"]))
    assert torch.equal(bundle.test.labels, torch.from_numpy(raw["test_y"]))
    image, label = bundle.train[13]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert torch.equal(image, _as_chw(raw["train_x"][13:14])[0])
    assert int(label) == raw["train_y"][13]
    assert bundle.train.sample_ids[0] == "cifar10-train-00000"
    assert bundle.test.sample_ids[-1] == "cifar10-test-00005"
    # Dense access still works for consumers that read .images, and matches per-item reads.
    assert torch.equal(bundle.test.images, _as_chw(raw["test_x"]))


def test_cifar_rows_are_channel_planes(tmp_path: Path) -> None:
    raw = _write_cifar10(tmp_path, per_batch=1, n_test=2)
    red = np.zeros((2, 3072), dtype=np.uint8)
    red[:, :1024] = 255  # first 1024 values = the red plane, row-major
    test = {"labels": [0, 1], "data": red}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(_pickle_like_cifar(test))
    image, _ = load_cifar10(tmp_path, augment=False).test[0]
    assert bool((image[0] == 1).all()) and bool((image[1:] == 0).all())
    assert len(raw["train_y"]) == 5


def test_cifar10_augmentation_on_and_off(cifar10_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, raw = cifar10_root
    plain = load_cifar10(root, augment=False)
    augmented = load_cifar10(root)
    assert plain.train.transform is None and plain.test.transform is None
    assert isinstance(augmented.train.transform, RandomCropFlip)
    assert augmented.train.transform.pad == 4 and augmented.train.transform.flip
    assert augmented.test.transform is None  # never augment evaluation data
    torch.manual_seed(0)
    reference = _as_chw(raw["train_x"][:1])[0]
    reads = [augmented.train[0][0] for _ in range(12)]
    assert all(r.shape == (3, 32, 32) for r in reads)
    assert any(not torch.equal(r, reference) for r in reads)
    assert torch.equal(plain.train[0][0], reference)
    assert torch.equal(augmented.test[0][0], plain.test[0][0])


def test_cifar10_root_may_be_the_batch_folder(
    cifar10_root: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = cifar10_root
    assert len(load_cifar10(root / "cifar-10-batches-py", augment=False).train) == 20


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    raw = _write_cifar100(tmp_path)
    fine = load_cifar100(tmp_path, augment=False)
    assert (fine.name, fine.num_classes, len(fine.train), len(fine.test)) == (
        "cifar100",
        100,
        10,
        5,
    )
    assert fine.class_names[7] == "fine07"
    assert torch.equal(fine.train.labels, torch.from_numpy(raw["train_fine"]))
    assert torch.equal(fine.test[4][0], _as_chw(raw["test_x"][4:5])[0])
    coarse = load_cifar100(tmp_path, coarse=True)
    assert coarse.num_classes == 20 and coarse.name == "cifar100-coarse"
    assert torch.equal(coarse.test.labels, torch.from_numpy(raw["test_coarse"]))
    assert isinstance(coarse.train.transform, RandomCropFlip)


def test_missing_cifar_is_a_one_line_error_naming_path_and_files(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="data_batch_1") as info:
        load_cifar10(missing)
    message = str(info.value)
    assert "\n" not in message and str(missing) in message and "cifar-10-batches-py" in message
    with pytest.raises(DatasetError, match="cifar-100-python.*train, test, meta"):
        load_cifar100(missing)


def test_missing_or_malformed_batch_file(cifar10_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, _ = cifar10_root
    base = root / "cifar-10-batches-py"
    (base / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 is missing"):
        load_cifar10(root)
    (base / "data_batch_3").write_bytes(_pickle_like_cifar({"data": np.zeros((2, 5), np.uint8)}))
    with pytest.raises(DatasetError, match="lacks 'data' or 'labels'"):
        load_cifar10(root)
    bad_shape = {"data": np.zeros((2, 5), np.uint8), "labels": [0, 1]}
    (base / "data_batch_3").write_bytes(_pickle_like_cifar(bad_shape))
    with pytest.raises(DatasetError, match=r"must be uint8 \(N, 3072\)"):
        load_cifar10(root)
    (base / "data_batch_3").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match="cannot be read"):
        load_cifar10(root)


def test_verify_md5_rejects_files_that_are_not_the_official_ones(
    cifar10_root: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = cifar10_root
    with pytest.raises(DatasetError, match="official MD5"):
        load_cifar10(root, verify_md5=True)


class _Planted:
    """Pickles to a call that writes a marker file: what a malicious dataset file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_planted_code_in_a_cifar_batch_is_never_run(
    cifar10_root: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    root, _ = cifar10_root
    proof, marker = tmp_path / "proof", tmp_path / "marker"
    pickle.loads(pickle.dumps({"data": _Planted(proof)}, protocol=2))  # the payload is live...
    assert proof.exists()
    batch = {"data": _Planted(marker), "labels": [0]}
    (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DatasetError, match=r"refusing to load global (__builtin__|builtins)\.exec"):
        load_cifar10(root)
    assert not marker.exists()  # ...but the loader never runs it


def test_lazy_datasets_work_with_existing_consumers(
    cifar10_root: tuple[Path, dict[str, np.ndarray]],
) -> None:
    root, _ = cifar10_root
    bundle = load_cifar10(root)
    splits = make_unlearning_splits(bundle.train, bundle.test, [3])
    assert isinstance(splits.train_forget, ByteImageDataset)
    assert bool((splits.train_forget.labels == 3).all())
    assert len(splits.train_forget) + len(splits.train_retain) == 20
    assert isinstance(splits.train_retain.transform, RandomCropFlip)  # subsets keep augmentation
    assert splits.train_retain.with_transform(None).transform is None
    inputs, targets = next(iter(make_loader(bundle.train, 8, shuffle=True)))
    assert inputs.shape == (8, 3, 32, 32) and inputs.dtype == torch.float32
    assert targets.dtype == torch.long
    with pytest.raises(AttributeError, match="read-only"):
        bundle.train.images = torch.zeros(1, 3, 32, 32)


# ---------------------------------------------------------------- ImageFolder


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, color)
    image.convert(mode).save(path)


def _write_folder(root: Path, per_class: int = 5) -> None:
    colors = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}
    for name, color in colors.items():
        for i in range(per_class):
            mode = "L" if (name, i) == ("dog", 0) else "RGBA" if i == 1 else "RGB"
            _png(root / name / f"{name}_{i}.png", color, (20 + i, 12 + 2 * i), mode)
    (root / "cat" / "notes.txt").write_text("not an image")


def test_image_folder_classes_split_and_resize(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    bundle = load_image_folder(tmp_path, image_size=16, augment=False, test_fraction=0.2)
    assert bundle.class_names == ["cat", "dog", "eel"]
    assert (len(bundle.train), len(bundle.test)) == (12, 3)  # 1 of 5 per class held out
    assert sorted(bundle.test.labels.tolist()) == [0, 1, 2]
    assert bundle.image_shape == (3, 16, 16)
    assert isinstance(bundle.train, ImageFileDataset) and bundle.train.transform is None
    for dataset in (bundle.train, bundle.test):
        for i in range(len(dataset)):
            image, label = dataset[i]
            assert image.shape == (3, 16, 16) and image.dtype == torch.float32
            colour = image.mean(dim=(1, 2))
            if dataset.sample_ids[i] == "dog/dog_0.png":  # a grayscale PNG: R = G = B
                assert torch.allclose(colour, colour[0].expand(3))
            else:  # cat red, dog green, eel blue
                assert int(colour.argmax()) == int(label)
    ids = set(bundle.train.sample_ids) | set(bundle.test.sample_ids)
    assert "cat/cat_0.png" in ids and len(ids) == 15 and not any("notes" in i for i in ids)
    again = load_image_folder(tmp_path, image_size=16, augment=False)
    assert again.test.sample_ids == bundle.test.sample_ids  # seeded split


def test_image_folder_augmentation_grayscale_and_memory(tmp_path: Path) -> None:
    _write_folder(tmp_path)
    augmented = load_image_folder(tmp_path, image_size=(16, 24))
    assert isinstance(augmented.train.transform, RandomCropFlip)
    assert augmented.train.transform.pad == 3 and augmented.test.transform is None
    assert augmented.train[0][0].shape == (3, 16, 24)
    gray = load_image_folder(tmp_path, image_size=8, grayscale=True, augment=False)
    assert gray.image_shape == (1, 8, 8) and gray.train[0][0].shape == (1, 8, 8)
    memory = load_image_folder(
        tmp_path, image_size=8, grayscale=True, augment=False, in_memory=True
    )
    assert isinstance(memory.train, ByteImageDataset)
    assert memory.train.sample_ids == gray.train.sample_ids
    assert torch.equal(memory.train.images, gray.train.images)


def test_image_folder_separate_test_dirs(tmp_path: Path) -> None:
    _write_folder(tmp_path / "train", per_class=3)
    _write_folder(tmp_path / "test", per_class=2)
    auto = load_image_folder(tmp_path, image_size=8, augment=False)
    assert (len(auto.train), len(auto.test)) == (9, 6)
    assert auto.test.sample_ids[0] == "cat/cat_0.png"
    # A test folder may hold a subset of the classes; labels follow the train folder's order.
    _write_folder(tmp_path / "eval_only_eel", per_class=1)
    for name in ("cat", "dog"):
        for path in (tmp_path / "eval_only_eel" / name).iterdir():
            path.unlink()
        (tmp_path / "eval_only_eel" / name).rmdir()
    explicit = load_image_folder(
        tmp_path / "train", image_size=8, test_root=tmp_path / "eval_only_eel"
    )
    assert explicit.test.labels.tolist() == [2]
    _png(tmp_path / "odd" / "fox" / "a.png", (1, 2, 3), (4, 4))
    with pytest.raises(DatasetError, match=r"absent from the train folder: \['fox'\]"):
        load_image_folder(tmp_path / "train", test_root=tmp_path / "odd")


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist: expected .*<class_name>/<image>"):
        load_image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="class folder"):
        load_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "cat").mkdir(parents=True)
    (tmp_path / "noimg" / "cat" / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match="no valid file"):
        load_image_folder(tmp_path / "noimg")
    _write_folder(tmp_path / "ok", per_class=2)
    with pytest.raises(DatasetError, match="test_fraction"):
        load_image_folder(tmp_path / "ok", test_fraction=1.0)
    (tmp_path / "ok" / "cat" / "cat_0.png").write_bytes(b"corrupt")
    bundle = load_image_folder(tmp_path / "ok", image_size=8, augment=False, test_fraction=0.5)
    with pytest.raises(DatasetError, match="cannot be decoded"):
        _ = [bundle.train[i] for i in range(len(bundle.train))] + [
            bundle.test[i] for i in range(len(bundle.test))
        ]


# ---------------------------------------------------------------- registry


def test_load_dataset_registry(
    cifar10_root: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    root, _ = cifar10_root
    assert list_datasets() == ["cifar10", "cifar100", "digits", "imagefolder", "mnist5k"]
    assert load_dataset("cifar10", root, augment=False).train.transform is None
    _write_cifar100(tmp_path / "c100")
    assert load_dataset("cifar100", tmp_path / "c100", coarse=True).num_classes == 20
    _write_folder(tmp_path / "folder", per_class=2)
    folder = load_dataset("imagefolder", tmp_path / "folder", image_size=8, test_fraction=0.5)
    assert folder.class_names == ["cat", "dog", "eel"]
    with pytest.raises(DatasetError, match="unknown dataset 'cifar11'; known: cifar10"):
        load_dataset("cifar11", root)
    with pytest.raises(DatasetError, match="pass root="):
        load_dataset("imagefolder")
    with pytest.raises(DatasetError, match="takes no root"):
        load_dataset("mnist5k", root)
    with pytest.raises(DatasetError, match="unexpected keyword argument 'colour'"):
        load_dataset("cifar10", root, colour=True)
    with pytest.raises(DatasetError, match="dataset 'digits': .*'root_dir'"):
        load_dataset("digits", root_dir=root)  # options are checked before anything is loaded
    assert issubclass(DatasetError, UnlearningError)
