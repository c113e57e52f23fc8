"""Model builders: a small CPU CNN, ResNet-18 with a CIFAR stem, any torchvision classifier."""

from __future__ import annotations

from delete.models._registry import ModelSpec, build_model, list_models, register_model
from delete.models.small_cnn import SmallCNN

register_model("small_cnn")(SmallCNN)

__all__ = ["ModelSpec", "SmallCNN", "build_model", "list_models", "register_model"]
