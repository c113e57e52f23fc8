"""The SVC membership-inference attack of the SalUn and DELETE papers (class-wise setting).

An attacker who can query the model trains a support-vector classifier to tell *members*
(training samples) from *non-members* (unseen samples) using the model's output on them,
then applies it to the forget set. After unlearning, the forget set should look unseen.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from delete.metrics._validation import MetricInputError, _check_labels, _check_logits
from delete.metrics.mia_features import (
    modified_entropy,
    prediction_entropy,
    probabilities,
    true_class_confidence,
)

__all__ = ["svc_mia", "SVC_MIA_FEATURES"]

#: Feature sets, each attacked by its own SVC; ``confidence`` is the headline (as in DELETE).
SVC_MIA_FEATURES: tuple[str, ...] = ("confidence", "entropy", "m_entropy", "prob")


def _features(logits: Tensor, labels: Tensor) -> dict[str, np.ndarray]:
    probs = probabilities(logits)
    return {
        "confidence": true_class_confidence(probs, labels)[:, None].numpy(),
        "entropy": prediction_entropy(probs)[:, None].numpy(),
        "m_entropy": modified_entropy(probs, labels)[:, None].numpy(),
        "prob": probs.numpy(),
    }


def _subsample(n: int, keep: int, generator: torch.Generator) -> Tensor:
    if keep >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:keep].sort().values


def _fit_predict(members: np.ndarray, nonmembers: np.ndarray, target: np.ndarray) -> float:
    from sklearn.svm import SVC

    x = np.concatenate([members, nonmembers])
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    if np.ptp(x, axis=0).max() == 0.0:
        # Identical features on both sides: no attack can separate them, and SVC would refuse.
        return 50.0
    clf = SVC(C=3.0, gamma="auto", kernel="rbf", class_weight="balanced")
    clf.fit(x, y)
    return 100.0 * float(clf.predict(target).mean())


def svc_mia(
    shadow_member_logits: Tensor,
    shadow_member_labels: Tensor,
    shadow_nonmember_logits: Tensor,
    shadow_nonmember_labels: Tensor,
    target_logits: Tensor,
    target_labels: Tensor,
    seed: int = 0,
    *,
    max_shadow: int | None = 1000,
) -> dict[str, float]:
    """Share of target samples that an SVC attack classifies as training members.

    Protocol (SalUn, Fan et al. ICLR 2024; DELETE, Zhou et al. CVPR 2025), class-wise setting:

    * shadow **members** = retained-class *training* samples, shadow **non-members** =
      retained-class *test* samples; both are cut to the same size ``n = min(len(members),
      len(non-members), max_shadow)`` by a seeded random subsample (so the attack is balanced
      and takes about a second on CPU);
    * for each feature set an RBF SVC (``C=3``, ``gamma="auto"``, balanced class weights) is
      fitted on members (label 1) vs non-members (label 0): ``confidence`` (probability of the
      true label), ``entropy`` (prediction entropy), ``m_entropy`` (Song & Mittal's modified
      entropy, computed correctly, see :func:`~delete.metrics.mia_features.modified_entropy`)
      and ``prob`` (the whole probability vector);
    * each SVC is applied to the **target** (forget-class training) samples and the share
      predicted "member" is reported, in percent.

    The headline ``member_rate`` is the ``confidence`` attack, the number DELETE reports as
    "MIA". Lower means the forget set looks unseen; the retrained-from-scratch model is the
    reference (for class unlearning it is close to 0). This is DELETE's convention; SalUn's
    "MIA-Efficacy" is ``100 - member_rate``.

    Caveat: after class unlearning the targets' true-class confidence is ~0, where almost no
    shadow sample lies (both members and non-members of the retained classes are mostly
    predicted confidently). The SVC then *extrapolates*, and the whole forget set falls on one
    side of its boundary: the rate comes out near 0 or near 100 for reasons unrelated to
    unlearning quality (seen on MNIST-5k for Retrain itself in 3 runs out of 12). Read it
    across several seeds, next to :func:`~delete.metrics.forget_vs_unseen_auc`, which does
    not have this failure mode.

    Args:
        shadow_member_logits: ``(N_m, C)`` logits of samples the model was trained on.
        shadow_member_labels: ``(N_m,)`` their labels.
        shadow_nonmember_logits: ``(N_n, C)`` logits of samples it never saw.
        shadow_nonmember_labels: ``(N_n,)`` their labels.
        target_logits: ``(N_t, C)`` logits of the samples under test (the forget set).
        target_labels: ``(N_t,)`` their labels.
        seed: Seed of the shadow subsample.
        max_shadow: Cap on the shadow samples per side (``None``: no cap).

    Returns:
        ``{"member_rate": ..., "member_rate_confidence": ..., "member_rate_entropy": ...,
        "member_rate_m_entropy": ..., "member_rate_prob": ..., "n_shadow": ..., "n_target": ...}``,
        rates in ``[0, 100]``.

    Raises:
        MetricInputError: An empty set, mis-shaped logits or labels out of range.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> def sample(n, scale):  # logits favouring class 0 by `scale`
        ...     return torch.randn(n, 3, generator=gen) + torch.tensor([scale, 0.0, 0.0])
        >>> y = torch.zeros(60, dtype=torch.long)
        >>> members, unseen = sample(60, 8.0), sample(60, 0.5)  # members: confidently right
        >>> out = svc_mia(members, y, unseen, y, sample(60, 0.5), y)
        >>> out["member_rate"] < 25.0
        True
    """
    sets = {
        "shadow member": (shadow_member_logits, shadow_member_labels),
        "shadow non-member": (shadow_nonmember_logits, shadow_nonmember_labels),
        "target": (target_logits, target_labels),
    }
    for what, (logits, labels) in sets.items():
        _check_logits(logits, f"{what} logits")
        _check_labels(logits, labels, what)
    widths = {logits.shape[1] for logits, _ in sets.values()}
    if len(widths) != 1:
        raise MetricInputError(f"the sets have different numbers of classes: {sorted(widths)}")
    if max_shadow is not None and max_shadow < 1:
        raise MetricInputError(f"max_shadow must be positive or None, got {max_shadow}")

    n = min(len(shadow_member_labels), len(shadow_nonmember_labels))
    if max_shadow is not None:
        n = min(n, max_shadow)
    generator = torch.Generator().manual_seed(seed)
    keep_m = _subsample(len(shadow_member_labels), n, generator)
    keep_n = _subsample(len(shadow_nonmember_labels), n, generator)
    members = _features(shadow_member_logits[keep_m], shadow_member_labels[keep_m])
    nonmembers = _features(shadow_nonmember_logits[keep_n], shadow_nonmember_labels[keep_n])
    target = _features(target_logits, target_labels)

    out: dict[str, float] = {}
    for name in SVC_MIA_FEATURES:
        out[f"member_rate_{name}"] = _fit_predict(members[name], nonmembers[name], target[name])
    out["member_rate"] = out["member_rate_confidence"]
    out["n_shadow"] = float(n)
    out["n_target"] = float(len(target_labels))
    return out
