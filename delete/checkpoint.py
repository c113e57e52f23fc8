"""Weights-only model files: safetensors tensors plus the architecture spec as metadata.

No load path ever unpickles: safetensors cannot carry code, and ``.pt`` files are read with
``torch.load(weights_only=True)``. A corrupt, truncated, pickled or mismatched file raises
:class:`~delete.errors.CheckpointError` with a one-line reason.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from delete.errors import CheckpointError, UnknownModelError, one_line
from delete.models import ModelSpec, build_model

__all__ = ["save_model", "load_model", "file_sha256", "state_dict_sha256"]

#: The one metadata key of the files :func:`save_model` writes: JSON of ``{"spec": the
#: architecture, "module_versions": the modules' state-dict format versions}``. The versions
#: (``state_dict()._metadata``) are not tensors, so safetensors cannot hold them beside the
#: tensors, and torchvision's MNASNet refuses a state without them. One key, because
#: safetensors writes its metadata in the order of a Rust hash map, which changes from process
#: to process: with two keys the same model gave two files (two SHA-256) one time in two.
_MODEL_KEY = "delete.model"
#: The keys of files written before :data:`_MODEL_KEY` (read, never written).
_SPEC_KEY = "delete.model_spec"
_VERSIONS_KEY = "delete.module_versions"


def save_model(model: nn.Module, spec: ModelSpec, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s state_dict and ``spec`` to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    record: dict[str, object] = {"spec": spec.to_dict()}
    versions = getattr(state, "_metadata", None)
    if versions is not None:
        record["module_versions"] = versions
    metadata = {_MODEL_KEY: json.dumps(record, sort_keys=True, default=str)}
    tmp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, target)
    return target


def _model_record(metadata: dict[str, str]) -> dict[str, object]:
    """``{"spec"?, "module_versions"?}`` from a file's metadata, either layout (JSON text)."""
    if _MODEL_KEY in metadata:
        record = json.loads(metadata[_MODEL_KEY])
        if not isinstance(record, dict):
            raise ValueError(f"{_MODEL_KEY} is not a JSON object")
        return record
    legacy = {"spec": _SPEC_KEY, "module_versions": _VERSIONS_KEY}
    return {name: json.loads(metadata[key]) for name, key in legacy.items() if key in metadata}


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """The state dict (with its modules' versions) and the model record of ``path``."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                record = _model_record(dict(handle.metadata() or {}))
                state = OrderedDict((k, handle.get_tensor(k)) for k in handle.keys())  # noqa: SIM118
                versions = record.get("module_versions")
                if isinstance(versions, dict):
                    state._metadata = OrderedDict(versions)  # type: ignore[attr-defined]
                return state, record
        except Exception as exc:  # noqa: BLE001 - every parse failure means a corrupt file
            raise CheckpointError(
                f"model file {path} is corrupt or truncated: {one_line(exc)}"
            ) from exc
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            f"model file {path} refused (not a weights-only checkpoint): {one_line(exc)}"
        ) from exc
    if not isinstance(payload, dict) or not all(
        isinstance(v, torch.Tensor) for v in payload.values()
    ):
        raise CheckpointError(f"model file {path} is not a state_dict of tensors")
    return payload, {}


def load_model(
    path: str | os.PathLike[str], spec: ModelSpec | None = None
) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the architecture and load the weights, strictly.

    Args:
        path: A ``.safetensors`` file written by :func:`save_model`, or a weights-only ``.pt``.
        spec: The architecture, when the file does not carry it (``.pt`` files).

    Raises:
        CheckpointError: Missing, corrupt, pickled or architecture-mismatched file.
    """
    source = Path(path)
    if not source.is_file():
        raise CheckpointError(f"model file {source} does not exist")
    state, record = _read_state_dict(source)
    if spec is None:
        if "spec" not in record:
            raise CheckpointError(f"model file {source} carries no architecture spec; pass spec=")
        try:
            spec = ModelSpec.from_dict(record["spec"])  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"model file {source} has an invalid architecture spec: {exc}"
            ) from exc
    try:
        model = build_model(spec)
    except UnknownModelError as exc:
        raise CheckpointError(
            f"model file {source} names an unbuildable architecture: {exc}"
        ) from exc
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:  # MNASNet raises ValueError on old formats
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"model file {source} does not fit architecture {spec.arch!r}: {reason}"
        ) from exc
    return model.eval(), spec


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def state_dict_sha256(model: nn.Module) -> str:
    """Hex SHA-256 over a model's parameters and buffers, in key order (file-format independent)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
