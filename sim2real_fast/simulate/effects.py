"""The "real" domain: what real calorimeters show that the plain simulation does not.

Each effect is one knob of :class:`DetectorEffects`; a knob is a number, or :class:`Randomized`
(low, high) to draw it per event (domain randomisation). Shower-level knobs (``lateral_scale``,
``longitudinal_shift_x0``) act on the shower model; the rest act on the cells, in this order:
cross-talk, pile-up, miscalibration, noise, hot cells, dead cells, zero suppression.
Facts behind the defaults (ATLAS LAr; see ANCHORS.md): simulated EM showers are narrower than data
(shower-shape "fudge factors"), cell-to-cell miscalibration 0.5-1%, electronic noise tens of MeV per
cell, strip cross-talk a few %, dead channels ~0.02%, pile-up deposits. The presets exaggerate the
shower-shape, miscalibration, dead- and hot-cell knobs beyond these facts so that the gap costs a
classifier trained on the plain simulation a visible number of accuracy points (``sim2real gap``).

The fixed detector (miscalibration map, dead and hot cells) comes from ``detector_seed``, so every
sample of the same :class:`DetectorEffects` sees the same detector. A :class:`Randomized` value of
``miscalibration``, ``dead_fraction`` or ``hot_fraction`` instead draws a fresh map for every event.

Any geometry: the per-cell knobs are stated for CaloGAN's cells (Pb/LAr, 800 to 3200 mm²) and carry
over to other cells by what they physically are:

- electronic noise and hot channels belong to the readout channel: ``noise_mev`` and ``hot_mev`` are
  for a Pb/LAr cell and times the cell's medium's ``noise_scale`` elsewhere (silicon pads: 0.015,
  see :mod:`.medium`);
- pile-up lands per unit area: a cell smaller than :data:`REFERENCE_CELL_MM2` (CaloGAN's smallest,
  the 5 x 160 mm layer_0 strip) gets ``pileup_occupancy`` x area / 800 mm² deposits of the same
  energies; a larger cell counts as one channel with the stated occupancy, as CaloGAN's cells of
  every size do (CaloChallenge ds1's outer rings, up to 0.6 m², are bins of hits, not channels).

CaloGAN's cells are all reference cells, so its output does not depend on these rules.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .knobs import Knob, Randomized, draw, is_randomized

__all__ = ["DetectorEffects", "PRESETS", "REFERENCE_CELL_MM2", "apply_cell_effects", "cell_areas", "get_effects"]

#: The cell area (mm²) for which ``pileup_occupancy`` is stated: CaloGAN's layer_0 cell, 5 x 160 mm.
REFERENCE_CELL_MM2 = 800.0


@dataclass(frozen=True)
class DetectorEffects:
    """Differences between the real detector and the plain simulation (defaults: preset ``default``).

    Attributes:
        lateral_scale: every shower radius times this (1 = as simulated).
        longitudinal_shift_x0: every shower starts this much deeper, in X0.
        miscalibration: relative rms of the per-cell calibration factors 1 + m z, z ~ N(0, 1).
        noise_mev: Gaussian electronic noise per Pb/LAr cell and event, MeV (other media: times their
            ``noise_scale``): one value for every layer, or a
            tuple of k values spread over the layers front to back in k equal groups: layer i of L gets
            value floor(i k / L), so k = L is one per layer and the presets' CaloGAN values (front /
            middle / back) carry over to any geometry (ds1 photons, 5 layers: 20, 20, 40, 40, 20).
        zero_suppression_sigma: a cell reads 0 below max(readout threshold, this x its noise).
        dead_fraction: fraction of cells that read 0.
        hot_fraction: fraction of cells that add ``hot_mev`` (times 1 + 10% Gaussian) every event.
        hot_mev: the hot cells' extra energy, MeV, for a Pb/LAr cell (other media: times their ``noise_scale``).
        crosstalk: fraction of a cell's energy that leaks to each neighbour along the columns
            (eta: the fine 5 mm direction of CaloGAN's strips) in ``crosstalk_layer``; energy is conserved.
        crosstalk_layer: the layer with strip cross-talk (skipped if the geometry has no such layer;
            in a cylindrical layer the columns are the r bins).
        pileup_occupancy: mean number of pile-up deposits per cell and event (Poisson), for cells of
            :data:`REFERENCE_CELL_MM2` or more; a smaller cell gets its share by area.
        pileup_mev: mean energy of a pile-up deposit (exponential), MeV.
        detector_seed: seed of the fixed detector maps (calibration, dead and hot cells).
    """

    lateral_scale: Knob = 1.3
    longitudinal_shift_x0: Knob = 0.7
    miscalibration: Knob = 0.025
    noise_mev: Knob | tuple[Knob, ...] = (20.0, 40.0, 20.0)
    zero_suppression_sigma: Knob = 2.0
    dead_fraction: Knob = 0.025
    hot_fraction: Knob = 0.01
    hot_mev: Knob = 500.0
    crosstalk: Knob = 0.05
    crosstalk_layer: str = "layer_0"
    pileup_occupancy: Knob = 0.05
    pileup_mev: Knob = 35.0
    detector_seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("crosstalk_layer", "detector_seed"):
                continue
            if isinstance(value, tuple) and (f.name != "noise_mev" or not value):
                raise ValueError(f"DetectorEffects.{f.name}: expected a number or Randomized"
                                 + (" (or a non-empty tuple of them)" if f.name == "noise_mev" else "") + f", got {value!r}")
            for knob in value if isinstance(value, tuple) else (value,):
                low, high = (knob.low, knob.high) if isinstance(knob, Randomized) else (knob, knob)
                bound = 0.5 if f.name == "crosstalk" else 1.0 if f.name.endswith(("_fraction", "_occupancy")) else None
                if not isinstance(low, (int, float)) or low < 0 or (bound is not None and high > bound):
                    limit = f"in [0, {bound}]" if bound is not None else ">= 0"
                    raise ValueError(f"DetectorEffects.{f.name}: expected numbers {limit} (or Randomized), got {value!r}")

    def replace(self, **changes) -> DetectorEffects:
        return dataclasses.replace(self, **changes)

    @property
    def randomized(self) -> bool:
        return any(is_randomized(getattr(self, f.name)) for f in dataclasses.fields(self))


#: ``none`` is the plain simulation; the others grow the gap. Calibrated with ``sim2real gap``: a
#: classifier trained on the plain simulation loses a few accuracy points on ``mild``, at least 15 on
#: ``default`` and about 30 on ``severe`` (README, "How big is the gap").
PRESETS = {
    "none": DetectorEffects(
        lateral_scale=1.0, longitudinal_shift_x0=0.0, miscalibration=0.0, noise_mev=0.0,
        zero_suppression_sigma=0.0, dead_fraction=0.0, hot_fraction=0.0, crosstalk=0.0, pileup_occupancy=0.0,
    ),
    "mild": DetectorEffects(
        lateral_scale=1.1, longitudinal_shift_x0=0.2, miscalibration=0.01, noise_mev=(10.0, 20.0, 10.0),
        zero_suppression_sigma=3.0, dead_fraction=0.01, hot_fraction=0.004, hot_mev=300.0, crosstalk=0.03,
        pileup_occupancy=0.02, pileup_mev=20.0,
    ),
    "default": DetectorEffects(),
    "severe": DetectorEffects(
        lateral_scale=1.35, longitudinal_shift_x0=1.0, miscalibration=0.035, noise_mev=(25.0, 45.0, 25.0),
        zero_suppression_sigma=2.0, dead_fraction=0.03, hot_fraction=0.01, hot_mev=700.0, crosstalk=0.07,
        pileup_occupancy=0.06, pileup_mev=45.0,
    ),
}


def get_effects(effects: None | str | DetectorEffects) -> DetectorEffects:
    """None -> ``none``; a preset name; or the DetectorEffects itself."""
    if effects is None:
        return PRESETS["none"]
    if isinstance(effects, DetectorEffects):
        return effects
    if isinstance(effects, str) and effects in PRESETS:
        return PRESETS[effects]
    raise ValueError(f"effects: expected None, a DetectorEffects or a preset ({sorted(PRESETS)}), got {effects!r}")


def cell_areas(geometry) -> torch.Tensor:
    """(n_cells,) float64 transverse cell areas in mm², in the geometry's flat order.

    Cartesian layers: row_size x col_size; cylindrical layers: pi (r_hi² - r_lo²) / rows (rows are the
    equal alpha bins).
    """
    areas = []
    for layer in geometry.layers:
        if layer.kind == "cylindrical":
            r = torch.tensor(layer.r_edges, dtype=torch.float64)
            ring = math.pi * (r[1:] ** 2 - r[:-1] ** 2) / layer.rows
            areas.append(ring.repeat(layer.rows))  # row-major: (alpha, r)
        elif layer.cell_size is None:
            raise ValueError(f"cell_areas: geometry {geometry.name!r} layer {layer.name!r} has no cell_size (mm)")
        else:
            areas.append(torch.full((layer.n_cells,), layer.cell_size[0] * layer.cell_size[1], dtype=torch.float64))
    return torch.cat(areas)


class _Detector:
    """The fixed maps and per-cell values of one DetectorEffects on one geometry.

    ``noise_scales``: each layer's medium's ``noise_scale`` (default 1 for every layer).
    ``channel_scale`` (n_cells,) and ``pileup_weight`` (n_cells,) are None where they are 1 everywhere
    (CaloGAN), so that the reference detector runs exactly the arithmetic it was calibrated with.
    """

    def __init__(self, effects: DetectorEffects, geometry, noise_scales: Sequence[float] | None = None) -> None:
        self.effects, self.geometry = effects, geometry
        n_cells, n_layers = geometry.n_cells, geometry.n_layers
        noise = effects.noise_mev if isinstance(effects.noise_mev, tuple) else (effects.noise_mev,)
        self.noise = tuple(noise[i * len(noise) // n_layers] for i in range(n_layers))
        self.layer_of_cell = torch.repeat_interleave(
            torch.arange(n_layers), torch.tensor([layer.n_cells for layer in geometry.layers])
        )
        scales = torch.tensor(noise_scales if noise_scales is not None else [1.0] * n_layers, dtype=torch.float32)
        if scales.shape != (n_layers,):
            raise ValueError(f"noise_scales: expected {n_layers} values (one per layer), got {noise_scales!r}")
        self.channel_scale = None if bool((scales == 1).all()) else scales[self.layer_of_cell]
        weight = (cell_areas(geometry) / REFERENCE_CELL_MM2).clamp(max=1.0)
        self.pileup_weight = None if bool((weight == 1).all()) else weight
        self.pileup_cdf = None if self.pileup_weight is None else torch.cumsum(weight, 0)
        self.sigma = None  # per-cell noise, MeV, where no noise knob is drawn per event
        if not is_randomized(effects.noise_mev):
            self.sigma = torch.tensor(self.noise, dtype=torch.float32)[self.layer_of_cell]
            if self.channel_scale is not None:
                self.sigma = self.sigma * self.channel_scale
        g = torch.Generator().manual_seed(effects.detector_seed)
        z = torch.randn(n_cells, generator=g)
        order = torch.randperm(n_cells, generator=g)
        self.calibration = None if is_randomized(effects.miscalibration) else 1 + effects.miscalibration * z
        self.dead = self.hot = None
        if not is_randomized(effects.dead_fraction):
            n_dead = round(effects.dead_fraction * n_cells)
            self.dead = torch.zeros(n_cells, dtype=torch.bool)
            self.dead[order[:n_dead]] = True
        if not is_randomized(effects.hot_fraction):
            n_dead = int(self.dead.sum()) if self.dead is not None else 0
            self.hot = torch.zeros(n_cells, dtype=torch.bool)
            self.hot[order[n_dead : n_dead + round(effects.hot_fraction * n_cells)]] = True
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


def apply_cell_effects(
    images: torch.Tensor, detector: _Detector, threshold: float, generator: torch.Generator
) -> torch.Tensor:
    """(N, n_cells) true cell energies in MeV -> what the real readout gives, zero-suppressed (a new tensor)."""
    e, n = detector.effects, images.shape[0]
    n_cells = images.shape[1]
    images = images.clone()  # every step below works in place on this copy
    if detector.crosstalk_layer is not None and (is_randomized(e.crosstalk) or e.crosstalk > 0):
        _crosstalk_(images, draw(e.crosstalk, n, generator), detector.geometry, detector.crosstalk_layer)
    if is_randomized(e.pileup_occupancy) or e.pileup_occupancy > 0:
        # Poisson(occupancy x sum of the cells' weights) deposits per event, in random cells with
        # probabilities proportional to the weights (uniform on reference cells), exponential energies
        occupancy = draw(e.pileup_occupancy, n, generator)
        mean = draw(e.pileup_mev, n, generator)
        cdf = detector.pileup_cdf
        if cdf is None:
            count = torch.poisson(occupancy * n_cells, generator=generator).long()
            event = torch.repeat_interleave(torch.arange(n), count)
            cell = torch.randint(n_cells, event.shape, generator=generator)
        else:
            total = float(cdf[-1])
            count = torch.poisson(occupancy * total, generator=generator).long()
            event = torch.repeat_interleave(torch.arange(n), count)
            u = torch.rand(event.shape, generator=generator, dtype=torch.float64) * total
            cell = torch.searchsorted(cdf, u, right=True).clamp_(max=n_cells - 1)
        energy = torch.empty(event.shape).exponential_(1.0, generator=generator) * mean[event]
        images.view(-1).index_add_(0, event * n_cells + cell, energy)
    if detector.calibration is None:
        m = draw(e.miscalibration, n, generator)[:, None]
        images.mul_(torch.randn(n, n_cells, generator=generator).mul_(m).add_(1))
    elif e.miscalibration != 0:
        images.mul_(detector.calibration)
    sigma = detector.sigma  # (n_cells,) for fixed noise knobs, else drawn per event: (N, n_cells)
    if sigma is None:
        sigma = torch.stack([draw(s, n, generator) for s in detector.noise], 1)[:, detector.layer_of_cell]
        if detector.channel_scale is not None:
            sigma = sigma * detector.channel_scale
    if bool((sigma > 0).any()):
        images.add_(torch.randn(n, n_cells, generator=generator).mul_(sigma))
    hot = detector.hot
    if hot is None:
        hot = torch.rand(n, n_cells, generator=generator) < draw(e.hot_fraction, n, generator)[:, None]
    if bool(hot.any()):
        cells = (hot.any(0) if hot.dim() == 2 else hot).nonzero().flatten()  # the few hot cells only
        spread = 1 + 0.1 * torch.randn(n, cells.shape[0], generator=generator)
        extra = hot[..., cells] * draw(e.hot_mev, n, generator)[:, None] * spread
        if detector.channel_scale is not None:
            extra = extra * detector.channel_scale[cells]
        images.index_add_(1, cells, extra)
    if detector.dead is None:
        alive = torch.rand(n, n_cells, generator=generator) >= draw(e.dead_fraction, n, generator)[:, None]
    else:
        alive = ~detector.dead
    k = draw(e.zero_suppression_sigma, n if is_randomized(e.zero_suppression_sigma) else 1, generator)[:, None]
    keep = images >= torch.clamp(k * sigma, min=threshold)
    if not threshold > 0:
        keep &= images > 0
    keep &= alive
    return images.mul_(keep)
