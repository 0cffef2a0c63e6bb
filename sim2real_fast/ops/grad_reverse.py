"""Gradient reversal and the DANN schedule.

The layer needs no kernel of its own: an autograd Function whose forward returns a view of x (no
copy, any device) and whose backward is one multiply, ``-alpha * grad``. torch.compile traces it.
"""

from __future__ import annotations

import math
import numbers

import torch

_OP = "sim2real_fast.grad_reverse"


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * -ctx.alpha, None


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass, ``-alpha * grad`` in the backward pass (Ganin & Lempitsky 2015).

    x: a floating-point (or complex) tensor of any shape, on any device. The output is a view of x
    (no copy): modifying it in place is refused by autograd when x requires grad, as for any view
    made by a custom autograd Function; apply in-place ops (``ReLU(inplace=True)``) after a layer
    that allocates.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{_OP}: x must be a torch.Tensor, got {type(x).__name__}")
    if not (x.dtype.is_floating_point or x.dtype.is_complex):
        raise TypeError(f"{_OP}: x must be a floating-point tensor (gradients need one), got {x.dtype}")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool):
        raise TypeError(f"{_OP}: alpha must be a float, got {type(alpha).__name__}")
    if not math.isfinite(alpha):
        raise ValueError(f"{_OP}: alpha must be finite, got {alpha}")
    return _GradReverse.apply(x, float(alpha))


def dann_alpha(progress: float, gamma: float = 10.0) -> float:
    """DANN schedule ``alpha(p) = 2 / (1 + exp(-gamma p)) - 1`` for training progress p in [0, 1].

    Rises from 0 at p = 0 to about 0.9999 at p = 1 with the paper's gamma = 10 (Ganin et al. 2016).
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"sim2real_fast.dann_alpha: progress must be in [0, 1], got {progress}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0
