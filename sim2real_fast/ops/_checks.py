"""Python-side argument checks of the op wrappers.

The compiled ops check their arguments themselves (csrc/include/sim2real_fast/checks.h) and are the
authority. These checks run only where Python must look at the arguments before an op does (the
MMD's bandwidth heuristics) and on the pure-PyTorch fallback; their messages are the ops' own.
"""

from __future__ import annotations

import torch

_KERNEL_DTYPES = (torch.float32, torch.float64)
_UPCAST_DTYPES = (torch.float16, torch.bfloat16)


def tensors(op: str, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y must be tensors; returns them, half and bfloat16 upcast to float32 (the ops compute
    float32 and float64)."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dtype in _UPCAST_DTYPES and y.dtype == x.dtype:
        x, y = x.float(), y.float()
    return x, y


def feature_pair(op: str, x: torch.Tensor, y: torch.Tensor) -> None:
    """x (n, d) and y (m, d): floating point, one dtype, one device (the op's checks.h)."""
    for name, t in (("x", x), ("y", y)):
        if t.dim() != 2:
            raise ValueError(f"{op}: {name} must be 2-D ({'n' if name == 'x' else 'm'}, d), got shape {tuple(t.shape)}")
        if t.dtype not in _KERNEL_DTYPES:
            raise TypeError(f"{op}: {name} must be a floating-point tensor (float32 or float64), got {t.dtype}")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{op}: x and y must have the same feature size d, got x {tuple(x.shape)} and y {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"{op}: x and y must be on the same device, got x on {x.device} and y on {y.device}")
    if x.dtype != y.dtype:
        raise TypeError(f"{op}: x and y must have the same dtype, got x {x.dtype} and y {y.dtype}")


def min_samples(op: str, x: torch.Tensor, y: torch.Tensor, need: int, why: str) -> None:
    n, m = x.shape[0], y.shape[0]
    if n < need or m < need:
        raise ValueError(f"{op}: {why} needs at least {need} samples in x and in y, got n={n}, m={m}")
