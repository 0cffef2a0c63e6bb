"""Reference multi-kernel Gaussian MMD^2: explicit pairwise matrices, autograd for gradients."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops.mmd import DEFAULT_KERNEL_SCALES


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances."""
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def bandwidth_heuristic(x: torch.Tensor, y: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Base squared bandwidth h from explicit pairwise distances of the pooled z = [x; y] (detached)."""
    z = torch.cat([x, y]).detach()
    z = z - z.mean(0)
    total = z.shape[0]
    if method == "mean":
        h = _sq_dists(z, z).sum() / (total * (total - 1))  # the diagonal is zero
    elif method == "median":
        s = min(total, 1024)
        sub = z[torch.arange(s, device=z.device) * total // s]
        iu = torch.triu_indices(s, s, offset=1, device=z.device)
        h = torch.quantile(_sq_dists(sub, sub)[iu[0], iu[1]], 0.5)
    else:
        raise ValueError(f"unknown bandwidth heuristic {method!r}")
    return h.clamp_min(torch.finfo(z.dtype).tiny ** 0.5)


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    estimator: str = "unbiased",
    bandwidth: str | float | torch.Tensor = "mean",
    kernel_scales: Sequence[float] = DEFAULT_KERNEL_SCALES,
    weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Same contract as :func:`sim2real_fast.mmd`, computed naively (O(K n m) memory)."""
    if isinstance(bandwidth, torch.Tensor) and bandwidth.dim() == 1:
        sigma2 = bandwidth.detach().to(x)
    else:
        if isinstance(bandwidth, str):
            h = bandwidth_heuristic(x, y, bandwidth)
        else:
            h = torch.as_tensor(bandwidth, dtype=x.dtype, device=x.device).detach()
        sigma2 = h * torch.tensor(tuple(kernel_scales), dtype=x.dtype, device=x.device)
    k = sigma2.shape[0]
    w = torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device) if weights is None else torch.as_tensor(weights, dtype=x.dtype, device=x.device).detach()

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        d = _sq_dists(a, b)
        return (w[:, None, None] * torch.exp(-d[None] / (2.0 * sigma2[:, None, None]))).sum(0)

    n, m = x.shape[0], y.shape[0]
    # Centring by the pooled mean changes no distance and keeps the norm expansion accurate.
    centre = torch.cat([x, y]).mean(0).detach()
    x, y = x - centre, y - centre
    if estimator == "linear":
        pairs = min(n, m) // 2
        a, b = x[0 : 2 * pairs : 2], x[1 : 2 * pairs : 2]
        c, e = y[0 : 2 * pairs : 2], y[1 : 2 * pairs : 2]

        def k_pair(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
            d = (p - q).square().sum(1)
            return (w[:, None] * torch.exp(-d[None] / (2.0 * sigma2[:, None]))).sum(0)

        return (k_pair(a, b) + k_pair(c, e) - k_pair(a, e) - k_pair(b, c)).mean()
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    if estimator == "unbiased":
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    elif estimator == "biased":
        sxx, syy = kxx.sum() / (n * n), kyy.sum() / (m * m)
    else:
        raise ValueError(f"unknown estimator {estimator!r}")
    return sxx + syy - 2.0 * kxy.sum() / (n * m)
