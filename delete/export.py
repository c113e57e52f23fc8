"""ONNX export with a dynamic batch axis, verified against PyTorch with onnxruntime.

The export goes through ``torch.export`` (``torch.onnx.export(..., dynamo=True)``); the batch
dimension is a symbolic ``torch.export.Dim``, so one file serves every batch size. Parity is
checked by running the file in a real ``onnxruntime.InferenceSession`` (CPU provider) at two or
more batch sizes, because a batch axis that was silently specialised only shows up there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from delete.errors import OnnxExportError, OnnxParityError, one_line
from delete.models.clone import clone_module

__all__ = ["OnnxParityReport", "export_onnx", "check_onnx_parity", "export_and_verify"]

_INPUT_NAME = "input"
_OUTPUT_NAME = "logits"
_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class OnnxParityReport:
    """How closely an ONNX file reproduces the PyTorch model, per batch size.

    Attributes:
        onnx_path: The file that was checked.
        onnx_sha256: Hex SHA-256 of its bytes.
        max_abs_diff: Batch size -> largest ``|onnx - torch|`` over every output element.
        top1_agreement: Batch size -> fraction of samples with the same arg-max class.
        atol: Absolute tolerance used.
        rtol: Relative tolerance used (``|diff| <= atol + rtol * |torch|`` elementwise).
        passed: Whether every element of every batch was within tolerance.
        provider: The onnxruntime execution provider.
        onnxruntime_version: Version of onnxruntime that ran the file.
        export_seconds: Wall time of the export, when this report came from an export.

    Example:
        >>> diffs, agree = {1: 1e-7, 7: 2e-7}, {1: 1.0, 7: 1.0}
        >>> r = OnnxParityReport("m.onnx", "ab", diffs, agree, atol=1e-4, rtol=1e-3, passed=True)
        >>> r.batch_sizes, r.worst_abs_diff
        ([1, 7], 2e-07)
    """

    onnx_path: str
    onnx_sha256: str
    max_abs_diff: dict[int, float]
    top1_agreement: dict[int, float]
    atol: float
    rtol: float
    passed: bool
    provider: str = _PROVIDER
    onnxruntime_version: str = ""
    export_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def batch_sizes(self) -> list[int]:
        return sorted(self.max_abs_diff)

    @property
    def worst_abs_diff(self) -> float:
        return max(self.max_abs_diff.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (batch-size keys become strings)."""
        data = dataclasses.asdict(self)
        data["max_abs_diff"] = {str(k): v for k, v in self.max_abs_diff.items()}
        data["top1_agreement"] = {str(k): v for k, v in self.top1_agreement.items()}
        return data


def _cpu_eval_copy(model: nn.Module) -> nn.Module:
    # A copy, so neither the caller's device placement nor its train/eval mode is touched.
    return clone_module(model).cpu().eval()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    return one_line(_ANSI.sub("", str(exc)), 300) or type(exc).__name__


def _export_reason(exc: BaseException) -> str:
    """The exporter's headline plus the root cause from its "Exception summary" section."""
    text = _ANSI.sub("", str(exc))
    headline = _first_line(exc).removesuffix("Next steps:").strip()
    _, _, summary = text.partition("## Exception summary")
    cause = next((line.strip() for line in summary.splitlines() if line.strip()), "")
    cause = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>:", r"\1:", cause)
    return " ".join(f"{headline} {cause}".split())[:500]


