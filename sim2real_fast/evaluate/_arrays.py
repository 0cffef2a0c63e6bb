"""Input checks shared by the metrics: tensors or arrays in, float64 / int64 NumPy arrays out."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(x, op: str, name: str, *, ndim: int, dtype=np.float64) -> np.ndarray:
    """``x`` (tensor, array or sequence) as a ``dtype`` NumPy array of ``ndim`` dimensions; ValueError otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.ndim != ndim:
        shape = {1: "(N,)", 2: "(N, d)"}[ndim]
        raise ValueError(f"{op}: {name} must be {ndim}-D {shape}, got shape {array.shape}")
    if np.issubdtype(dtype, np.integer):
        if array.size and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{op}: {name} must hold integers, got dtype {array.dtype}")
        return array.astype(dtype, copy=False)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{op}: {name} must be numeric, got dtype {array.dtype}")
    array = array.astype(dtype, copy=False)
    if not np.isfinite(array).all():
        raise ValueError(f"{op}: {name} holds NaN or infinite values")
    return array


def feature_sets(source, target, op: str, *, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (N, d) float64 feature sets with the same d and at least ``min_samples`` rows each."""
    source = as_numpy(source, op, "source", ndim=2)
    target = as_numpy(target, op, "target", ndim=2)
    if source.shape[1] != target.shape[1]:
        raise ValueError(f"{op}: source and target must have the same feature size d, got {source.shape} and {target.shape}")
    if len(source) < min_samples or len(target) < min_samples:
        got = f"{len(source)} and {len(target)}"
        raise ValueError(f"{op}: needs at least {min_samples} samples in source and in target, got {got}")
    return source, target
