"""Face identities: margin loss, cosine head, verification metrics, identity folders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import delete
from delete.applications.face import evaluate_face, face_margin_loss, face_model_spec
from delete.applications.face.data import load_identity_folder
from delete.applications.face.loss import CosineMarginLoss
from delete.applications.face.metrics import (
    gallery_mask,
    tar_at_far,
    threshold_at_far,
    verification_scores,
)
from delete.applications.face.model import CosineFaceNet
from delete.data import DatasetBundle, ImageTensorDataset
from delete.errors import DatasetError, UnknownModelError
from delete.models import build_model
from tests.unit._tiny import TinyNet


def test_cosface_subtracts_scaled_margin_from_the_true_logit_only() -> None:
    logits = torch.tensor([[8.0, 2.0, -4.0], [1.0, 5.0, 0.0]])
    targets = torch.tensor([0, 1])
    loss = CosineMarginLoss(scale=10.0, margin=0.3)
    expected = logits.clone()
    expected[0, 0] -= 3.0
    expected[1, 1] -= 3.0
    assert torch.allclose(loss.margin_logits(logits, targets), expected)
    assert torch.isclose(loss(logits, targets), F.cross_entropy(expected, targets))


def test_arcface_adds_the_margin_to_the_angle() -> None:
    cos = 0.6
    loss = CosineMarginLoss(scale=2.0, margin=0.5, kind="arcface")
    out = loss.margin_logits(torch.tensor([[2.0 * cos, 0.0]]), torch.tensor([0]))
    assert math.isclose(float(out[0, 0]), 2.0 * math.cos(math.acos(cos) + 0.5), rel_tol=1e-5)
    assert float(out[0, 1]) == 0.0
    # theta + m beyond pi: the linear fallback keeps the logit monotone in cos.
    far = loss.margin_logits(torch.tensor([[-1.98, 0.0]]), torch.tensor([0]))
    assert math.isclose(float(far[0, 0]), 2.0 * (-0.99 - 0.5 * math.sin(0.5)), rel_tol=1e-5)


def test_margin_loss_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="scale"):
        CosineMarginLoss(scale=0.0)
    with pytest.raises(ValueError, match="kind"):
        CosineMarginLoss(kind="sphereface")  # type: ignore[arg-type]


def test_face_net_logits_are_plain_scaled_cosines_in_train_and_eval() -> None:
    torch.manual_seed(0)
    net = CosineFaceNet(num_classes=4, in_channels=1, embedding_dim=8, width=8, scale=5.0)
    x = torch.rand(6, 1, 12, 12)
    for mode in (True, False):
        net.train(mode)
        logits = net(x).detach()
        assert logits.shape == (6, 4)
        assert float(logits.abs().max()) <= 5.0 + 1e-4
    net.eval()
    embeddings = net.embed(x)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(6), atol=1e-5)
    centres = F.normalize(net.head.weight, dim=1)
    assert torch.allclose(net(x), 5.0 * embeddings @ centres.T, atol=1e-5)


def test_face_model_is_registered_and_margin_loss_follows_its_scale() -> None:
    bundle = DatasetBundle(
        "f",
        *(2 * [ImageTensorDataset(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))]),
        ["a", "b"],
    )
    model = build_model(face_model_spec(bundle))
    assert isinstance(model, CosineFaceNet)
    assert face_margin_loss(model).scale == model.head.scale
    with pytest.raises(UnknownModelError, match="CosineHead"):
        face_margin_loss(TinyNet())


def test_gallery_mask_keeps_a_probe_for_every_identity_with_two_samples() -> None:
    labels = torch.tensor([0, 1, 0, 1, 2, 2, 2, 2, 3])
    mask = gallery_mask(labels, 0.5)
    assert mask.tolist() == [True, True, False, False, True, True, False, False, True]


def test_verification_scores_against_gallery_centroids() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 0, 1])
    scores = verification_scores(emb, labels, torch.tensor([True, True, False, False]))
    assert scores.probe_labels.tolist() == [0, 1]
    assert torch.allclose(scores.genuine, torch.tensor([1.0, 0.8]))
    assert torch.allclose(scores.impostor_flat().sort().values, torch.tensor([0.0, 0.6]))
    assert torch.allclose(scores.genuine_of([1]), torch.tensor([0.8]))


def test_threshold_and_tar_at_far_known_values() -> None:
    impostor = torch.arange(1, 101, dtype=torch.float64) / 100  # 0.01 .. 1.00
    assert threshold_at_far(impostor, 0.01) == pytest.approx(0.99)  # only 1.00 exceeds it
    assert threshold_at_far(impostor, 0.05) == pytest.approx(0.95)
    assert threshold_at_far(impostor, 0.0) == pytest.approx(1.0)
    genuine = torch.tensor([0.995, 0.99, 0.5, 1.0], dtype=torch.float64)
    assert tar_at_far(genuine, impostor, 0.01) == pytest.approx(0.5)  # 0.99 is not above
    with pytest.raises(ValueError, match="far"):
        tar_at_far(genuine, impostor, 1.0)


def _write_identity_folder(root: Path, identities: dict[str, int]) -> None:
    rng = np.random.default_rng(0)
    for name, count in identities.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def test_identity_folder_follows_imagefolder_rules(tmp_path: Path) -> None:
    _write_identity_folder(tmp_path, {"zoe": 5, "alice": 5, "bob": 5})
    bundle = load_identity_folder(tmp_path, image_size=16, test_fraction=0.4, augment=False)
    assert bundle.class_names == ["alice", "bob", "zoe"]  # sorted folder names
    assert bundle.image_shape == (3, 16, 16)
    assert len(bundle.train) == 9 and len(bundle.test) == 6
    assert sorted(bundle.test.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    grey = load_identity_folder(tmp_path, image_size=8, grayscale=True, augment=False)
    assert grey.image_shape == (1, 8, 8)


def test_identity_folder_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_identity_folder(tmp_path / "missing")


def test_evaluate_face_and_unlearn_an_identity_on_tiny_data() -> None:
    torch.manual_seed(0)
    labels = torch.arange(3).repeat(8)
    images = torch.rand(24, 1, 12, 12) * 0.2 + labels.view(-1, 1, 1, 1) * 0.4
    ds = ImageTensorDataset(images, labels)
    bundle = DatasetBundle("tiny-faces", ds, ds, ["a", "b", "c"])
    model = CosineFaceNet(3, 1, embedding_dim=8, width=8)
    metrics = evaluate_face(model, bundle, [1])
    scalars = {"acc_forget", "acc_retain", "tar_forget", "tar_retain", "threshold"}
    assert {k for k in metrics if "/" not in k} == scalars
    assert sorted(k for k in metrics if "/" in k) == ["class_acc/a", "class_acc/b", "class_acc/c"]
    forget_loader = torch.utils.data.DataLoader(ds.subset(torch.nonzero(labels == 1).flatten()), 4)
    unlearned = delete.unlearn(model, forget_loader, [1], device="cpu", epochs=1, progress=False)
    assert isinstance(unlearned, CosineFaceNet)
    assert unlearned(images[:2]).shape == (2, 3)


# --- pinned TAR@FAR values: expected numbers computed by hand or by brute force in numpy --------


def _brute_force_tar(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """The definition, in O(n^2): the smallest impostor score t that at most ``far`` of the
    impostor scores exceed; TAR is the share of genuine scores above it."""
    feasible = [t for t in impostor if np.mean(impostor > t) <= far]
    threshold = float(min(feasible))
    return threshold, float(np.mean(genuine > threshold))


def test_tar_at_far_keeps_its_pinned_values_with_ties() -> None:
    impostor = torch.tensor([0.9, 0.8, 0.8, 0.7, 0.5, 0.5, 0.5, 0.2, 0.1, 0.0], dtype=torch.float64)
    genuine = torch.tensor([0.95, 0.8, 0.75, 0.5, 0.3], dtype=torch.float64)
    # By hand: (far, threshold, TAR). At FAR 0.2 the tie at 0.8 keeps 0.8 as the threshold.
    for far, threshold, tar in [(0.0, 0.9, 0.2), (0.1, 0.8, 0.2), (0.2, 0.8, 0.2), (0.5, 0.5, 0.6)]:
        assert threshold_at_far(impostor, far) == threshold
        assert tar_at_far(genuine, impostor, far) == tar


def test_tar_at_far_matches_the_definition_on_seeded_scores() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        impostor = np.round(rng.random(int(rng.integers(1, 300))), 2)  # rounding makes ties
        genuine = np.round(rng.random(int(rng.integers(1, 40))), 2)
        for far in (0.0, 0.01, 0.05, 0.1, 0.3):
            threshold, tar = _brute_force_tar(genuine, impostor, far)
            imp_t, gen_t = torch.from_numpy(impostor), torch.from_numpy(genuine)
            assert threshold_at_far(imp_t, far) == threshold
            assert tar_at_far(gen_t, imp_t, far) == tar


def test_torchmetrics_roc_tar_agrees_only_to_float32_precision() -> None:
    """Why TAR stays hand-written: torchmetrics' ROC reaches the same operating point, but its
    rates are float32, it squashes scores outside [0, 1] (negative cosines) with a sigmoid, and
    its thresholds are the score above the operating point, not the impostor score reported."""
    from torchmetrics.functional.classification import binary_roc

    rng = np.random.default_rng(5)
    impostor = np.round(rng.random(200) * 0.9, 2)
    genuine = np.round(rng.random(30), 2)
    scores = torch.from_numpy(np.concatenate([genuine, impostor]))
    labels = torch.cat([torch.ones(len(genuine)), torch.zeros(len(impostor))]).long()
    fpr, tpr, _ = binary_roc(scores, labels)
    assert tpr.dtype == torch.float32
    for far in (0.0, 0.01, 0.1):
        _, tar = _brute_force_tar(genuine, impostor, far)
        assert float(tpr[fpr <= far].max()) == pytest.approx(tar, rel=1e-6)
