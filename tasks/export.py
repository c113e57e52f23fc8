"""Package a model for the registry: safetensors weights, spec JSON, ONNX checked in onnxruntime."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import nn

from delete.checkpoint import file_sha256, save_model
from delete.export import export_and_verify
from delete.models import ModelSpec

__all__ = ["ModelPackage", "package_model", "package_model_task"]


@dataclass(frozen=True)
class ModelPackage:
    """A directory holding ``model.safetensors``, ``spec.json`` and ``model.onnx``."""

    model_dir: str
    weights_path: str
    spec_path: str
    onnx_path: str
    weights_sha256: str
    onnx_sha256: str
    parity: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_dir": self.model_dir,
            "weights_path": self.weights_path,
            "spec_path": self.spec_path,
            "onnx_path": self.onnx_path,
            "weights_sha256": self.weights_sha256,
            "onnx_sha256": self.onnx_sha256,
            "parity": self.parity,
        }


def package_model(
    model: nn.Module,
    spec: ModelSpec,
    out_dir: str | os.PathLike[str],
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> ModelPackage:
    """Write weights and spec, export ONNX and prove parity at two batch sizes.

    ``atol``/``rtol`` are the parity tolerances (``PipelineSettings.onnx_atol``/``onnx_rtol``).

    Raises:
        delete.errors.OnnxExportError: The export failed.
        delete.errors.OnnxParityError: onnxruntime disagrees with PyTorch beyond tolerance.
    """
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    weights = save_model(model, spec, directory / "model.safetensors")
    spec_path = directory / "spec.json"
    spec_path.write_text(json.dumps(spec.to_dict(), indent=2, sort_keys=True) + "\n")
    example = torch.zeros(2, spec.in_channels, *spec.input_hw)
    report = export_and_verify(model, example, directory / "model.onnx", atol=atol, rtol=rtol)
    return ModelPackage(
        model_dir=str(directory),
        weights_path=str(weights),
        spec_path=str(spec_path),
        onnx_path=report.onnx_path,
        weights_sha256=file_sha256(weights),
        onnx_sha256=report.onnx_sha256,
        parity=report.to_dict(),
    )


package_model_task = task(name="export-onnx", cache_policy=NO_CACHE)(package_model)
