"""ONNX export with a dynamic batch axis, checked in a real onnxruntime session."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
import torch
from torch import Tensor, nn

from delete.errors import OnnxExportError, OnnxParityError, UnlearningError
from delete.export import OnnxParityReport, check_onnx_parity, export_and_verify, export_onnx
from delete.models import SmallCNN


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Several test processes share two cores; more threads only add contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_like_cnn(seed: int) -> SmallCNN:
    """A SmallCNN with non-trivial BatchNorm statistics, as a trained model has."""
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=10, in_channels=1)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 28, 28))
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SmallCNN, Path, OnnxParityReport]:
    model = _trained_like_cnn(0)
    model.train()  # export must not depend on, nor change, the caller's mode
    path = tmp_path_factory.mktemp("onnx") / "small_cnn.onnx"
    started = time.perf_counter()
    report = export_and_verify(model, torch.zeros(2, 1, 28, 28), path, batch_sizes=(1, 7))
    print(
        f"\nSmallCNN 1x28x28 export_and_verify: {time.perf_counter() - started:.2f} s wall,"
        f" export {report.export_seconds:.2f} s"
    )
    assert model.training
    return model, path, report


def test_export_and_verify_small_cnn(exported: tuple[SmallCNN, Path, OnnxParityReport]) -> None:
    _, path, report = exported
    assert report.passed and report.batch_sizes == [1, 7]
    assert report.worst_abs_diff < 1e-4
    assert report.top1_agreement == {1: 1.0, 7: 1.0}
    assert report.onnx_path == str(path) and path.is_file()
    assert report.export_seconds is not None and report.export_seconds > 0
    assert report.provider == "CPUExecutionProvider" and report.onnxruntime_version
    assert report.to_dict()["max_abs_diff"].keys() == {"1", "7"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["small_cnn.onnx"]  # no temp files
    graph = onnx.load(str(path)).graph
    (model_input,) = graph.input
    batch_dim = model_input.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")  # symbolic batch axis
    assert [d.dim_value for d in model_input.type.tensor_type.shape.dim[1:]] == [1, 28, 28]


def test_parity_at_more_batch_sizes(exported: tuple[SmallCNN, Path, OnnxParityReport]) -> None:
    model, path, _ = exported
    batches = [torch.rand(n, 1, 28, 28) for n in (3, 16, 3)]
    report = check_onnx_parity(model, path, batches)
    assert report.batch_sizes == [3, 16] and report.passed
    assert report.worst_abs_diff < 1e-4


def test_other_weights_fail_parity(exported: tuple[SmallCNN, Path, OnnxParityReport]) -> None:
    _, path, _ = exported
    impostor = _trained_like_cnn(1)
    with pytest.raises(
        OnnxParityError, match=r"differs from PyTorch .* at batch sizes \[2, 5\]"
    ) as info:
        check_onnx_parity(impostor, path, [torch.rand(2, 1, 28, 28), torch.rand(5, 1, 28, 28)])
    assert "\n" not in str(info.value)
    report = info.value.report
    assert isinstance(report, OnnxParityReport) and not report.passed
    assert report.worst_abs_diff > 1e-2


def test_one_batch_size_is_not_enough(exported: tuple[SmallCNN, Path, OnnxParityReport]) -> None:
    model, path, _ = exported
    with pytest.raises(OnnxParityError, match=">= 2 different batch sizes"):
        check_onnx_parity(model, path, [torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)])
    two_sizes = [torch.rand(1, 1, 28, 28), torch.rand(2, 1, 28, 28)]
    with pytest.raises(OnnxParityError, match="does not exist"):
        check_onnx_parity(model, path.with_name("nope.onnx"), two_sizes)
    assert issubclass(OnnxParityError, UnlearningError)


class _CallCounter(nn.Module):
    """Adds how often it has been called: a Python side effect that export freezes to a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        return self.linear(x) + self.calls


def test_failed_verification_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "counter.onnx"
    with pytest.raises(OnnxParityError, match="counter.onnx|unverified"):
        export_and_verify(_CallCounter(), torch.zeros(2, 4), target, batch_sizes=(1, 3))
    assert list(tmp_path.iterdir()) == []


class _Eigh(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.linalg.eigh(x @ x.T)[0]  # no ONNX translation exists for eigh


def test_export_failure_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "bad.onnx"
    with pytest.raises(OnnxExportError, match="ONNX export of _Eigh failed: .*eigh") as info:
        export_onnx(_Eigh(), torch.rand(2, 4), target)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
