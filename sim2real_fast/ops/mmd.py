"""Multi-kernel Gaussian MMD^2 (``torch.ops.sim2real_fast.mmd``): wrapper, bandwidth heuristics, autograd."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import _extension
from . import _checks

ESTIMATORS = ("unbiased", "biased", "linear")
DEFAULT_KERNEL_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)
#: Pooled points used by ``bandwidth="median"``: z[floor(i * N / s)] for i < s = min(N, 1024).
MEDIAN_SUBSAMPLE = 1024

_OP = "sim2real_fast.mmd"


def median_subsample_indices(total: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices of the deterministic subsample of the pooled ``z = [x; y]`` used by the median heuristic."""
    s = min(total, MEDIAN_SUBSAMPLE)
    return torch.arange(s, device=device) * total // s


def bandwidth_heuristic(x: torch.Tensor, y: torch.Tensor, method: str = "mean") -> torch.Tensor:
    """Heuristic base squared bandwidth ``h`` of the pooled samples ``z = [x; y]`` (0-dim, detached).

    - ``"mean"``: the mean of ``||z_i - z_j||^2`` over all ordered pairs ``i != j``, computed in
      O((n + m) d) as ``2 / (N - 1) * sum_i ||z_i - mean(z)||^2`` (N = n + m) without forming pairs.
    - ``"median"``: the median (``torch.quantile(q=0.5)``, linear interpolation) of ``||z_a - z_b||^2``
      over all pairs ``a < b`` of the subsample ``z[floor(i N / s)]``, ``i < s = min(N, 1024)``.

    The result is clamped below by the square root of the dtype's smallest normal number (about
    1e-19 in float32), so identical samples give a finite kernel. NaN in the input, or fewer than 2
    samples in all, gives NaN.
    """
    x, y = x.detach(), y.detach()
    n, m = x.shape[0], y.shape[0]
    total = n + m
    if x.shape[1] == 0:  # no features: every distance is zero
        h = x.new_zeros(())
    elif method == "mean":
        # sum_i ||z_i - mean(z)||^2 from per-domain means and variances: O(d) extra memory.
        mean_x, mean_y = x.mean(0), y.mean(0)
        pooled = (n * mean_x + m * mean_y) / total
        sum_sq = n * (x.var(0, correction=0).sum() + (mean_x - pooled).square().sum()) + m * (
            y.var(0, correction=0).sum() + (mean_y - pooled).square().sum()
        )
        h = 2.0 * sum_sq / (total - 1)
    elif method == "median" and total < 2:  # no pair: undefined, as the mean's 0 / 0
        h = x.new_full((), math.nan)
    elif method == "median":
        idx = median_subsample_indices(total, x.device)
        from_x = -(-n * idx.shape[0] // total)  # indices i * N // s below n: i < ceil(n s / N)
        z = torch.cat([x.index_select(0, idx[:from_x]), y.index_select(0, idx[from_x:] - n)])
        z = z - z.mean(0)
        sq = z.square().sum(1)
        dist = (sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)).clamp_min(0.0)
        iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=x.device)
        h = torch.quantile(dist[iu[0], iu[1]], 0.5)
    else:
        raise ValueError(f"{_OP}: bandwidth must be 'mean', 'median', a positive float or a 1-D tensor, got {method!r}")
    return h.clamp_min(torch.finfo(x.dtype).tiny ** 0.5)


