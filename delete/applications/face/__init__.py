"""Face-identity unlearning: forget people from a cosine-margin face recogniser.

The model (:class:`~delete.applications.face.model.CosineFaceNet`) returns scaled cosine
logits to one centre per identity, so ``delete.unlearn(face_model, forget_loader, [ids])``
works unchanged: DELETE masks the forgotten identities' logits in the frozen teacher and
distils the rest. Evaluation reports identity accuracy and 1:1 verification (TAR at a fixed
FAR, probe vs. gallery centroid) separately for forgotten and retained identities.

Verification uses only the embeddings, and an embedding network also verifies people it was
never trained on: a model retrained without an identity still verifies it (the benchmark's
Retrain row). DELETE at its default (BatchNorm frozen, small learning rate) removes the
identity from identification and lowers its TAR; with trained BatchNorm and a larger learning
rate it drives that TAR to 0, at a cost on the retained identities' TAR.

Without ``root`` the data are the real MNIST-5k digits standing in for ten identities (no face
dataset can be fetched offline); with ``root`` an ImageFolder tree of identity folders.

Modules: :mod:`~delete.applications.face.data` (identity folders, the MNIST-5k stand-in),
:mod:`~delete.applications.face.model` (the cosine-head network, registered as
``face_cosine``), :mod:`~delete.applications.face.loss` (CosFace / ArcFace),
:mod:`~delete.applications.face.metrics` (genuine / impostor scores, TAR at FAR) and
:mod:`~delete.applications.face.spec` (the evaluation and :data:`FACE_TASK`).
"""

from __future__ import annotations

from delete.applications.face.data import (
    load_face_data,
    load_identity_folder,
    load_mnist_identities,
)
from delete.applications.face.loss import CosineMarginLoss, face_margin_loss
from delete.applications.face.metrics import (
    VerificationScores,
    gallery_mask,
    tar_at_far,
    threshold_at_far,
    verification_scores,
)
from delete.applications.face.model import CosineFaceNet, CosineHead, face_model_spec
from delete.applications.face.spec import (
    FACE_TASK,
    FORGET_TAR_GATE,
    VERIFICATION_FAR,
    evaluate_face,
)

__all__ = [
    "FACE_TASK",
    "FORGET_TAR_GATE",
    "VERIFICATION_FAR",
    "CosineFaceNet",
    "CosineHead",
    "CosineMarginLoss",
    "VerificationScores",
    "evaluate_face",
    "face_margin_loss",
    "face_model_spec",
    "gallery_mask",
    "load_face_data",
    "load_identity_folder",
    "load_mnist_identities",
    "tar_at_far",
    "threshold_at_far",
    "verification_scores",
]
