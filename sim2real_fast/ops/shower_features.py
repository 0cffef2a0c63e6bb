"""CaloChallenge-style shower features (``torch.ops.sim2real_fast.shower_features``): wrapper, autograd."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from .. import _extension
from .. import geometry as _geometry

_OP = "sim2real_fast.shower_features"

# Per-layer features in the order of the op's layer_stats columns.
_LAYER_FEATURES = ("energy", "centroid_x", "centroid_y", "width_x", "width_y", "sparsity")


class ShowerFeatures(NamedTuple):
    """High-level features of N showers over L layers, in the images' dtype and device.

    Energies in the images' unit; centroids and widths in the unit of
    :meth:`~sim2real_fast.geometry.Geometry.feature_coordinates` (mm, or cells for ``hcal``).
    """

    total: torch.Tensor  # (N,) sum of all cells
    layer_energy: torch.Tensor  # (N, L)
    centroid_x: torch.Tensor  # (N, L) energy-weighted mean x; 0 in an empty layer
    centroid_y: torch.Tensor  # (N, L)
    width_x: torch.Tensor  # (N, L) energy-weighted standard deviation of x; 0 in an empty layer
    width_y: torch.Tensor  # (N, L)
    sparsity: torch.Tensor  # (N, L) fraction of the layer's cells above threshold
    max_fraction: torch.Tensor  # (N,) highest cell / total; 0 where total == 0
    layer_names: tuple[str, ...]  # the geometry's layer names

    def names(self) -> list[str]:
        """Column names of :meth:`as_tensor`: ``energy_total``, ``energy_<layer>``, ..., ``max_fraction``."""
        per_layer = [f"{feature}_{name}" for feature in _LAYER_FEATURES for name in self.layer_names]
        return ["energy_total", *per_layer, "max_fraction"]

    def as_tensor(self) -> torch.Tensor:
        """(N, 2 + 6 L) features, columns in the order of :meth:`names`."""
        per_layer = (self.layer_energy, self.centroid_x, self.centroid_y, self.width_x, self.width_y, self.sparsity)
        return torch.cat([self.total[:, None], *per_layer, self.max_fraction[:, None]], 1)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """One (N,) tensor per feature, keyed by :meth:`names` (for histograms)."""
        return dict(zip(self.names(), self.as_tensor().unbind(1)))


def shower_features(images: torch.Tensor, geometry, *, threshold: float = 0.0) -> ShowerFeatures:
    """Per-event, per-layer shower features of calorimeter images, in one pass over the cells.

    Args:
        images: (N, n_cells) energies in the geometry's flat cell order (layer by layer, row-major);
            float32 or float64 (float16/bfloat16 are computed in float32), CPU or CUDA, any strides.
        geometry: a :class:`~sim2real_fast.geometry.Geometry` or a preset name (``"calogan"``, ...).
        threshold: a cell counts towards ``sparsity`` when its energy is > threshold.

    Per layer, with E = the layer's energy and (x, y) from ``geometry.feature_coordinates()``:
    centroid ``c_x = sum(E_i x_i) / E``, width ``w_x = sqrt(max(sum(E_i x_i^2) / E - c_x^2, 0))``
    (CaloChallenge's GetECEtas / GetWidthEtas, without their 1e-16 in the denominator), both 0
    where E == 0; ``sparsity`` = fraction of the layer's cells above threshold (CaloChallenge's
    ``_calculate_sparsity`` is 1 minus this). Per event: ``total`` and ``max_fraction`` = max cell /
    total. Sums are accumulated in float64. Negative energies are allowed.

    Differentiable w.r.t. images: sparsity has zero gradient, a zero width or an empty layer gives
    zero width and centroid gradients, and max_fraction's gradient goes to the first maximal cell
    (and through the total to every cell).
    """
    geometry = _geometry.get(geometry)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{_OP}: images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 2 or images.shape[1] != geometry.n_cells:
        raise ValueError(
            f"{_OP}: images must be (N, n_cells) = (N, {geometry.n_cells}) for geometry {geometry.name!r}, "
            f"got shape {tuple(images.shape)}"
        )
    if not images.dtype.is_floating_point:
        raise TypeError(f"{_OP}: images must be a floating-point tensor (float32 or float64), got {images.dtype}")
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool):
        raise TypeError(f"{_OP}: threshold must be a float, got {type(threshold).__name__}")
    if images.dtype in (torch.float16, torch.bfloat16):
        images = images.float()
    offsets = list(geometry.layer_offsets)
    coords = geometry._coordinates(images.device, images.dtype)
    if _extension.HAS_EXTENSION:
        layer_stats, event_stats, _ = torch.ops.sim2real_fast.shower_features(images, offsets, coords, float(threshold))
    else:
        from ..reference import shower_features as reference_shower_features

        layer_stats, event_stats, _ = reference_shower_features(images, offsets, coords, float(threshold))
    total, max_fraction = event_stats.unbind(1)
    layer_names = tuple(layer.name for layer in geometry.layers)
    return ShowerFeatures(total, *layer_stats.unbind(2), max_fraction, layer_names)


if _extension.HAS_EXTENSION:

    @torch.library.register_fake("sim2real_fast::shower_features")
    def _shower_features_fake(images, layer_offsets, coords, threshold):
        torch._check(images.dim() == 2, lambda: f"{_OP}: images must be 2-D (N, n_cells)")
        n = images.shape[0]
        n_layers = len(layer_offsets) - 1
        return images.new_empty(n, n_layers, 6), images.new_empty(n, 2), images.new_empty(n, dtype=torch.long)

    @torch.library.register_fake("sim2real_fast::_shower_features_backward")
    def _shower_features_backward_fake(grad_layer_stats, grad_event_stats, images, layer_offsets, coords,
                                       layer_stats, event_stats, max_cell):
        return images.new_empty(images.shape)

    def _setup_context(ctx, inputs, output):
        images, layer_offsets, coords, _ = inputs
        layer_stats, event_stats, max_cell = output
        ctx.layer_offsets = layer_offsets
        ctx.save_for_backward(images, coords, layer_stats, event_stats, max_cell)

    def _backward(ctx, grad_layer_stats, grad_event_stats, _grad_max_cell):
        images, coords, layer_stats, event_stats, max_cell = ctx.saved_tensors
        if grad_layer_stats is None:
            grad_layer_stats = torch.zeros_like(layer_stats)
        if grad_event_stats is None:
            grad_event_stats = torch.zeros_like(event_stats)
        grad_images = torch.ops.sim2real_fast._shower_features_backward(
            grad_layer_stats, grad_event_stats, images, ctx.layer_offsets, coords, layer_stats, event_stats, max_cell
        )
        return grad_images, None, None, None

    torch.library.register_autograd("sim2real_fast::shower_features", _backward, setup_context=_setup_context)
