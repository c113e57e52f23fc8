"""Exceptions raised by the core library.

Every error carries a one-line message that names the problem, so the CLI and the
pipeline can print it as is and the audit record can store it verbatim; :func:`one_line`
makes one of any other exception's message.
"""

from __future__ import annotations

__all__ = [
    "UnlearningError",
    "InvalidForgetSetError",
    "InvalidClassError",
    "MissingRetainDataError",
    "UnknownMethodError",
    "DuplicateRegistrationError",
    "InvalidHparamError",
    "InvalidRepairSetError",
    "NonFiniteLossError",
    "CheckpointError",
    "DatasetError",
    "UnknownModelError",
    "OnnxExportError",
    "OnnxParityError",
    "UnsupportedOutputError",
    "IncompatibleInputError",
    "InvalidDeviceError",
    "one_line",
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


class DuplicateRegistrationError(UnlearningError):
    """A method, model, dataset or task name is already registered for something else."""


class InvalidHparamError(UnlearningError):
    """A hyper-parameter is unknown to the method or has an invalid value."""


class NonFiniteLossError(UnlearningError):
    """The training loss became NaN or infinite; the partially trained model is discarded."""


class CheckpointError(UnlearningError):
    """A checkpoint is corrupt, truncated, pickled, or does not fit the architecture."""


class InvalidRepairSetError(UnlearningError):
    """A declared repair set is outside the dataset, holds forget samples, or is too large."""


class DatasetError(UnlearningError):
    """A dataset is missing on disk, incomplete, malformed, or asked for with bad options."""


class UnknownModelError(UnlearningError):
    """No model builder is registered under the requested name, or it cannot be built as asked."""


class UnsupportedOutputError(UnlearningError):
    """The model's ``forward`` returned something that holds no logits tensor."""


class IncompatibleInputError(UnlearningError):
    """The model cannot read the images it was given: their channels, size or dtype do not
    fit it, or it only takes one fixed batch size."""


class InvalidDeviceError(UnlearningError):
    """The device is not one torch knows, or is not present on this machine."""


class OnnxExportError(UnlearningError):
    """``torch.onnx.export`` could not convert the model."""


class OnnxParityError(UnlearningError):
    """The exported ONNX model's outputs differ from the PyTorch model's beyond tolerance.

    ``report`` holds the :class:`~delete.export.OnnxParityReport` when the comparison ran.
    """

    report: object | None = None


def one_line(message: BaseException | str, limit: int = 400, *, first_line: bool = True) -> str:
    """``message`` as one line of at most ``limit`` characters, for a person or a record.

    Its first non-empty line (``first_line=False``: all its lines, joined), runs of whitespace
    as one space; a longer one is cut to end in ``...``. An exception without a message gives
    its type name (an empty string stays empty). The one such helper: the pipeline
    (``tasks``, ``flows``) uses it too, with the limit each caller needs.

    Example:
        >>> one_line(ValueError("bad  thing\\n  more detail"))
        'bad thing'
        >>> one_line(KeyError())
        'KeyError'
        >>> one_line("first\\n  second", first_line=False)
        'first second'
        >>> one_line("x" * 10, limit=8)
        'xxxxx...'
    """
    text = str(message).strip()
    if not text:
        return "" if isinstance(message, str) else type(message).__name__
    if first_line:
        text = text.splitlines()[0]  # not blank: the text was stripped
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
