"""The detector a shower is seen through: the sim domain's digitisation and a "real" detector's residuals.

:class:`DetectorEffects` holds two kinds of knobs. The nominal digitisation, shared by the sim domain
and every "real" detector: electronic noise per cell and layer, zero suppression, the known dead-cell
map, strip cross-talk and pile-up. The residuals, by which a real detector differs from its
simulation (all neutral by default): EM shower shape (lateral scale, start depth), the pions' hadronic
model (EM fraction, width and length of the non-EM part), per-cell and per-layer calibration, energy
non-linearity, noise, extra dead cells, intermittent hot cells, cross-talk and pile-up. The presets
and the domain-randomisation prior are in :mod:`.presets`; published ranges in the README
("Simulator").

A knob is a number, or :class:`~.knobs.Randomized` (low, high) to draw it per event (domain
randomisation). The instance maps (calibration factors, extra dead and hot cells) come from
``detector_seed``; the known dead map comes from a fixed seed and is the same for every instance. A
Randomized ``miscalibration``, ``layer_miscalibration``, ``extra_dead_fraction`` or ``hot_fraction``
draws a fresh map for every event instead.

Any geometry: the per-cell knobs are stated for CaloGAN's cells (Pb/LAr, 800 to 3200 mm²) and carry
over to other cells by what they physically are:

- electronic noise and hot channels belong to the readout channel: ``noise_mev`` and ``hot_mev`` are
  for a Pb/LAr cell and times the cell's medium's ``noise_scale`` elsewhere (silicon pads: 0.015,
  see :mod:`.medium`);
- pile-up lands per unit area: a cell smaller than :data:`REFERENCE_CELL_MM2` (CaloGAN's smallest,
  the 5 x 160 mm layer_0 strip) gets ``pileup_occupancy`` x area / 800 mm² deposits of the same
  energies; a larger cell counts as one channel with the stated occupancy, as CaloGAN's cells of
  every size do (CaloChallenge ds1's outer rings, up to 0.6 m², are bins of hits, not channels).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .knobs import Knob, Randomized, is_randomized

__all__ = ["NONLINEARITY_E0_GEV", "REFERENCE_CELL_MM2", "RESIDUALS", "DetectorEffects", "cell_areas", "residual_size"]

#: The cell area (mm²) for which ``pileup_occupancy`` is stated: CaloGAN's layer_0 cell, 5 x 160 mm.
REFERENCE_CELL_MM2 = 800.0

#: Allowed (low, high) of each numeric knob; None: unbounded on that side.
_BOUNDS = {
    "lateral_scale": (0.5, 2.0),
    "longitudinal_shift_x0": (-5.0, 5.0),
    "pion_em_fraction_scale": (0.0, 2.0),
    "pion_width_scale": (0.5, 2.0),
    "pion_length_scale": (0.5, 2.0),
    "miscalibration": (0.0, 0.5),
    "layer_miscalibration": (0.0, 0.5),
    "nonlinearity": (-0.5, 0.5),
    "noise_mev": (0.0, None),
    "noise_residual": (-1.0, None),
    "zero_suppression_sigma": (0.0, None),
    "known_dead_fraction": (0.0, 1.0),
    "extra_dead_fraction": (0.0, 1.0),
    "hot_fraction": (0.0, 1.0),
    "hot_rate": (0.0, 1.0),
    "hot_mev": (0.0, None),
    "crosstalk": (0.0, 0.5),
    "crosstalk_residual": (-0.5, 0.5),
    "pileup_occupancy": (0.0, 1.0),
    "pileup_residual": (-1.0, None),
    "pileup_mev": (0.0, None),
}

#: The residual knobs and their neutral value (the real detector equals the simulation there).
RESIDUALS = {
    "lateral_scale": 1.0,
    "longitudinal_shift_x0": 0.0,
    "pion_em_fraction_scale": 1.0,
    "pion_width_scale": 1.0,
    "pion_length_scale": 1.0,
    "miscalibration": 0.0,
    "layer_miscalibration": 0.0,
    "nonlinearity": 0.0,
    "noise_residual": 0.0,
    "extra_dead_fraction": 0.0,
    "hot_fraction": 0.0,
    "crosstalk_residual": 0.0,
    "pileup_residual": 0.0,
}

#: Non-linearity: the response is 1 + nonlinearity x E0 / (E0 + E_visible), E0 in GeV: a fixed
#: mis-modelled energy offset (n E0, e.g. upstream material) seen as ~n/2 at 1 GeV and ~n E0 / E above.
NONLINEARITY_E0_GEV = 1.0


@dataclass(frozen=True)
class DetectorEffects:
    """A detector: the nominal digitisation (the defaults: preset ``nominal``) plus residuals.

    Nominal digitisation (the sim domain's):
        noise_mev: Gaussian electronic noise per Pb/LAr cell and event, MeV (other media: times their
            ``noise_scale``): one value for every layer, or a tuple of k values spread over the layers
            front to back in k equal groups (layer i of L gets value floor(i k / L)).
        zero_suppression_sigma: a cell reads 0 below max(readout threshold, this x its nominal noise).
        known_dead_fraction: the known dead-cell map, the same in sim and every real instance.
        crosstalk: fraction of a cell's energy that leaks to each neighbour along the columns (eta: the
            fine 5 mm direction of CaloGAN's strips) in ``crosstalk_layer``; energy is conserved.
        crosstalk_layer: the layer with strip cross-talk (skipped if the geometry has no such layer;
            in a cylindrical layer the columns are the r bins).
        pileup_occupancy: mean pile-up deposits per cell and event (Poisson), for cells of
            :data:`REFERENCE_CELL_MM2` or more; a smaller cell gets its share by area.
        pileup_mev: mean energy of a pile-up deposit (exponential), MeV.

    Residuals (real vs sim; neutral by default):
        lateral_scale: EM shower radii times this (e+, gamma and the pions' EM part).
        longitudinal_shift_x0: e+ and gamma showers start this much deeper, X0.
        pion_em_fraction_scale: the pions' EM fraction times this (clamped to 1).
        pion_width_scale, pion_length_scale: the pions' non-EM part is this much wider / longer.
        miscalibration: rms of the per-cell calibration factors 1 + m z, z ~ N(0, 1).
        layer_miscalibration: each layer's sampling fraction is off by +- this (sign per layer).
        nonlinearity: response 1 + n E0 / (E0 + E_visible) (E0 = 1 GeV): n/2 at 1 GeV, n/16 at 15 GeV.
        noise_residual: the real noise is (1 + this) x nominal (thresholds stay at the nominal noise).
        extra_dead_fraction: dead cells beyond the known map.
        hot_fraction: intermittent hot cells; each fires in a fraction ``hot_rate`` of the events and
            then adds ``hot_mev`` (times 1 + 10% Gaussian; Pb/LAr cell, other media: times their
            ``noise_scale``).
        crosstalk_residual: the real cross-talk is ``crosstalk`` + this.
        pileup_residual: the real pile-up occupancy is (1 + this) x ``pileup_occupancy``.
        detector_seed: the instance: calibration factors, layer signs, extra dead and hot cells.

    Counts of mapped cells are f x n_cells rounded stochastically (expectation f x n_cells), so a
    detector of 504 cells may have no dead or hot cell at a fraction of 0.05%.
    """

    noise_mev: Knob | tuple[Knob, ...] = (10.0, 30.0, 20.0)
    zero_suppression_sigma: Knob = 2.0
    known_dead_fraction: float = 0.0005
    crosstalk: Knob = 0.04
    crosstalk_layer: str = "layer_0"
    pileup_occupancy: Knob = 0.02
    pileup_mev: Knob = 30.0
    lateral_scale: Knob = 1.0
    longitudinal_shift_x0: Knob = 0.0
    pion_em_fraction_scale: Knob = 1.0
    pion_width_scale: Knob = 1.0
    pion_length_scale: Knob = 1.0
    miscalibration: Knob = 0.0
    layer_miscalibration: Knob = 0.0
    nonlinearity: Knob = 0.0
    noise_residual: Knob = 0.0
    extra_dead_fraction: Knob = 0.0
    hot_fraction: Knob = 0.0
    hot_rate: Knob = 0.1
    hot_mev: Knob = 300.0
    crosstalk_residual: Knob = 0.0
    pileup_residual: Knob = 0.0
    detector_seed: int = 0

    def __post_init__(self) -> None:
        for name, (low, high) in _BOUNDS.items():
            value = getattr(self, name)
            many = name == "noise_mev" and isinstance(value, tuple)
            knobs = value if many else (value,)
            fixed_only = name == "known_dead_fraction"
            ok = bool(knobs) and all(
                _in_bounds(k, low, high) and not (fixed_only and isinstance(k, Randomized)) for k in knobs
            )
            if not ok:
                limit = f"in [{low}, {high}]" if high is not None else f">= {low}"
                kind = "a number" if fixed_only else "a number or Randomized"
                raise ValueError(f"DetectorEffects.{name}: expected {kind} {limit}"
                                 + (" (or a non-empty tuple of them)" if name == "noise_mev" else "")
                                 + f", got {value!r}")
        if not isinstance(self.detector_seed, int) or self.detector_seed < 0:
            raise ValueError(f"DetectorEffects.detector_seed: expected an int >= 0, got {self.detector_seed!r}")

    def replace(self, **changes) -> DetectorEffects:
        return dataclasses.replace(self, **changes)

    @property
    def randomized(self) -> bool:
        return any(is_randomized(getattr(self, f.name)) for f in dataclasses.fields(self))


def _in_bounds(knob, low: float, high: float | None) -> bool:
    values = (knob.low, knob.high) if isinstance(knob, Randomized) else (knob,)
    return all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low
        and (high is None or v <= high)
        for v in values
    )


def residual_size(effects: DetectorEffects, name: str) -> float:
    """|knob - neutral| of a fixed residual knob (the size a preset gives that family)."""
    value = getattr(effects, name)
    if isinstance(value, Randomized):
        raise ValueError(f"residual_size: {name} is Randomized, expected a number")
    return abs(value - RESIDUALS[name])


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
