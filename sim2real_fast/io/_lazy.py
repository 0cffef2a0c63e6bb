"""Imports of the I/O back-ends on first use, with an install hint when one is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

_HINTS = {
    "uproot": "pip install 'uproot>=5'",
    "awkward": "pip install 'awkward>=2'",
    "h5py": "pip install 'h5py>=3'",
}


def require(module: str) -> ModuleType:
    """``import module``, or ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"sim2real_fast.io needs {module} for this format: {_HINTS[module]} "
            f"(it is a dependency of sim2real_fast; reinstall the package to get it)"
        ) from error