def resolve_kernels(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidth: str | float | torch.Tensor,
    kernel_scales: Sequence[float],
    weights: Sequence[float] | torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-kernel squared bandwidths ``sigma2`` (K,) and weights (K,), in x's dtype and device."""
    sigma2, w, _ = _resolve_kernels(x, y, bandwidth, kernel_scales, weights)
    return sigma2, w


def _resolve_kernels(x, y, bandwidth, kernel_scales, weights):
    """resolve_kernels and, for a heuristic bandwidth, a 0-dim tensor that is 0 where the heuristic is
    finite and NaN where it is not (then sigma2 holds a stand-in; None for a given bandwidth)."""
    opts = {"dtype": x.dtype, "device": x.device}
    undefined = None
    if isinstance(bandwidth, torch.Tensor) and bandwidth.requires_grad:
        raise ValueError(f"{_OP}: gradients with respect to the bandwidth are not computed; pass bandwidth.detach()")
    if isinstance(bandwidth, torch.Tensor) and bandwidth.dim() == 1:
        if bandwidth.numel() == 0:
            raise ValueError(f"{_OP}: a bandwidth tensor must hold at least one squared bandwidth")
        sigma2 = bandwidth.to(**opts)
    else:
        scales = tuple(float(s) for s in kernel_scales)
        if not scales or min(scales) <= 0:
            raise ValueError(f"{_OP}: kernel_scales must be a non-empty sequence of positive numbers, got {kernel_scales!r}")
        if isinstance(bandwidth, str):
            h = bandwidth_heuristic(x, y, bandwidth)
            # Non-finite samples make h NaN or inf, which the op refuses: it gets a stand-in, and
            # mmd() makes the loss NaN (the linear estimator may not read the non-finite rows).
            undefined = h - h
            h = torch.where(torch.isfinite(h), h, torch.ones_like(h))
        elif isinstance(bandwidth, torch.Tensor) and bandwidth.dim() == 0:
            h = bandwidth.to(**opts)
        elif isinstance(bandwidth, (int, float)) and not isinstance(bandwidth, bool):
            if not (bandwidth > 0 and bandwidth < float("inf")):
                raise ValueError(f"{_OP}: a float bandwidth must be positive and finite, got {bandwidth}")
            h = torch.tensor(float(bandwidth), **opts)
        else:
            raise ValueError(f"{_OP}: bandwidth must be 'mean', 'median', a positive float or a 1-D tensor, got {bandwidth!r}")
        sigma2 = h * torch.tensor(scales, **opts)
    k = sigma2.shape[0]
    if weights is None:
        w = torch.full((k,), 1.0 / k, **opts)
    else:
        w = torch.as_tensor(weights, **opts).detach()
        if w.dim() != 1 or w.shape[0] != k:
            raise ValueError(f"{_OP}: weights must be 1-D with one entry per kernel ({k}), got shape {tuple(w.shape)}")
    return sigma2, w, undefined


def _check_kernel_values(sigma2: torch.Tensor, w: torch.Tensor) -> None:
    """The compiled op's value checks, for the pure-PyTorch fallback (same messages)."""
    for k, (s, v) in enumerate(zip(sigma2.tolist(), w.tolist())):
        if not (s > 0 and math.isfinite(s)):
            raise ValueError(f"{_OP}: squared bandwidths must be positive and finite, got sigma2[{k}] = {s}")
        if not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{_OP}: kernel weights must be finite and non-negative, got weights[{k}] = {v}")


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    estimator: str = "unbiased",
    bandwidth: str | float | torch.Tensor = "mean",
    kernel_scales: Sequence[float] = DEFAULT_KERNEL_SCALES,
    weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-kernel Gaussian MMD^2 between samples x (n, d) and y (m, d); returns a 0-dim tensor.

    Kernel ``k(a, b) = sum_k w_k exp(-||a - b||^2 / (2 sigma_k^2))`` with ``sigma_k^2 = s_k h``:
    ``s_k`` from ``kernel_scales``, ``h`` from ``bandwidth`` (``"mean"``, ``"median"``: see
    :func:`bandwidth_heuristic`; a float: ``h`` itself). A 1-D tensor ``bandwidth`` gives the
    ``sigma_k^2`` directly (``kernel_scales`` is then ignored). ``weights`` default to ``1/K``.
    Heuristic bandwidths are constants for autograd (detached); gradients flow to x and y only.

    ``estimator``:
    - ``"unbiased"``: U-statistic, within-domain sums exclude i = j (needs n, m >= 2);
    - ``"biased"``: V-statistic, all pairs (n, m >= 1);
    - ``"linear"``: Gretton's linear-time estimator on L = floor(min(n, m) / 2) consecutive pairs
      ``(x_2l, x_2l+1, y_2l, y_2l+1)``: ``mean_l k(x,x') + k(y,y') - k(x,y') - k(x',y)``.

    n != m is allowed. Float16/bfloat16 inputs are computed in float32. NaN or +-inf in x or y gives NaN
    (with a given bandwidth, the linear estimator reads only its 2 L rows of each).
    Squared bandwidths must be positive and finite and weights finite and non-negative (ValueError
    otherwise). Second derivatives (``create_graph=True``) raise NotImplementedError; use
    :func:`sim2real_fast.reference.mmd` for them.
    The compiled kernels are tiled: no n x m matrix is formed, memory is O((n + m) d). When x or y
    requires grad, one pass computes the value and the gradients (kept until backward, which scales
    them); otherwise only the value is computed.
    """
    x, y = _checks.tensors(_OP, x, y)
    _checks.feature_pair(_OP, x, y)  # the bandwidth heuristics look at x and y before the op does
    if not _extension.HAS_EXTENSION:  # the op's checks, then the reference
        from ..reference import mmd as reference_mmd

        if estimator not in ESTIMATORS:
            raise ValueError(f"{_OP}: estimator must be 'unbiased', 'biased' or 'linear', got {estimator!r}")
        _checks.min_samples(_OP, x, y, {"unbiased": 2, "biased": 1, "linear": 2}[estimator], f"the {estimator} estimator")
        _check_kernel_values(*resolve_kernels(x, y, bandwidth, kernel_scales, weights))
        return reference_mmd(x, y, estimator=estimator, bandwidth=bandwidth, kernel_scales=kernel_scales, weights=weights)
    sigma2, w, undefined = _resolve_kernels(x, y, bandwidth, kernel_scales, weights)
    if torch.is_grad_enabled() and (x.requires_grad or y.requires_grad):
        # One pass computes the value and the gradients that are needed (each exponential and block
        # of dot products once); backward only scales them.
        value, _, _ = torch.ops.sim2real_fast._mmd_with_grad(x, y, sigma2, w, estimator, x.requires_grad, y.requires_grad)
    else:
        value = torch.ops.sim2real_fast.mmd(x, y, sigma2, w, estimator)
    # NaN (value and gradients) where a heuristic bandwidth is undefined; exact otherwise.
    return value if undefined is None else value * (1 + undefined)


if _extension.HAS_EXTENSION:

    @torch.library.register_fake("sim2real_fast::mmd")
    def _mmd_fake(x, y, sigma2, weights, estimator):
        torch._check(x.dim() == 2 and y.dim() == 2 and x.shape[1] == y.shape[1], lambda: "mmd: x (n, d), y (m, d)")
        return x.new_empty(())

    def _gradient_fake(t, needed):
        return torch.empty_like(t, memory_format=torch.contiguous_format) if needed else t.new_empty((0,))

    @torch.library.register_fake("sim2real_fast::_mmd_backward")
    def _mmd_backward_fake(grad, x, y, sigma2, weights, estimator, grad_x=True, grad_y=True):
        return _gradient_fake(x, grad_x), _gradient_fake(y, grad_y)

    def _no_double_backward():
        # With create_graph=True, backward runs with grad mode on; the saved gradients are constants
        # for autograd, so a second derivative through them would be silently wrong (zero).
        if torch.is_grad_enabled():
            raise NotImplementedError(
                f"{_OP}: double backward (create_graph=True) is not implemented for the compiled MMD; "
                "use sim2real_fast.reference.mmd for higher-order gradients"
            )

    def _mmd_setup_context(ctx, inputs, output):
        x, y, sigma2, weights, estimator = inputs
        ctx.save_for_backward(x, y, sigma2, weights)
        ctx.estimator = estimator

    def _mmd_backward(ctx, grad):
        _no_double_backward()
        x, y, sigma2, weights = ctx.saved_tensors
        grad_x, grad_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gx, gy = torch.ops.sim2real_fast._mmd_backward(grad, x, y, sigma2, weights, ctx.estimator, grad_x, grad_y)
        return gx if grad_x else None, gy if grad_y else None, None, None, None

    torch.library.register_autograd("sim2real_fast::mmd", _mmd_backward, setup_context=_mmd_setup_context)

    @torch.library.register_fake("sim2real_fast::_mmd_with_grad")
    def _mmd_with_grad_fake(x, y, sigma2, weights, estimator, grad_x=True, grad_y=True):
        return _mmd_fake(x, y, sigma2, weights, estimator), *_mmd_backward_fake(None, x, y, sigma2, weights, estimator, grad_x, grad_y)

    def _mmd_with_grad_setup_context(ctx, inputs, output):
        x, y, sigma2, weights, estimator, grad_x, grad_y = inputs
        _, gx, gy = output
        ctx.mark_non_differentiable(gx, gy)
        ctx.set_materialize_grads(False)  # no zero-filled (n, d) and (m, d) grads for gx and gy
        ctx.save_for_backward(x, y, sigma2, weights)
        ctx.estimator = estimator
        ctx.gradients = (gx if grad_x else None, gy if grad_y else None)

    def _mmd_with_grad_backward(ctx, grad, _grad_gx, _grad_gy):
        if grad is None:  # grads are not materialised: nothing flowed into the value
            return None, None, None, None, None, None, None
        _no_double_backward()
        if ctx.gradients is None:  # a second backward through the graph (retain_graph): recompute
            return *_mmd_backward(ctx, grad), None, None
        gx, gy = ctx.gradients
        ctx.gradients = None
        # Rebinding frees each saved buffer as soon as its scaled copy exists: the peak stays at
        # 1.5 sets of gradients (n = m) instead of 2, and the op's outputs are never mutated.
        gx = None if gx is None or not ctx.needs_input_grad[0] else gx * grad
        gy = None if gy is None or not ctx.needs_input_grad[1] else gy * grad
        return gx, gy, None, None, None, None, None

    torch.library.register_autograd(
        "sim2real_fast::_mmd_with_grad", _mmd_with_grad_backward, setup_context=_mmd_with_grad_setup_context
    )
