"""Evaluation of class unlearning, in two layers.

Pure functions on tensors (:func:`accuracy`, :func:`per_class_accuracy`, :func:`h_mean`,
:func:`svc_mia`, :func:`forget_vs_unseen_auc`, :func:`js_divergence`), thin stateful
wrappers that accumulate over batches (:class:`Accuracy`, :class:`PerClassAccuracy`), and
:func:`evaluate_unlearning`, which runs a model over the four splits and computes them all.

Example:
    >>> from delete.metrics import h_mean
    >>> h_mean(test_forget_acc=0.0, test_retain_acc=98.0)
    98.98989898989899
"""

from __future__ import annotations

from delete.metrics._validation import MetricInputError
from delete.metrics.accuracy import Accuracy, accuracy
from delete.metrics.forget_vs_unseen_auc import forget_vs_unseen_auc
from delete.metrics.h_mean import h_mean
from delete.metrics.js_divergence import js_divergence
from delete.metrics.mia_features import (
    cross_entropy_loss,
    modified_entropy,
    prediction_entropy,
    probabilities,
    true_class_confidence,
)
from delete.metrics.per_class_accuracy import PerClassAccuracy, per_class_accuracy
from delete.metrics.predict import predict
from delete.metrics.report import REPORT_METRICS, UnlearningReport, evaluate_unlearning
from delete.metrics.shared import shared_predictions
from delete.metrics.svc_mia import SVC_MIA_FEATURES, svc_mia

__all__ = [
    "REPORT_METRICS",
    "SVC_MIA_FEATURES",
    "Accuracy",
    "MetricInputError",
    "PerClassAccuracy",
    "UnlearningReport",
    "accuracy",
    "cross_entropy_loss",
    "evaluate_unlearning",
    "forget_vs_unseen_auc",
    "h_mean",
    "js_divergence",
    "modified_entropy",
    "per_class_accuracy",
    "predict",
    "prediction_entropy",
    "probabilities",
    "shared_predictions",
    "svc_mia",
    "true_class_confidence",
]
