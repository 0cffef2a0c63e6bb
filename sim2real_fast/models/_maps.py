"""What the occupancy-map models share: argument pairs, and the maps as the network sees them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def pair(owner: str, name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """``value`` as (rows, cols) of positive ints; ValueError naming ``owner`` and ``name`` otherwise."""
    both = (value, value) if isinstance(value, int) else tuple(value)
    if len(both) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in both):
        raise ValueError(f"{owner}: {name} must be a positive int or two positive ints, got {value!r}")
    return both


def prepared(model: nn.Module, maps: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or flat (N, C * H * W) maps -> (N, C, padded H, padded W) float32, after the model's
    log1p(max(x, 0)) / log_scale (if any) and zero padding at the bottom and the right.

    ``model`` has ``in_channels``, ``image_size``, ``padded_size`` and ``log_scale``; a wrong shape is a
    ValueError naming the model's class.
    """
    shape = (model.in_channels, *model.image_size)
    if maps.dim() == 2 and maps.shape[1] == math.prod(shape):
        maps = maps.unflatten(1, shape)
    elif maps.dim() != 4 or tuple(maps.shape[1:]) != shape:
        raise ValueError(
            f"{type(model).__name__}: expected maps (N, {', '.join(map(str, shape))}) or (N, {math.prod(shape)}), "
            f"got {tuple(maps.shape)}"
        )
    x = maps.float()
    if model.log_scale is not None:
        x = torch.log1p(x.clamp_min(0)) / model.log_scale
    pad_rows, pad_cols = (p - s for p, s in zip(model.padded_size, model.image_size))
    if pad_rows or pad_cols:
        x = F.pad(x, (0, pad_cols, 0, pad_rows))
    return x
