"""Domain randomisation of images that exist already (users' simulation files, any geometry)."""

from __future__ import annotations

import torch

from .. import geometry as _geometry
from .effects import DetectorEffects
from .medium import MEDIA
from .presets import PRIOR
from .readout import Readout, apply_readout

__all__ = ["IMAGE_LEVEL_FAMILIES", "SHOWER_LEVEL_FAMILIES", "randomize_images"]

#: Residual knobs :func:`randomize_images` applies.
IMAGE_LEVEL_FAMILIES = (
    "miscalibration", "layer_miscalibration", "nonlinearity", "noise_residual", "extra_dead_fraction",
    "hot_fraction", "pileup_residual", "crosstalk_residual",
)

#: Residual knobs that act on the shower itself and cannot be applied to finished images.
SHOWER_LEVEL_FAMILIES = (
    "lateral_scale", "longitudinal_shift_x0", "pion_em_fraction_scale", "pion_width_scale", "pion_length_scale",
)


def randomize_images(
    images: torch.Tensor,
    geometry: str | _geometry.Geometry,
    *,
    effects: DetectorEffects | None = None,
    seed: int = 0,
    threshold_mev: float = 1.0,
) -> torch.Tensor:
    """Apply the image-level residual families of ``effects`` (default :data:`~.presets.PRIOR`) per event.

    Args:
        images: (N, n_cells) cell energies in MeV, digitised with ``effects``' nominal knobs (noise,
            zero suppression, known dead map, cross-talk, pile-up), in ``geometry``'s flat order.
        geometry: a preset name or Geometry; layers name their medium (noise scale; default ``pb_lar``)
            and, where known, their cell sizes (pile-up per area; unknown sizes count as reference cells).
        effects: knobs that are :class:`~.knobs.Randomized` are drawn per event (maps too).
        seed: the same seed, the same output.
        threshold_mev: readout threshold.

    Returns:
        (N, n_cells) float32, >= 0, zero-suppressed at max(threshold, k x nominal noise), known dead cells 0.

    Applied: :data:`IMAGE_LEVEL_FAMILIES` (the extra noise in quadrature; negative noise or pile-up
    residuals cannot be taken out of finished images and are skipped). Not applicable at image level:
    :data:`SHOWER_LEVEL_FAMILIES` (EM lateral and longitudinal shape, the pions' hadronic model).
    """
    geometry = _geometry.get(geometry)
    effects = PRIOR if effects is None else effects
    if not isinstance(effects, DetectorEffects):
        raise TypeError(f"effects: expected a DetectorEffects or None, got {type(effects).__name__}")
    if images.dim() != 2 or images.shape[1] != geometry.n_cells:
        raise ValueError(f"images: expected (N, {geometry.n_cells}) for geometry {geometry.name!r}, "
                         f"got {tuple(images.shape)}")
    scales = [MEDIA.get(name or "pb_lar", MEDIA["pb_lar"]).noise_scale for name in geometry.layer_media()]
    readout = Readout(effects, geometry, scales)
    g = torch.Generator().manual_seed(seed)
    return apply_readout(images.float(), readout, threshold_mev, g, image_level=True)
