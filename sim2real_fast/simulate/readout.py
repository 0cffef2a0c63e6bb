"""Cell-level digitisation: true cell energies -> what a detector's readout gives.

Order: cross-talk, pile-up, calibration (per cell and per layer), non-linearity, noise, intermittent
hot cells, dead cells (known map and extra), zero suppression. The same code applies the residuals
alone to images that went through the nominal digitisation already (``image_level=True``, used by
:func:`~sim2real_fast.simulate.randomize_images`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .effects import NONLINEARITY_E0_GEV, REFERENCE_CELL_MM2, DetectorEffects, cell_areas
from .knobs import draw, is_randomized

__all__ = ["KNOWN_MAP_SEED", "Readout", "apply_readout"]

#: Seed of the known dead-cell map: one map per geometry, the same for sim and every real instance.
KNOWN_MAP_SEED = 20_000_515


def _stochastic_count(fraction: float, n: int, generator: torch.Generator) -> int:
    """floor(fraction n + u), u ~ U(0, 1): an integer count with expectation fraction x n."""
    return math.floor(fraction * n + float(torch.rand((), generator=generator, dtype=torch.float64)))


class Readout:
    """The fixed maps and per-cell values of one DetectorEffects on one geometry.

    ``noise_scales``: each layer's medium's ``noise_scale`` (None: 1 for every layer). A cell without
    a size (a geometry of unknown cell areas) counts as a reference cell for pile-up.
    """

    def __init__(self, effects: DetectorEffects, geometry, noise_scales: Sequence[float] | None = None) -> None:
        self.effects, self.geometry = effects, geometry
        n_cells, n_layers = geometry.n_cells, geometry.n_layers
        self.n_layers = n_layers
        noise = effects.noise_mev if isinstance(effects.noise_mev, tuple) else (effects.noise_mev,)
        self.noise = tuple(noise[i * len(noise) // n_layers] for i in range(n_layers))
        self.layer_of_cell = torch.repeat_interleave(
            torch.arange(n_layers), torch.tensor([layer.n_cells for layer in geometry.layers])
        )
        scales = torch.tensor(noise_scales if noise_scales is not None else [1.0] * n_layers, dtype=torch.float32)
        if scales.shape != (n_layers,):
            raise ValueError(f"noise_scales: expected {n_layers} values (one per layer), got {noise_scales!r}")
        self.channel_scale = scales[self.layer_of_cell]
        try:
            weight = (cell_areas(geometry) / REFERENCE_CELL_MM2).clamp(max=1.0)
        except ValueError:
            weight = torch.ones(n_cells, dtype=torch.float64)
        self.pileup_cdf = torch.cumsum(weight, 0)
        self.sigma = None  # nominal noise per cell, MeV, where no noise knob is drawn per event
        if not any(is_randomized(s) for s in self.noise):
            self.sigma = torch.tensor(self.noise, dtype=torch.float32)[self.layer_of_cell] * self.channel_scale

        known = torch.Generator().manual_seed(KNOWN_MAP_SEED)
        order = torch.randperm(n_cells, generator=known)
        self.known_dead = torch.zeros(n_cells, dtype=torch.bool)
        self.known_dead[order[: _stochastic_count(effects.known_dead_fraction, n_cells, known)]] = True
        self.dead = self.known_dead.clone()  # known + extra dead cells of this instance

        # the instance: every draw is made whatever the knobs, so a knob never moves another one's map
        g = torch.Generator().manual_seed(effects.detector_seed)
        z = torch.randn(n_cells, generator=g)
        self.layer_signs = torch.randint(2, (n_layers,), generator=g) * 2.0 - 1.0  # (L,) +-1
        order = torch.randperm(n_cells, generator=g)
        order = order[~self.known_dead[order]]  # extra dead and hot cells come from the live ones
        n_extra = _stochastic_count(0.0 if is_randomized(effects.extra_dead_fraction) else effects.extra_dead_fraction,
                                    n_cells, g)
        n_hot = _stochastic_count(0.0 if is_randomized(effects.hot_fraction) else effects.hot_fraction, n_cells, g)
        self.cell_calibration = None if is_randomized(effects.miscalibration) else 1 + effects.miscalibration * z
        self.layer_calibration = (
            None if is_randomized(effects.layer_miscalibration) else 1 + effects.layer_miscalibration * self.layer_signs
        )
        self.dead[order[:n_extra]] = True
        self.hot_cells = None if is_randomized(effects.hot_fraction) else order[n_extra : n_extra + n_hot].sort().values
        names = [layer.name for layer in geometry.layers]
        self.crosstalk_layer = names.index(effects.crosstalk_layer) if effects.crosstalk_layer in names else None


def _crosstalk_(images: torch.Tensor, c: torch.Tensor, geometry, layer: int) -> None:
    """In place: each cell of ``layer`` passes a fraction c (N,) of its energy to each column neighbour."""
    start, stop = geometry.layer_offsets[layer], geometry.layer_offsets[layer + 1]
    rows, cols = geometry.layer_shapes[layer]
    x = images[:, start:stop].view(-1, rows, cols)
    c = c.view(-1, 1, 1)
    left, right = torch.zeros_like(x), torch.zeros_like(x)
    left[..., 1:] = x[..., :-1]  # energy arriving from the left neighbour
    right[..., :-1] = x[..., 1:]
    neighbours = torch.full((cols,), 2.0, dtype=x.dtype)
    neighbours[[0, -1]] = 1.0
    images[:, start:stop] = (x - c * neighbours * x + c * (left + right)).flatten(1)


def _pileup_(images: torch.Tensor, occupancy: torch.Tensor, mean_mev: torch.Tensor, cdf: torch.Tensor,
             generator: torch.Generator) -> None:
    """In place: Poisson(occupancy x sum of the cells' weights) deposits per event, in cells drawn with
    probabilities proportional to their weights, exponential energies of mean ``mean_mev`` (N,)."""
    n, n_cells = images.shape
    total = float(cdf[-1])
    count = torch.poisson(occupancy.clamp_min(0) * total, generator=generator).long()
    event = torch.repeat_interleave(torch.arange(n), count)
    u = torch.rand(event.shape, generator=generator, dtype=torch.float64) * total
    cell = torch.searchsorted(cdf, u, right=True).clamp_(max=n_cells - 1)
    energy = torch.empty(event.shape).exponential_(1.0, generator=generator) * mean_mev[event]
    images.view(-1).index_add_(0, event * n_cells + cell, energy)


def apply_readout(
    images: torch.Tensor, readout: Readout, threshold: float, generator: torch.Generator, *, image_level: bool = False
) -> torch.Tensor:
    """(N, n_cells) cell energies in MeV -> the detector's zero-suppressed readout (a new tensor, >= 0).

    ``image_level=False``: ``images`` are true energies and the whole digitisation runs. True: they are
    nominal-digitised already and only the residuals are added: cross-talk change, extra pile-up (a
    negative pile-up residual cannot be removed and is skipped), calibration, non-linearity, the extra
    noise in quadrature (a negative noise residual is skipped), hot and extra dead cells.
    """
    e, geometry = readout.effects, readout.geometry
    n, n_cells = images.shape
    images = images.clone()  # every step below works in place on this copy
    layer_of_cell = readout.layer_of_cell

    crosstalk = draw(e.crosstalk_residual, n, generator)
    if not image_level:
        crosstalk = crosstalk + draw(e.crosstalk, n, generator)
    if readout.crosstalk_layer is not None and bool((crosstalk != 0).any()):
        _crosstalk_(images, crosstalk, geometry, readout.crosstalk_layer)

    occupancy = draw(e.pileup_occupancy, n, generator)
    residual = draw(e.pileup_residual, n, generator)
    occupancy = occupancy * residual.clamp_min(0) if image_level else occupancy * (1 + residual)
    if bool((occupancy > 0).any()):
        _pileup_(images, occupancy, draw(e.pileup_mev, n, generator), readout.pileup_cdf, generator)

    if readout.cell_calibration is None:
        m = draw(e.miscalibration, n, generator)[:, None]
        images.mul_(torch.randn(n, n_cells, generator=generator).mul_(m).add_(1))
    elif e.miscalibration != 0:
        images.mul_(readout.cell_calibration)
    if readout.layer_calibration is None:
        s = draw(e.layer_miscalibration, n, generator)[:, None]
        signs = torch.randint(2, (n, readout.n_layers), generator=generator) * 2.0 - 1.0
        images.mul_((1 + s * signs)[:, layer_of_cell])
    elif e.layer_miscalibration != 0:
        images.mul_(readout.layer_calibration[layer_of_cell])

    if is_randomized(e.nonlinearity) or e.nonlinearity != 0:
        visible_gev = images.sum(1, keepdim=True).clamp_min(0) / 1000.0
        factor = 1 + draw(e.nonlinearity, n, generator)[:, None] * NONLINEARITY_E0_GEV / (NONLINEARITY_E0_GEV + visible_gev)
        images.mul_(factor)

    sigma = readout.sigma  # (n_cells,) nominal, or drawn per event: (N, n_cells)
    if sigma is None:
        sigma = torch.stack([draw(s, n, generator) for s in readout.noise], 1)[:, layer_of_cell] * readout.channel_scale
    scale = 1 + draw(e.noise_residual, n, generator)[:, None]
    if image_level:
        scale = (scale.square() - 1).clamp_min(0).sqrt()
    if bool((sigma > 0).any()) and bool((scale > 0).any()):
        images.add_(torch.randn(n, n_cells, generator=generator).mul_(sigma * scale))

    if readout.hot_cells is None:
        rate = (draw(e.hot_fraction, n, generator) * draw(e.hot_rate, n, generator))[:, None]
        firing = torch.rand(n, n_cells, generator=generator) < rate
        cells = firing.any(0).nonzero().flatten()
        firing = firing[:, cells]
    else:
        cells = readout.hot_cells
        firing = torch.rand(n, cells.shape[0], generator=generator) < draw(e.hot_rate, n, generator)[:, None]
    if cells.numel():
        spread = 1 + 0.1 * torch.randn(n, cells.shape[0], generator=generator)
        extra = firing * draw(e.hot_mev, n, generator)[:, None] * spread * readout.channel_scale[cells]
        images.index_add_(1, cells, extra)

    alive = ~readout.dead
    if is_randomized(e.extra_dead_fraction):
        alive = alive & (torch.rand(n, n_cells, generator=generator) >= draw(e.extra_dead_fraction, n, generator)[:, None])
    k = draw(e.zero_suppression_sigma, n, generator)[:, None]
    keep = (images >= torch.clamp(k * sigma, min=threshold)) & (images > 0) & alive
    return images.masked_fill_(~keep, 0.0)
