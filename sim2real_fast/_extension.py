"""Loads the compiled operator library (``sim2real_fast._C``), which registers ``torch.ops.sim2real_fast.*``.

When the library is missing (a source checkout that was never built, or a build for another torch),
the public functions fall back to the pure-PyTorch implementations in :mod:`sim2real_fast.reference`
and a warning says how to build it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch  # noqa: F401  (loads libtorch before the extension links against it)


def how_to_build(package: Path, cwd: Path) -> str:
    """What the warning tells a user whose import found no compiled library in ``package``."""
    if package.parent == cwd and (cwd / "pyproject.toml").is_file():
        return ("Python imported the uncompiled source tree of the checkout in the current folder: run Python "
                "outside the checkout (or `python -P`) to import the installed package, or install in place with "
                "`pip install --no-build-isolation -e .`.")
    return "Build it with `pip install --no-build-isolation .` in an environment that has torch."

try:
    from . import _C
except ImportError as error:  # pragma: no cover - exercised only without a build
    _C = None
    _IMPORT_ERROR: ImportError | None = error
    warnings.warn(
        "sim2real_fast: the compiled library could not be loaded "
        f"({error}); using the pure-PyTorch reference implementations (slower, O(n m) memory). "
        + how_to_build(Path(__file__).resolve().parent, Path(os.getcwd()).resolve()),
        RuntimeWarning,
        stacklevel=2,
    )
else:
    _IMPORT_ERROR = None

HAS_EXTENSION: bool = _C is not None


def build_info() -> dict:
    """How the compiled library was built: ``cuda`` (bool), ``cuda_architectures``, ``torch_version``, ``openmp``.

    Returns ``{"extension": False, "error": ...}`` when the library is not available.
    """
    if _C is None:
        return {"extension": False, "error": str(_IMPORT_ERROR)}
    return {"extension": True, **_C.build_info()}
