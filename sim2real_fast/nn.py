"""``torch.nn`` modules over the fused ops: MMDLoss, CORALLoss, GradientReversal."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .ops import DEFAULT_KERNEL_SCALES, coral, dann_alpha, grad_reverse, mmd

__all__ = ["CORALLoss", "GradientReversal", "MMDLoss", "dann_alpha"]


class MMDLoss(torch.nn.Module):
    """Multi-kernel Gaussian MMD^2 between source (n, d) and target (m, d) features.

    Options as in :func:`sim2real_fast.mmd`. A tensor ``bandwidth`` is stored as a buffer.
    """

    def __init__(
        self,
        *,
        estimator: str = "unbiased",
        bandwidth: str | float | torch.Tensor = "mean",
        kernel_scales: Sequence[float] = DEFAULT_KERNEL_SCALES,
        weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.estimator = estimator
        self.kernel_scales = tuple(float(s) for s in kernel_scales)
        self.weights = None if weights is None else tuple(float(w) for w in weights)
        if isinstance(bandwidth, torch.Tensor):
            self.register_buffer("bandwidth", bandwidth.detach().clone())
        else:
            self.bandwidth = bandwidth

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return mmd(
            source,
            target,
            estimator=self.estimator,
            bandwidth=self.bandwidth,
            kernel_scales=self.kernel_scales,
            weights=self.weights,
        )

    def extra_repr(self) -> str:
        bw = self.bandwidth if not isinstance(self.bandwidth, torch.Tensor) else f"tensor{tuple(self.bandwidth.shape)}"
        return f"estimator={self.estimator!r}, bandwidth={bw!r}, kernel_scales={self.kernel_scales}"


class CORALLoss(torch.nn.Module):
    """Deep CORAL loss ``||C_s - C_t||_F^2 / (4 d^2)`` between source (n, d) and target (m, d) features."""

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return coral(source, target)


class GradientReversal(torch.nn.Module):
    """Identity forward, ``-alpha * grad`` backward. Set ``alpha`` each step, e.g. from :func:`dann_alpha`."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"
