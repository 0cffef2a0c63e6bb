"""Reference shower features: per-layer sums by index_add (no event loop), autograd for gradients."""

from __future__ import annotations

from typing import Sequence

import torch


def shower_features(
    images: torch.Tensor, layer_offsets: Sequence[int], coords: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The op ``torch.ops.sim2real_fast.shower_features`` in plain PyTorch.

    images (N, n_cells); layer l owns cells ``layer_offsets[l]:layer_offsets[l + 1]``; coords (n_cells, 2).
    Returns layer_stats (N, L, 6) = [energy, centroid_x, centroid_y, width_x, width_y, sparsity],
    event_stats (N, 2) = [total, max_fraction] and max_cell (N,) int64 (the first maximal cell).
    The widths take two passes (second moments about the centroid), so float32 does not cancel.
    """
    n, n_layers = images.shape[0], len(layer_offsets) - 1
    sizes = torch.tensor(layer_offsets).diff()
    layer = torch.repeat_interleave(torch.arange(n_layers), sizes).to(images.device)

    def per_layer(values: torch.Tensor) -> torch.Tensor:  # (N, n_cells) -> (N, L) sums
        return values.new_zeros(n, n_layers).index_add(1, layer, values)

    def safe_divide(num: torch.Tensor, den: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
        return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))

    energy = per_layer(images)
    filled = energy != 0
    stats = [energy]
    widths = []
    for x in coords.unbind(1):
        centroid = safe_divide(per_layer(images * x), energy, filled)
        deviation = x - centroid[:, layer]
        variance = safe_divide(per_layer(images * deviation * deviation), energy, filled)
        positive = variance > 0
        widths.append(torch.where(positive, torch.where(positive, variance, 1.0).sqrt(), 0.0))
        stats.append(centroid)
    hits = per_layer((images > threshold).to(images.dtype))
    sparsity = hits / sizes.clamp(min=1).to(device=images.device, dtype=images.dtype)
    layer_stats = torch.stack([*stats, *widths, sparsity], -1)

    total = images.sum(1)
    max_cell = images.argmax(1)
    peak = images.gather(1, max_cell[:, None])[:, 0]
    max_fraction = safe_divide(peak, total, total != 0)
    return layer_stats, torch.stack([total, max_fraction], -1), max_cell
