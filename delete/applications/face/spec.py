"""The face task: identity accuracy and verification TAR@FAR, forgotten vs retained identities.

The test split is the verification set (see :mod:`delete.applications.face.metrics`); the
forget set is every training image of the forgotten identities.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from delete.applications._evaluation import _outputs
from delete.applications.face.data import load_face_data
from delete.applications.face.loss import face_margin_loss
from delete.applications.face.metrics import (
    gallery_mask,
    tar_at_far,
    threshold_at_far,
    verification_scores,
)
from delete.applications.face.model import face_model_spec
from delete.applications.task_spec import TaskSpec
from delete.data import DatasetBundle, split_by_classes
from delete.errors import UnknownModelError
from delete.training import TrainConfig

__all__ = ["FACE_TASK", "FORGET_TAR_GATE", "VERIFICATION_FAR", "evaluate_face"]

#: Default ``max_tar_forget`` gate (%): at most one genuine probe in this many verifies.
FORGET_TAR_GATE = 10.0

#: False accept rate at which the verification threshold is set.
VERIFICATION_FAR = 1e-2


def _forget_set(data: DatasetBundle, forget_classes: Sequence[int]) -> Dataset:
    return split_by_classes(data.train, forget_classes)[0]


def _retain_set(data: DatasetBundle, forget_classes: Sequence[int]) -> Dataset:
    return split_by_classes(data.train, forget_classes)[1]


def _embeddings_and_logits(
    model: nn.Module, data: DatasetBundle, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    embed = getattr(model, "embed", None)
    if not callable(embed):
        raise UnknownModelError(
            f"face evaluation needs a model with an embed() method, got {type(model).__name__}"
        )
    model.to(device)
    logits = torch.cat([out for out, _ in _outputs(model, data.test, device)])
    embeddings = torch.cat([out for out, _ in _outputs(model, data.test, device, embed)])
    return embeddings, logits, data.test.labels


def evaluate_face(
    model: nn.Module,
    data: DatasetBundle,
    forget_classes: Sequence[int],
    device: torch.device | str = "cpu",
    *,
    far: float = VERIFICATION_FAR,
) -> dict[str, float]:
    """Identity accuracy and verification TAR@FAR on the test split, forgotten vs retained.

    The test split is the verification set: the first half of each identity's test images is
    its gallery (their L2-normalised mean embedding is the identity's centroid), the rest are
    probes. One threshold is set on all impostor scores (probe vs. other identities'
    centroids) at ``far``; TAR is reported per group of identities.

    Returns:
        ``acc_forget`` / ``acc_retain`` (identity accuracy, %), ``tar_forget`` / ``tar_retain``
        (TAR at ``far``, %), ``threshold`` (the cosine threshold), and
        ``class_acc/<identity>``: each identity's accuracy, so one collapsed identity shows.

    Example:
        >>> from delete.applications.face.model import CosineFaceNet
        >>> from delete.data import ImageTensorDataset
        >>> ds = ImageTensorDataset(torch.rand(12, 1, 8, 8), torch.arange(3).repeat(4))
        >>> m = evaluate_face(CosineFaceNet(3, 1), DatasetBundle("f", ds, ds, list("abc")), [0])
        >>> sorted(m)  # doctest: +NORMALIZE_WHITESPACE
        ['acc_forget', 'acc_retain', 'class_acc/a', 'class_acc/b', 'class_acc/c', 'tar_forget',
         'tar_retain', 'threshold']
    """
    dev = torch.device(device) if isinstance(device, str) else device
    embeddings, logits, labels = _embeddings_and_logits(model, data, dev)
    forget_t = torch.as_tensor(list(forget_classes), dtype=torch.long)
    is_forget = torch.isin(labels, forget_t)
    correct = (logits.argmax(1) == labels).double()
    scores = verification_scores(embeddings, labels, gallery_mask(labels), data.num_classes)
    impostor = scores.impostor_flat()
    retained = [c for c in range(data.num_classes) if c not in set(forget_t.tolist())]
    return {
        "acc_forget": 100.0 * float(correct[is_forget].mean()),
        "acc_retain": 100.0 * float(correct[~is_forget].mean()),
        # no forgotten identity (e.g. evaluating an original model): nothing to verify
        "tar_forget": (
            100.0 * tar_at_far(scores.genuine_of(forget_t.tolist()), impostor, far)
            if len(forget_t)
            else float("nan")
        ),
        "tar_retain": 100.0 * tar_at_far(scores.genuine_of(retained), impostor, far),
        "threshold": threshold_at_far(impostor, far),
        **{
            f"class_acc/{name}": 100.0 * float(correct[labels == c].mean())
            if bool((labels == c).any())
            else float("nan")
            for c, name in enumerate(data.class_names)
        },
    }


FACE_TASK: TaskSpec[DatasetBundle] = TaskSpec(
    name="face",
    summary="Forget identities of a cosine-margin face recogniser; verification TAR@FAR.",
    load_data=load_face_data,
    model_spec=face_model_spec,
    forget_set=_forget_set,
    retain_set=_retain_set,
    retrain_set=_retain_set,
    evaluate=evaluate_face,
    train_loss=face_margin_loss,
    train_config=TrainConfig(epochs=6, lr=0.05),
    delete_hparams={"lr": 1e-4, "epochs": 10, "freeze_bn": True},
    unlearn_batch_size=16,
    headline=("acc_forget", "acc_retain", "tar_forget", "tar_retain"),
    metrics=("acc_forget", "acc_retain", "tar_forget", "tar_retain", "threshold"),
    default_gates={
        "max_acc_forget": 5.0,
        "max_drop_acc_retain": 3.0,
        # A face system verifies, it does not classify: the forgotten identity must no longer
        # be accepted at the operating point (FAR 1e-2), whatever its identity accuracy says.
        "max_tar_forget": FORGET_TAR_GATE,
    },
)
