"""Face verification metrics: genuine vs impostor cosine scores and TAR at a fixed FAR.

Each probe embedding is compared with the L2-normalised centroid of every identity's gallery
embeddings. Its score against its own identity's centroid is *genuine*; its scores against the
other identities' centroids are *impostor*. The acceptance threshold is set on the impostor
distribution so that at most a fraction ``far`` of impostor scores exceed it; TAR is the share
of genuine scores above that threshold.

TAR at FAR stays hand-written rather than read off torchmetrics' ``binary_roc``: the ROC
reaches the same operating point (ties included), but its rates are float32 (up to ~1e-7
relative off these float64 ones, pinned in ``tests/unit/test_applications_face.py``), it passes
scores outside ``[0, 1]`` (negative cosines) through a float32 sigmoid that can merge close
scores into ties, and its thresholds are the score just above the operating point, not the
impostor score :func:`threshold_at_far` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "VerificationScores",
    "gallery_mask",
    "verification_scores",
    "threshold_at_far",
    "tar_at_far",
]


@dataclass(frozen=True)
class VerificationScores:
    """Scores of every probe.

    Attributes:
        genuine: ``(P,)`` cosine of each probe to its own identity's gallery centroid.
        probe_labels: ``(P,)`` identity of each probe.
        impostor: ``(P, K)`` cosine of each probe to every centroid, ``nan`` where the centroid
            is the probe's own identity or the identity has no gallery image.
    """

    genuine: Tensor
    probe_labels: Tensor
    impostor: Tensor

    def genuine_of(self, identities: Sequence[int]) -> Tensor:
        """Genuine scores of the probes whose identity is in ``identities``."""
        keep = torch.isin(self.probe_labels, torch.as_tensor(list(identities), dtype=torch.long))
        return self.genuine[keep]

    def impostor_flat(self) -> Tensor:
        """Every impostor score as one vector."""
        return self.impostor[~torch.isnan(self.impostor)]


def gallery_mask(labels: Tensor, gallery_fraction: float = 0.5) -> Tensor:
    """Mark the first ``gallery_fraction`` (rounded down) of each identity's samples as gallery.

    At least one sample per identity is gallery and, when it has two or more, at least one is
    a probe.

    Example:
        >>> gallery_mask(torch.tensor([0, 0, 1, 1, 1, 0]), 0.5).tolist()
        [True, False, True, False, False, False]
    """
    if not 0.0 < gallery_fraction < 1.0:
        raise ValueError(f"gallery_fraction must be in (0, 1), got {gallery_fraction}")
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for identity in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == identity).flatten()
        n_gallery = min(max(1, int(len(idx) * gallery_fraction)), max(1, len(idx) - 1))
        mask[idx[:n_gallery]] = True
    return mask


def verification_scores(
    embeddings: Tensor, labels: Tensor, is_gallery: Tensor, num_identities: int | None = None
) -> VerificationScores:
    """Genuine and impostor cosine scores of the probes against per-identity gallery centroids.

    Args:
        embeddings: ``(N, D)`` embeddings (normalised here; any scale works).
        labels: ``(N,)`` identity of each sample.
        is_gallery: ``(N,)`` boolean, ``True`` for gallery samples, ``False`` for probes.
        num_identities: Number of identities ``K`` (default: ``labels.max() + 1``).

    Raises:
        ValueError: Mismatched lengths, or no probe or no gallery sample.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> s = verification_scores(emb, torch.tensor([0, 0, 1, 1]),
        ...                         torch.tensor([True, False, True, False]))
        >>> [round(v, 3) for v in s.genuine.tolist()]
        [0.995, 0.995]
        >>> [round(v, 3) for v in s.impostor_flat().tolist()]
        [0.1, 0.1]
    """
    if not len(embeddings) == len(labels) == len(is_gallery):
        raise ValueError(
            f"{len(embeddings)} embeddings, {len(labels)} labels, {len(is_gallery)} gallery flags"
        )
    if bool(is_gallery.all()) or not bool(is_gallery.any()):
        raise ValueError("verification needs at least one gallery and one probe sample")
    labels = labels.long()
    k = int(labels.max()) + 1 if num_identities is None else num_identities
    emb = F.normalize(embeddings.float(), dim=1)
    gal_emb, gal_lab = emb[is_gallery], labels[is_gallery]
    sums = torch.zeros(k, emb.shape[1]).index_add_(0, gal_lab, gal_emb)
    present = torch.bincount(gal_lab, minlength=k) > 0
    centroids = F.normalize(sums, dim=1)
    probe_emb, probe_lab = emb[~is_gallery], labels[~is_gallery]
    scores = probe_emb @ centroids.T
    genuine = scores.gather(1, probe_lab[:, None]).squeeze(1)
    impostor = scores.clone()
    impostor[:, ~present] = float("nan")
    impostor.scatter_(1, probe_lab[:, None], float("nan"))
    # A probe whose identity has no gallery image has no genuine score.
    has_centroid = present[probe_lab]
    return VerificationScores(genuine[has_centroid], probe_lab[has_centroid], impostor)


def threshold_at_far(impostor: Tensor, far: float) -> float:
    """The smallest threshold that at most ``far`` of the impostor scores exceed (strictly).

    Example:
        >>> scores = torch.arange(1, 11, dtype=torch.float64) / 10
        >>> threshold_at_far(scores, far=0.1)  # only 1.0 exceeds 0.9
        0.9
    """
    if not 0.0 <= far < 1.0:
        raise ValueError(f"far must be in [0, 1), got {far}")
    if impostor.numel() == 0:
        raise ValueError("no impostor scores: verification needs at least two identities")
    ordered = impostor.flatten().double().sort(descending=True).values
    allowed = int(far * len(ordered) + 1e-9)
    return float(ordered[allowed])


def tar_at_far(genuine: Tensor, impostor: Tensor, far: float = 1e-2) -> float:
    """True accept rate (share of genuine scores above the threshold at ``far``), in ``[0, 1]``.

    Example:
        >>> tar_at_far(torch.tensor([0.95, 0.85]), torch.arange(1, 11.0) / 10, far=0.1)
        0.5
    """
    if genuine.numel() == 0:
        raise ValueError("no genuine scores to evaluate")
    threshold = threshold_at_far(impostor, far)
    return float((genuine.double() > threshold).double().mean())
