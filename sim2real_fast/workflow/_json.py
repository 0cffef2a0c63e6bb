"""Strict JSON for the commands' results files: NaN and infinities as null, written atomically."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..io._atomic import atomic_path

__all__ = ["strict", "write_json"]


def strict(value):
    """JSON-ready: NaN and infinities become None, tensors and numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, (torch.Tensor, np.generic)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: dict) -> None:
    """``data`` as strict JSON in ``path`` (its folder created), for other programs to read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(strict(data), indent=2, allow_nan=False) + "\n")
