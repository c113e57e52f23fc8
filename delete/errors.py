"""Exceptions raised by the core library.

Every error carries a one-line message that names the problem, so the CLI and the
pipeline can print it as is and the audit record can store it verbatim.
"""

from __future__ import annotations

__all__ = [
    "UnlearningError",
    "InvalidForgetSetError",
    "InvalidClassError",
    "MissingRetainDataError",
    "UnknownMethodError",
    "InvalidHparamError",
    "NonFiniteLossError",
    "CheckpointError",
    "DatasetError",
    "UnknownModelError",
    "OnnxExportError",
    "OnnxParityError",
]


class UnlearningError(ValueError):
    """Base class of every error the core library raises on bad input or failed training."""


class InvalidForgetSetError(UnlearningError):
    """The forget set is empty or does not contain the forget classes."""


class InvalidClassError(UnlearningError):
    """A forget class is out of range, duplicated, unknown, or every class was asked for."""


class MissingRetainDataError(UnlearningError):
    """A method that needs retained data was called without a retain loader."""


class UnknownMethodError(UnlearningError, KeyError):
    """No method is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidHparamError(UnlearningError):
    """A hyper-parameter is unknown to the method or has an invalid value."""


class NonFiniteLossError(UnlearningError):
    """The training loss became NaN or infinite; the partially trained model is discarded."""


class CheckpointError(UnlearningError):
    """A checkpoint is corrupt, truncated, pickled, or does not fit the architecture."""


class DatasetError(UnlearningError):
    """A dataset is missing on disk, incomplete, malformed, or asked for with bad options."""


class UnknownModelError(UnlearningError):
    """No model builder is registered under the requested name, or it cannot be built as asked."""


class OnnxExportError(UnlearningError):
    """``torch.onnx.export`` could not convert the model."""


class OnnxParityError(UnlearningError):
    """The exported ONNX model's outputs differ from the PyTorch model's beyond tolerance.

    ``report`` holds the :class:`~delete.export.OnnxParityReport` when the comparison ran.
    """

    report: object | None = None
