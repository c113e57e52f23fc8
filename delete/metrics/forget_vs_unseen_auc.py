"""Can an attacker tell the forget-set training samples from unseen samples of the same classes?

This is the stricter membership-inference convention for class unlearning: after a perfect
unlearning the model's output on the forgotten *training* images is indistinguishable from its
output on *test* images of the same classes, which it never saw (AUC 0.5). The SVC attack in
:mod:`delete.metrics.svc_mia` instead asks whether forget samples look like *retained-class*
training members.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from delete.metrics._validation import MetricInputError, _check_labels, _check_logits
from delete.metrics.mia_features import (
    cross_entropy_loss,
    prediction_entropy,
    probabilities,
    true_class_confidence,
)

__all__ = ["forget_vs_unseen_auc"]


def _attack_features(logits: Tensor, labels: Tensor) -> np.ndarray:
    probs = probabilities(logits)
    # log1p tames the heavy tail of the loss once p_y underflows (unlearned samples).
    loss = torch.log1p(cross_entropy_loss(logits, labels))
    return torch.stack(
        [loss, true_class_confidence(probs, labels), prediction_entropy(probs)], dim=1
    ).numpy()


def forget_vs_unseen_auc(
    forget_train_logits: Tensor,
    forget_train_labels: Tensor,
    unseen_logits: Tensor,
    unseen_labels: Tensor,
    n_splits: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Cross-validated AUC of a loss-based attack separating forget-train from unseen samples.

    Each sample is described by the model's per-sample cross-entropy (as ``log1p``), its
    true-class probability and its prediction entropy. A standardised logistic regression
    with balanced class weights is trained to predict "forget-train" (1) vs "unseen" (0)
    under stratified ``n_splits``-fold cross-validation (shuffled with ``seed``; ``n_splits``
    is lowered to the size of the smaller side when needed), and the ROC AUC on each held-out
    fold is recorded.

    ``auc`` 0.5 means indistinguishable (the goal, and what a retrained model gets up to
    generalisation gap noise); 1.0 means the forget set is still recognisably "seen".
    ``auc_loss_threshold`` is the AUC of the bare threshold attack "lower loss = member",
    with no fitting.

    Args:
        forget_train_logits: ``(N_f, C)`` logits on the forget-class training samples.
        forget_train_labels: ``(N_f,)`` their labels.
        unseen_logits: ``(N_u, C)`` logits on held-out samples of the same classes.
        unseen_labels: ``(N_u,)`` their labels.
        n_splits: Cross-validation folds.
        seed: Seed of the fold assignment.

    Returns:
        ``{"auc", "auc_std", "auc_loss_threshold", "n_splits", "n_forget", "n_unseen"}``.

    Raises:
        MetricInputError: Empty or mis-shaped input, or fewer than 2 samples on a side.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> labels = torch.zeros(50, dtype=torch.long)
        >>> seen = torch.randn(50, 3, generator=gen) + torch.tensor([6.0, 0.0, 0.0])
        >>> unseen = torch.randn(50, 3, generator=gen)
        >>> forget_vs_unseen_auc(seen, labels, unseen, labels)["auc"] > 0.95
        True
    """
    _check_logits(forget_train_logits, "forget-train logits")
    _check_labels(forget_train_logits, forget_train_labels, "forget-train")
    _check_logits(unseen_logits, "unseen logits")
    _check_labels(unseen_logits, unseen_labels, "unseen")
    if forget_train_logits.shape[1] != unseen_logits.shape[1]:
        raise MetricInputError(
            f"forget-train logits have {forget_train_logits.shape[1]} classes, "
            f"unseen logits {unseen_logits.shape[1]}"
        )
    smaller = min(len(forget_train_labels), len(unseen_labels))
    folds = min(n_splits, smaller)
    if folds < 2:
        raise MetricInputError(
            f"cross-validated AUC needs >= 2 samples per side and n_splits >= 2; "
            f"got {len(forget_train_labels)} forget-train, {len(unseen_labels)} unseen, "
            f"n_splits={n_splits}"
        )
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate(
        [
            _attack_features(forget_train_logits, forget_train_labels),
            _attack_features(unseen_logits, unseen_labels),
        ]
    )
    y = np.concatenate([np.ones(len(forget_train_labels)), np.zeros(len(unseen_labels))])
    aucs: list[float] = []
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
        clf.fit(x[train_idx], y[train_idx])
        aucs.append(float(roc_auc_score(y[test_idx], clf.predict_proba(x[test_idx])[:, 1])))
    return {
        "auc": float(np.mean(aucs)),
        "auc_std": float(np.std(aucs)),
        "auc_loss_threshold": float(roc_auc_score(y, -x[:, 0])),
        "n_splits": float(folds),
        "n_forget": float(len(forget_train_labels)),
        "n_unseen": float(len(unseen_labels)),
    }
