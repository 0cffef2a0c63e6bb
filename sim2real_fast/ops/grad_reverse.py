"""Gradient reversal (``torch.ops.sim2real_fast.grad_reverse``) and the DANN schedule."""

from __future__ import annotations

import math

import torch

from .. import _extension


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass, ``-alpha * grad`` in the backward pass (Ganin & Lempitsky 2015).

    x: any shape. The output is a new tensor (not a view of x), so in-place use downstream is safe.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"sim2real_fast.grad_reverse: x must be a torch.Tensor, got {type(x).__name__}")
    alpha = float(alpha)
    if not _extension.HAS_EXTENSION:
        from ..reference import grad_reverse as reference_grad_reverse

        return reference_grad_reverse(x, alpha)
    return torch.ops.sim2real_fast.grad_reverse(x, alpha)


def dann_alpha(progress: float, gamma: float = 10.0) -> float:
    """DANN schedule ``alpha(p) = 2 / (1 + exp(-gamma p)) - 1`` for training progress p in [0, 1].

    Rises from 0 at p = 0 to about 0.9999 at p = 1 with the paper's gamma = 10 (Ganin et al. 2016).
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"sim2real_fast.dann_alpha: progress must be in [0, 1], got {progress}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


if _extension.HAS_EXTENSION:

    def _grad_reverse_setup_context(ctx, inputs, output):
        ctx.alpha = inputs[1]

    def _grad_reverse_backward(ctx, grad):
        return grad * -ctx.alpha, None

    torch.library.register_autograd(
        "sim2real_fast::grad_reverse", _grad_reverse_backward, setup_context=_grad_reverse_setup_context
    )
