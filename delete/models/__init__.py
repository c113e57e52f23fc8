"""Model builders: a small CPU CNN, ResNet-18 with a CIFAR stem, any torchvision classifier."""

from __future__ import annotations

from delete.models._registry import ModelSpec, build_model, list_models, register_model
from delete.models.outputs import LogitsOnly, logits_of
from delete.models.resnet_cifar import resnet18_cifar
from delete.models.small_cnn import SmallCNN
from delete.models.torchvision_models import (
    build_torchvision_classifier,
    list_torchvision_classifiers,
)

register_model("small_cnn")(SmallCNN)
register_model("resnet18_cifar")(resnet18_cifar)

__all__ = [
    "LogitsOnly",
    "ModelSpec",
    "SmallCNN",
    "build_model",
    "build_torchvision_classifier",
    "list_models",
    "list_torchvision_classifiers",
    "logits_of",
    "register_model",
    "resnet18_cifar",
]
