"""Deep CORAL loss (``torch.ops.sim2real_fast.coral``): wrapper and autograd."""

from __future__ import annotations

import torch

from .. import _extension
from . import _checks

_OP = "sim2real_fast.coral"


def coral(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Deep CORAL loss ``||C_x - C_y||_F^2 / (4 d^2)`` between x (n, d) and y (m, d); 0-dim tensor.

    ``C_x = (x - mean_x)^T (x - mean_x) / (n - 1)`` (Sun & Saenko 2016, as in pytorch-adapt; tllib
    uses 1/d^2 and adds a mean term). n != m allowed; needs n, m >= 2 and d >= 1. Float16/bfloat16
    inputs are computed in float32. NaN in x or y gives NaN. The compiled kernel centres rows in
    chunks and accumulates ``C_x - C_y`` into one (d, d) buffer, so neither centred copy nor either
    covariance is stored.
    """
    x, y = _checks.tensors(_OP, x, y)
    if not _extension.HAS_EXTENSION:  # the op's checks, then the reference
        from ..reference import coral as reference_coral

        _checks.feature_pair(_OP, x, y)
        if x.shape[1] < 1:
            raise ValueError(f"{_OP}: x and y must have at least one feature (d >= 1), got x {tuple(x.shape)}")
        _checks.min_samples(_OP, x, y, 2, "a covariance")
        return reference_coral(x, y)
    loss, _ = torch.ops.sim2real_fast.coral(x, y)
    return loss


if _extension.HAS_EXTENSION:

    @torch.library.register_fake("sim2real_fast::coral")
    def _coral_fake(x, y):
        torch._check(x.dim() == 2 and y.dim() == 2 and x.shape[1] == y.shape[1], lambda: "coral: x (n, d), y (m, d)")
        d = x.shape[1]
        return x.new_empty(()), x.new_empty((d, d))

    @torch.library.register_fake("sim2real_fast::_coral_backward")
    def _coral_backward_fake(g, x, y):
        return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(y, memory_format=torch.contiguous_format)

    def _coral_setup_context(ctx, inputs, output):
        x, y = inputs
        ctx.save_for_backward(x, y, output[1])

    def _coral_backward(ctx, grad_loss, grad_cov_diff):
        x, y, cov_diff = ctx.saved_tensors
        d = x.shape[1]
        # dL/d(cov_diff): the loss term, plus the symmetrised gradient of the cov_diff output.
        g = cov_diff * (grad_loss / (2.0 * d * d))
        if grad_cov_diff is not None:
            g = g + 0.5 * (grad_cov_diff + grad_cov_diff.mT)
        gx, gy = torch.ops.sim2real_fast._coral_backward(g, x, y)
        return gx, gy

    torch.library.register_autograd("sim2real_fast::coral", _coral_backward, setup_context=_coral_setup_context)