def export_onnx(
    model: nn.Module,
    example_input: Tensor,
    path: str | os.PathLike[str],
    *,
    opset: int | None = None,
) -> Path:
    """Export ``model`` (in eval mode, on CPU) to ONNX with a dynamic batch axis, atomically.

    Args:
        model: A module mapping one tensor ``(N, ...)`` to one tensor ``(N, ...)``.
        example_input: One example batch; only its trailing dimensions are baked in.
        path: Destination ``.onnx`` file (weights embedded; models must stay under 2 GB).
        opset: ONNX opset version; ``None`` uses torch's recommended default.

    Returns:
        ``path``, written completely or not at all.

    Raises:
        OnnxExportError: ``torch.export`` or the ONNX translation failed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if example_input.dim() < 1:
        raise OnnxExportError("example_input needs a leading batch dimension")
    module = _cpu_eval_copy(model)
    example = example_input.detach().cpu()
    batch = torch.export.Dim("batch", min=1)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                dynamic_shapes=({0: batch},),
                input_names=[_INPUT_NAME],
                output_names=[_OUTPUT_NAME],
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - exporter failures come in many types
            raise OnnxExportError(
                f"ONNX export of {type(model).__name__} failed: {_export_reason(exc)}"
            ) from exc
        if program is None:  # only the legacy exporter returns None
            raise OnnxExportError(f"ONNX export of {type(model).__name__} returned no program")
        program.save(str(tmp), external_data=False)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _session(path: Path) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise OnnxParityError(f"ONNX file {path} does not exist")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise
    try:
        session = ort.InferenceSession(str(path), options, providers=[_PROVIDER])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise OnnxParityError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from exc
    if len(session.get_inputs()) != 1:
        names = [i.name for i in session.get_inputs()]
        raise OnnxParityError(f"ONNX file {path} has inputs {names}; exactly one is supported")
    return session


def check_onnx_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike[str],
    batches: Sequence[Tensor],
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> OnnxParityReport:
    """Run ``batches`` through ``model`` and through the ONNX file in onnxruntime; compare.

    Args:
        model: The PyTorch reference (evaluated on a CPU copy in eval mode).
        onnx_path: The exported file.
        batches: Inputs with at least two different batch sizes.
        atol: Absolute tolerance.
        rtol: Relative tolerance (elementwise ``|diff| <= atol + rtol * |torch|``).

    Returns:
        The per-batch-size report (``passed`` is True).

    Raises:
        OnnxParityError: Fewer than two batch sizes, an unloadable file, a runtime failure, a
            shape mismatch, or a difference beyond tolerance (``.report`` carries the figures).
    """
    sizes = sorted({int(b.shape[0]) for b in batches})
    if len(sizes) < 2:
        raise OnnxParityError(
            f"parity must be checked at >= 2 different batch sizes to prove the batch axis is"
            f" dynamic, got sizes {sizes}"
        )
    import onnxruntime as ort

    path = Path(onnx_path)
    session = _session(path)
    input_name = session.get_inputs()[0].name
    module = _cpu_eval_copy(model)
    max_abs: dict[int, float] = {}
    agreement: dict[int, list[float]] = {}
    failed: list[int] = []
    for batch in batches:
        x = batch.detach().cpu().contiguous()
        n = int(x.shape[0])
        with torch.no_grad():
            expected = module(x).float().numpy()
        try:
            got = np.asarray(session.run(None, {input_name: x.numpy()})[0])
        except Exception as exc:  # noqa: BLE001
            raise OnnxParityError(
                f"onnxruntime failed on {path.name} at batch size {n}: {_first_line(exc)}"
            ) from exc
        if got.shape != expected.shape:
            raise OnnxParityError(
                f"ONNX output shape {got.shape} != PyTorch {expected.shape} at batch size {n}"
            )
        diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        worst = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
        max_abs[n] = max(max_abs.get(n, 0.0), worst)
        if not np.all(diff <= atol + rtol * np.abs(expected.astype(np.float64))):
            failed.append(n)  # NaN compares False, so a NaN anywhere fails too
        if expected.ndim == 2 and len(expected):
            agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
            agreement.setdefault(n, []).append(agree)
    report = OnnxParityReport(
        onnx_path=str(path),
        onnx_sha256=_sha256(path),
        max_abs_diff=max_abs,
        top1_agreement={n: float(np.mean(v)) for n, v in agreement.items()},
        atol=atol,
        rtol=rtol,
        passed=not failed,
        onnxruntime_version=str(ort.__version__),
    )
    if failed:
        per_size = ", ".join(f"{n}: {max_abs[n]:.3g}" for n in sorted(max_abs))
        error = OnnxParityError(
            f"ONNX model {path.name} differs from PyTorch beyond atol={atol:g} rtol={rtol:g}"
            f" at batch sizes {sorted(set(failed))} (max |diff| per batch size: {per_size})"
        )
        error.report = report
        raise error
    return report


def export_and_verify(
    model: nn.Module,
    example_input: Tensor,
    path: str | os.PathLike[str],
    batch_sizes: Sequence[int] = (1, 7),
    atol: float = 1e-4,
    rtol: float = 1e-3,
    *,
    opset: int | None = None,
    seed: int = 0,
) -> OnnxParityReport:
    """Export to ``path`` and prove parity on seeded random inputs in ``[0, 1)``.

    The file appears at ``path`` only once parity holds; a failed check leaves nothing there.

    Args:
        model: The model to export.
        example_input: One example batch (its trailing shape and dtype define the inputs).
        path: Destination ``.onnx`` file.
        batch_sizes: At least two different batch sizes to check.
        atol: Absolute tolerance.
        rtol: Relative tolerance.
        opset: ONNX opset version (``None``: torch's default).
        seed: Seed of the random check inputs.

    Raises:
        OnnxExportError: The export failed.
        OnnxParityError: Parity does not hold (see :func:`check_onnx_parity`).

    Example:
        >>> import tempfile
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     report = export_and_verify(net, torch.zeros(2, 4), f"{tmp}/net.onnx")
        >>> report.passed, report.batch_sizes
        (True, [1, 7])
    """
    target = Path(path)
    staging = target.with_name(f".{target.stem}.{os.getpid()}.unverified.onnx")
    dtype = example_input.dtype if example_input.is_floating_point() else torch.float32
    generator = torch.Generator().manual_seed(seed)
    batches = [
        torch.rand((n, *example_input.shape[1:]), generator=generator, dtype=dtype)
        for n in batch_sizes
    ]
    try:
        started = time.perf_counter()
        export_onnx(model, example_input, staging, opset=opset)
        seconds = time.perf_counter() - started
        report = check_onnx_parity(model, staging, batches, atol, rtol)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return dataclasses.replace(report, onnx_path=str(target), export_seconds=seconds)
