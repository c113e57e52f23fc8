"""A restricted unpickler for array-only pickles such as the CIFAR python batches.

``pickle.load`` runs whatever callable the file names; a dataset file must not be able to run
code. Only the globals numpy needs to rebuild arrays are resolved; anything else is refused
before it is called.
"""

from __future__ import annotations

import pickle
from typing import IO, Any

__all__ = ["load_array_pickle"]

# numpy 1.x pickles (the CIFAR files were written with it) say numpy.core, numpy 2.x numpy._core.
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}
_MODULE_ALIASES = {
    "numpy.core.multiarray": "numpy._core.multiarray",
    "numpy.core.numeric": "numpy._core.numeric",
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        if module.startswith("numpy._core"):
            import numpy as np

            if not hasattr(np, "_core"):  # numpy 1.x has no _core package
                module = module.replace("numpy._core", "numpy.core")
        return super().find_class(module, name)


def load_array_pickle(handle: IO[bytes]) -> Any:
    """Unpickle ``handle`` allowing only builtins containers and numpy arrays (latin1 strings).

    Example:
        >>> import io, numpy as np
        >>> load_array_pickle(io.BytesIO(pickle.dumps({"data": np.zeros(2, np.uint8)})))["data"]
        array([0, 0], dtype=uint8)
    """
    return _ArrayUnpickler(handle, encoding="latin1").load()
