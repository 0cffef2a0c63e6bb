"""Fast, vectorised calorimeter showers (e+, gamma, pi+) in a layered geometry, sim or "real".

Per event: a longitudinal profile per shower component (EM: Grindhammer-Peters, hep-ex/0001020, with
its sampling-calorimeter terms in sampling media; pions: :mod:`.hadronic`) gives the energy in depth slices of about ``slice_x0`` X0 inside each
layer (torch.special.gammainc; what lies behind the last layer is lost and recorded as ``overflow``).
Each layer is made of its own medium (:mod:`.medium`): depths add up in each layer's X0 (EM) and
lambda_I (hadronic), and the lateral scales are the slice's medium's Moliere radius and lambda_I.
Sampling fluctuations: the visible energy of a slice is Gamma distributed with mean E and variance
q E (q = stochastic^2 in GeV, so sigma/E = stochastic/sqrt(E) for the sum), times a per-event
constant-term factor 1 + constant z. The visible energy is then spread laterally by energy spots
(GFlash, Grindhammer et al., Proc. CHEP 1989): radii from the two-component radial profile at the
slice's mean depth tau = t/T (inverse CDF), uniform azimuth, around the shower axis; each spot lands
in the cell under it (spots outside the layer are lost) and cells are summed by one
:func:`sim2real_fast.hits_to_image`. Spots carry equal shares of their slice's visible energy; a
shower has GFlash's energy-dependent spot count (:func:`.em.spot_count`, at most ``max_spots``, + one
per slice), so cell-level fluctuations keep falling with energy up to the cap.
The axis enters at a Gaussian beam spot (``beam_spot_cells`` x the cell pitch per axis) with a small
Gaussian angular spread (``beam_divergence_mrad`` per axis), in both domains (Cartesian layers; cylindrical
layers bin around the particle's axis).
Everything is a tensor operation over a batch of events (no Python loop per event or per spot).
:func:`paired_showers` sees the same true showers through two detectors (paired sim/real data).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

from .. import geometry as _geometry
from ..ops.hits_to_image import hits_to_image
from . import em, hadronic
from .effects import DetectorEffects
from .knobs import Knob, draw
from .presets import PRESETS, get_effects
from .readout import Readout, apply_readout
from .medium import MEDIA, Medium, get_medium

__all__ = ["PARTICLES", "PairedShowers", "ShowerPhysics", "SimulatedShowers", "paired_showers", "showers"]

#: Particle name -> label.
PARTICLES = {"e+": 0, "gamma": 1, "pi+": 2}


class SimulatedShowers(NamedTuple):
    """The output of :func:`showers`."""

    images: torch.Tensor  # (N, n_cells) float32, cell energies in MeV (geometry's flat order)
    labels: torch.Tensor  # (N,) int64: 0 e+, 1 gamma, 2 pi+ (PARTICLES)
    energy: torch.Tensor  # (N,) float64 incident energy in GeV
    geometry: _geometry.Geometry
    overflow: torch.Tensor  # (N,) float32 MeV deposited behind the last layer (lost), before sampling


class PairedShowers(NamedTuple):
    """The output of :func:`paired_showers`: the same true showers seen by two detectors.

    ``sim`` and ``real`` are :class:`SimulatedShowers` of the same N events in the same order; their
    ``labels`` and ``energy`` are equal, their ``images`` and ``overflow`` differ by the detectors' effects.
    """

    sim: SimulatedShowers
    real: SimulatedShowers


@dataclass(frozen=True)
class ShowerPhysics:
    """The shower model's parameters; every :data:`Knob` may be :class:`Randomized` per event.

    Attributes:
        em_stochastic: EM sampling term a in sigma/E = a/sqrt(E) (sqrt(GeV)); ATLAS LAr ~10%.
        em_constant: EM constant term b (per-event factor 1 + b z).
        had_stochastic: sampling term of the non-EM part of pion showers (sqrt(GeV)).
        h_over_e: response to the non-EM part relative to EM (e/h = 1/h_over_e ~ 1.4).
        em_fraction_sigma: event-to-event spread of the pions' EM fraction.
        had_core_lambda, had_tail_lambda: core and tail radii of the non-EM lateral profile (same
            two-component form as EM) in interaction lengths; had_core_probability: the core's share.
            The pions' EM part has the EM radii (+) the hadronic core radius in quadrature (its pi0
            sub-showers start spread over the hadronic core).
        photon_conversion_x0: mean photon conversion depth, X0 (9/7, exponential).
        mip_landau_sigma: log-normal spread of a MIP's energy loss per depth slice (a skewed, Landau-like tail).
        longitudinal_fluctuations: correlated ln T / ln alpha fluctuations on (True) or the median profile.
        beam_spot_cells: Gaussian sigma of the entry point per transverse axis, in cell pitches (the
            pitch: the central cell's side, sqrt(area), of the thickest layer in X0).
        beam_divergence_mrad: Gaussian sigma of the axis' angle per transverse axis, mrad. Both move the
            shower in Cartesian layers (cells fixed in the detector); cylindrical layers bin around the
            particle's own axis (as CaloChallenge does), so there the shower stays centred.
        slice_x0: depth slices' target thickness in X0 (radial profile and spots evaluated per slice).
        max_spots: cap on GFlash's spot count per shower (memory: ~100 bytes per spot in a batch).
        medium: one material for every layer; None (default): each layer's ``medium`` from the
            geometry (its own, else the geometry's, else ``pb_lar``; names from :data:`.medium.MEDIA`).
    """

    em_stochastic: Knob = 0.10
    em_constant: Knob = 0.005
    had_stochastic: Knob = 0.5
    h_over_e: Knob = 0.7
    em_fraction_sigma: Knob = 0.10
    had_core_lambda: Knob = 0.1
    had_tail_lambda: Knob = 0.3
    had_core_probability: Knob = 0.5
    photon_conversion_x0: Knob = em.PHOTON_CONVERSION_X0
    mip_landau_sigma: Knob = 0.2
    beam_spot_cells: Knob = 0.5
    beam_divergence_mrad: Knob = 10.0
    longitudinal_fluctuations: bool = True
    slice_x0: float = 2.0
    max_spots: int = 4096
    medium: Medium | None = None

    def replace(self, **changes) -> ShowerPhysics:
        return dataclasses.replace(self, **changes)


class _Layout:
    """A geometry's depth slices in X0 and lambda_I, their media, and the per-layer lookup (x, y in mm) -> cell.

    Each layer is cut into ``ceil(depth / slice_x0)`` equal slices; depths add up layer by layer, each
    layer's thickness counted in its own medium's X0 (EM profiles) and lambda_I (hadronic profiles), so a
    stack of different media is one depth axis in each unit. Per-slice tensors (S,): the medium's
    Moliere radius and lambda_I (mm) and a MIP's visible energy per X0 of depth (GeV).
    """

    def __init__(self, geometry: _geometry.Geometry, medium: Medium | None, slice_x0: float) -> None:
        media = []
        for layer, name in zip(geometry.layers, geometry.layer_media()):
            if layer.depth_mm is None or (layer.kind == "cartesian" and layer.cell_size is None):
                raise _geometry.GeometryError(
                    f"simulate: geometry {geometry.name!r} layer {layer.name!r} needs depth_mm"
                    + (" and cell_size (mm)" if layer.kind == "cartesian" else "")
                    + " to place showers; give them in the geometry description"
                )
            if medium is None and (name or "pb_lar") not in MEDIA:
                raise _geometry.GeometryError(
                    f"simulate: geometry {geometry.name!r} layer {layer.name!r}: unknown medium {name!r}; "
                    f"expected one of {sorted(MEDIA)}"
                )
            media.append(medium or get_medium(name or "pb_lar"))
        edges, lambda_edges, mm_edges, slice_layer, self.layer_slices = [0.0], [0.0], [0.0], [], []
        for i, (layer, m) in enumerate(zip(geometry.layers, media)):
            depth, depth_lambda = layer.depth_mm / m.x0_mm, layer.depth_mm / m.lambda_mm
            n_sub = max(1, math.ceil(depth / slice_x0 - 1e-9))
            self.layer_slices.append((len(edges) - 1, len(edges) - 1 + n_sub))
            x0_start, lambda_start, mm_start = edges[-1], lambda_edges[-1], mm_edges[-1]
            edges += [x0_start + depth * (j + 1) / n_sub for j in range(n_sub)]
            lambda_edges += [lambda_start + depth_lambda * (j + 1) / n_sub for j in range(n_sub)]
            mm_edges += [mm_start + layer.depth_mm * (j + 1) / n_sub for j in range(n_sub)]
            slice_layer += [i] * n_sub
        self.edges, self.lambda_edges = torch.tensor(edges), torch.tensor(lambda_edges)
        self.n_slices = len(edges) - 1
        self.layer_edges = self.edges[[0, *(last for _, last in self.layer_slices)]]  # (L+1,) X0
        mm = torch.tensor(mm_edges)
        self.slice_mm = (mm[1:] + mm[:-1]) / 2  # (S,) depth of each slice's centre, mm
        self.noise_scales = tuple(m.noise_scale for m in media)  # the readout channels' noise, per layer
        self.layer_z = torch.tensor([m.z_eff for m in media])
        self.layer_critical = torch.tensor([m.critical_mev for m in media])
        self.layer_period_x0 = torch.tensor([m.period_x0 for m in media])
        self.layer_e_hat = torch.tensor([m.e_hat for m in media])
        cartesian = [i for i, layer in enumerate(geometry.layers) if layer.kind == "cartesian"]
        thickest = max(cartesian, key=lambda i: geometry.layers[i].depth_mm / media[i].x0_mm, default=None)
        size = geometry.layers[thickest].cell_size if thickest is not None else (0.0, 0.0)
        self.pitch_mm = math.sqrt(size[0] * size[1])  # the beam spot's unit; 0 without Cartesian layers
        slice_media = [media[i] for i in slice_layer]
        self.moliere_mm = torch.tensor([m.moliere_mm for m in slice_media])
        self.lambda_mm = torch.tensor([m.lambda_mm for m in slice_media])
        self.mip_gev_per_x0 = torch.tensor([m.x0_mm * m.mip_mev_per_mm / 1000 for m in slice_media])
        self.layers = geometry.layers
        self.layer_offsets, self.n_cells = geometry.layer_offsets, geometry.n_cells
        self.r_edges = [
            torch.tensor(layer.r_edges) if layer.kind == "cylindrical" else None for layer in geometry.layers
        ]

    def to_lambda(self, depth_x0: torch.Tensor) -> torch.Tensor:
        """X0 depths -> lambda_I depths (piecewise linear over the slices; the last medium continues)."""
        return _interpolate(depth_x0, self.edges, self.lambda_edges)

    def to_x0(self, depth_lambda: torch.Tensor) -> torch.Tensor:
        """lambda_I depths -> X0 depths (the inverse of :meth:`to_lambda`)."""
        return _interpolate(depth_lambda, self.lambda_edges, self.edges)

    def layer_at(self, depth_x0: torch.Tensor) -> torch.Tensor:
        """Index of the layer holding each X0 depth (the first / last layer before / behind the stack)."""
        return torch.bucketize(depth_x0, self.layer_edges[1:-1], right=True)

    def locate(self, layer: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell index within ``layer`` (row-major) and an inside-the-layer mask for points (x, y) in mm.

        Cartesian: x runs along the columns, y along the rows, (0, 0) at the layer's centre (as
        :meth:`~sim2real_fast.geometry.Geometry.feature_coordinates`). Cylindrical: r = |(x, y)| binned
        by ``r_edges``, alpha = atan2(y, x) in [-pi, pi) by ``rows`` equal bins.
        """
        spec = self.layers[layer]
        rows, cols = spec.rows, spec.cols
        if spec.kind == "cylindrical":
            edges = self.r_edges[layer]
            col = torch.bucketize(torch.hypot(x, y), edges, right=True) - 1
            inside = (col >= 0) & (col < cols)
            row = torch.floor((torch.atan2(y, x) + math.pi) * (rows / (2 * math.pi))).clamp(0, rows - 1).long()
            return row * cols + col, inside
        row_size, col_size = spec.cell_size
        col = torch.floor(x * (1 / col_size) + cols / 2)
        row = torch.floor(y * (1 / row_size) + rows / 2)
        inside = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        return (row * cols + col).long(), inside


def _interpolate(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear f(x) through increasing knots (xp, fp), extended linearly beyond both ends."""
    i = torch.bucketize(x, xp[1:-1], right=True)
    x0, x1, f0, f1 = xp[i], xp[i + 1], fp[i], fp[i + 1]
    return f0 + (x - x0) * ((f1 - f0) / (x1 - x0))


def _draw_physics(physics: ShowerPhysics, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f.name: draw(getattr(physics, f.name), n, generator)
        for f in dataclasses.fields(physics)
        if f.type == "Knob"
    }


def _gamma_sampling(energy: torch.Tensor, quantum: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Visible energy ~ Gamma(mean = energy, variance = quantum * energy), 0 where energy is 0."""
    held = energy > 0
    shape = torch.where(held, energy / quantum, 1.0)
    return torch._standard_gamma(shape, generator=generator) * quantum * held


def _batch(
    labels: torch.Tensor,
    energy: torch.Tensor,
    layout: _Layout,
    physics: ShowerPhysics,
    effects: DetectorEffects,
    readout: Readout | None,
    threshold: float,
    g: torch.Generator,
    g_cells: torch.Generator,
    checkpoints: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (n, n_cells) MeV, overflow (n,) MeV) for one batch.

    Depths are in X0 (EM profiles, the MIP track) or lambda_I (the pion's interaction and non-EM
    profile), converted through the layout's slices, so each layer counts in its own medium's units.
    ``checkpoints``: see :func:`_checkpoint` (None: the draws run straight through).
    """
    n = labels.shape[0]
    par = _draw_physics(physics, n, g)
    lateral = draw(effects.lateral_scale, n, g)
    shift = draw(effects.longitudinal_shift_x0, n, g)
    pion_em = draw(effects.pion_em_fraction_scale, n, g)
    pion_width = draw(effects.pion_width_scale, n, g)
    pion_length = draw(effects.pion_length_scale, n, g)
    _checkpoint(g, checkpoints, 0)
    e_gev = energy.float()
    edges, t_end = layout.edges, float(layout.edges[-1])
    lambda_edges, l_end = layout.lambda_edges, float(layout.lambda_edges[-1])
    is_gamma, is_pion = labels == PARTICLES["gamma"], labels == PARTICLES["pi+"]

    conversion = torch.empty(n).exponential_(1.0, generator=g) * par["photon_conversion_x0"]
    l_int = hadronic.interaction_depth(n, generator=g)  # lambda_I
    t_int = layout.to_x0(l_int)
    interacts = l_int < l_end
    f_em = (hadronic.em_fraction(e_gev, par["em_fraction_sigma"], generator=g) * pion_em).clamp_max(1.0)
    f_em = torch.where(is_pion, f_em * interacts, 1.0)
    e_em = e_gev * f_em
    e_had = torch.where(is_pion & interacts, e_gev * (1 - f_em) * par["h_over_e"], 0.0)

    # EM component (electrons, photons, the pions' pi0 part), with the medium at its median maximum
    # (the start's medium gives that depth: thin front layers do not set the parameters)
    start = torch.where(is_gamma, conversion, torch.where(is_pion, t_int, 0.0)) + torch.where(is_pion, 0.0, shift)
    e_param = e_em.clamp_min(0.1)  # parameters of an empty EM part are never used
    first = layout.layer_at(start)
    t_first = em.median_shower_max(e_param, layout.layer_critical[first], period_x0=layout.layer_period_x0[first],
                                   e_hat=layout.layer_e_hat[first])
    medium = layout.layer_at(start + t_first.clamp_min(0))
    z_eff, critical = layout.layer_z[medium], layout.layer_critical[medium]
    period_x0, e_hat = layout.layer_period_x0[medium], layout.layer_e_hat[medium]
    alpha, beta = em.longitudinal_parameters(
        e_param, z_eff, critical, generator=g if physics.longitudinal_fluctuations else None,
        period_x0=period_x0, e_hat=e_hat,
    )
    fraction, mean_depth = em.profile_fractions(alpha, beta, start, edges)
    tau = mean_depth * beta[:, None] / (alpha - 1)[:, None]
    r_core, r_tail, p_core = em.radial_parameters(e_param[:, None], tau, z_eff[:, None])
    scale = layout.moliere_mm * lateral[:, None]  # (n, S) mm per Moliere radius
    tail_em = 1 - torch.special.gammainc(alpha, (beta * (t_end - start)).clamp_min(0))

    # non-EM component of pions, in lambda_I from the interaction point, stretched by the length residual
    a_had, b_had = hadronic.nonem_profile(e_gev)
    b_had = b_had / pion_length
    l_start = layout.to_lambda(t_int)
    fraction_had, _ = em.profile_fractions(a_had, b_had, l_start, lambda_edges)
    tail_had = 1 - torch.special.gammainc(a_had, (b_had * (l_end - l_start)).clamp_min(0))
    overflow = 1000 * (e_em * tail_em + e_had * tail_had)

    constant = (1 + par["em_constant"] * torch.randn(n, generator=g)).clamp_min(0)[:, None]
    visible_em = _gamma_sampling(e_em[:, None] * fraction, par["em_stochastic"][:, None] ** 2, g) * constant
    visible_had = _gamma_sampling(e_had[:, None] * fraction_had, par["had_stochastic"][:, None] ** 2, g) * constant
    _checkpoint(g, checkpoints, 1)

    # MIP track of pions up to the interaction (or through the calorimeter)
    track_end = torch.where(is_pion, torch.minimum(t_int, torch.tensor(t_end)), 0.0)[:, None]
    length = (torch.minimum(track_end, edges[1:]) - edges[:-1]).clamp_min(0)
    s = par["mip_landau_sigma"][:, None]
    landau = torch.exp(s * torch.randn(n, layout.n_slices, generator=g) - s**2 / 2)
    visible_mip = length * layout.mip_gev_per_x0 * landau

    visible = torch.stack([visible_em, visible_had, visible_mip], 1)  # (n, 3, S) GeV
    zeros = torch.zeros_like(r_core)
    had_width = pion_width[:, None] * layout.lambda_mm  # (n, S) mm per unit of the non-EM radii
    had_core = par["had_core_lambda"][:, None] * had_width
    had_tail = par["had_tail_lambda"][:, None] * had_width
    # the pions' pi0 sub-showers start spread over the hadronic core: add its radius in quadrature
    spread = torch.where(is_pion[:, None], had_core, 0.0)
    radius_core = torch.stack([torch.hypot(r_core * scale, spread), had_core, zeros], 1)
    radius_tail = torch.stack([torch.hypot(r_tail * scale, spread), had_tail, zeros], 1)
    probability = torch.stack([p_core, par["had_core_probability"][:, None].expand_as(p_core), zeros + 1], 1)

    # the shower axis: beam spot at the front face, small angle; (n, S) offsets at each slice's depth
    sigma_mm = par["beam_spot_cells"] * layout.pitch_mm
    slope = par["beam_divergence_mrad"] * 1e-3
    axis = [(sigma_mm * torch.randn(n, generator=g))[:, None]
            + (slope * torch.randn(n, generator=g))[:, None] * layout.slice_mm for _ in range(2)]

    medium_spots = em.spot_count(e_gev, sampling_term=par["em_stochastic"], z_eff=z_eff, sampling=period_x0 > 0)
    n_spots = medium_spots.ceil().clamp(1, physics.max_spots)
    total = visible.sum((1, 2)).clamp_min(1e-12)
    spots = torch.ceil(visible * (n_spots / total)[:, None, None]).clamp_min(1) * (visible > 0)
    spots[:, 2] = (visible_mip > 0).float()
    table = torch.stack([1000 * visible / spots.clamp_min(1), radius_core, radius_tail, probability,
                         axis[0][:, None].expand_as(visible), axis[1][:, None].expand_as(visible)], -1)
    spots = spots.long()
    # every layer's spots go to one hit list, event by event and within an event layer by layer
    counts = torch.stack([spots[:, :, a:b].sum((1, 2)) for a, b in layout.layer_slices], 1)  # (n, L)
    offsets = torch.zeros(n + 1, dtype=torch.long)
    offsets[1:] = torch.cumsum(counts.sum(1), 0)
    layer_start = offsets[:-1, None] + torch.cumsum(counts, 1) - counts  # (n, L) first hit of (event, layer)
    cell = torch.empty(int(offsets[-1]), dtype=torch.long)
    hit_energy = torch.empty(int(offsets[-1]))
    for i, (first, last) in enumerate(layout.layer_slices):
        event, rank, local, energy = _deposit(spots[:, :, first:last], table[:, :, first:last], layout, i, g)
        where = layer_start[event, i] + rank
        cell[where] = layout.layer_offsets[i] + local
        hit_energy[where] = energy
    plain = readout is None
    images = hits_to_image(offsets, cell, hit_energy, n_cells=layout.n_cells, threshold=threshold if plain else 0.0)
    if not plain:
        images = apply_readout(images, readout, threshold, g_cells)
    return images, overflow


def _checkpoint(g: torch.Generator, checkpoints: list[torch.Tensor] | None, index: int) -> None:
    """Record ``g``'s state as checkpoint ``index`` (the list is that short) or restore it (it is longer).

    A pair's first member records, the second restores: the draws after a checkpoint are then the
    same in both members, whatever each consumed before it (a Randomized residual draws, a fixed one
    does not; the Gamma sampler's rejection loop uses a number of draws that depends on its means).
    """
    if checkpoints is None:
        return
    if index < len(checkpoints):
        g.set_state(checkpoints[index])
    else:
        checkpoints.append(g.get_state())


def _deposit(
    spots: torch.Tensor, table: torch.Tensor, layout: _Layout, layer: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Spots of one layer -> (event, rank within the event's spots in this layer, cell in the layer,
    energy MeV), (H_l,) each, in event order.

    spots: (n, C, S_l) spot counts per event, component and depth slice; table: (n, C, S_l, 6) per-spot
    energy (MeV), core radius, tail radius (mm), core probability and the axis' x, y (mm). Spots that
    miss the layer keep their place (cell 0 of the layer) with zero energy.
    """
    per_event = spots[0].numel()
    index = torch.repeat_interleave(torch.arange(spots.numel()), spots.flatten())
    spot = table.reshape(-1, table.shape[-1]).index_select(0, index)  # (H_l, 6)
    u = torch.rand(index.shape[0], 3, generator=g)
    radius = em.radius_from_uniforms(spot[:, 1], spot[:, 2], spot[:, 3], u[:, 0], u[:, 1])
    phi = u[:, 2] * (2 * math.pi)
    x, y = radius * torch.cos(phi), radius * torch.sin(phi)
    if layout.layers[layer].kind == "cartesian":  # cylindrical bins are centred on the particle's own axis
        x, y = x + spot[:, 4], y + spot[:, 5]
    cell, inside = layout.locate(layer, x, y)
    event = index // per_event
    first_of_event = torch.cumsum(spots.sum((1, 2)), 0) - spots.sum((1, 2))
    rank = torch.arange(index.shape[0]) - first_of_event[event]
    return event, rank, cell * inside, spot[:, 0] * inside


_CELL_SEED = 0x5EED_CE11  # the readout's generator is seeded with seed + this


def _prepare(n, geometry, physics, particles, energy_range, energy_distribution, batch_size):
    """Checked options -> (geometry, physics, layout, particle codes, (low, high) GeV)."""
    geometry = _geometry.get(geometry)
    physics = physics or ShowerPhysics()
    names = (particles,) if isinstance(particles, str) else tuple(particles)
    unknown = [p for p in names if p not in PARTICLES]
    if not names or unknown:
        raise ValueError(f"particles: expected names from {list(PARTICLES)}, got {list(names)}")
    low, high = (float(e) for e in energy_range)
    if not 0 < low <= high:
        raise ValueError(f"energy_range: expected 0 < low <= high (GeV), got {energy_range}")
    if energy_distribution not in ("uniform", "log-uniform"):
        raise ValueError(f"energy_distribution: expected 'uniform' or 'log-uniform', got {energy_distribution!r}")
    if n < 0 or batch_size < 1:
        raise ValueError(f"expected n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    layout = _Layout(geometry, physics.medium, physics.slice_x0)
    codes = torch.tensor([PARTICLES[p] for p in names])
    return geometry, physics, layout, codes, (low, high)


def _readout(effects: DetectorEffects, geometry, layout: _Layout) -> Readout | None:
    return None if effects == PRESETS["none"] else Readout(effects, geometry, layout.noise_scales)


def _primaries(m: int, codes: torch.Tensor, energy_range, energy_distribution: str, g: torch.Generator):
    """(labels (m,) int64, incident energies (m,) float64 GeV) of one batch."""
    low, high = energy_range
    label = codes[torch.randint(len(codes), (m,), generator=g)]
    u = torch.rand(m, generator=g, dtype=torch.float64)
    if energy_distribution == "uniform":
        return label, low + (high - low) * u
    return label, torch.exp(math.log(low) + (math.log(high) - math.log(low)) * u)


def _joined(geometry, images, labels, energies, overflows) -> SimulatedShowers:
    if not images:
        return SimulatedShowers(
            torch.zeros(0, geometry.n_cells), torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.float64), geometry, torch.zeros(0),
        )
    return SimulatedShowers(torch.cat(images), torch.cat(labels), torch.cat(energies), geometry, torch.cat(overflows))


def showers(
    n: int,
    *,
    geometry: str | _geometry.Geometry = "calogan",
    effects: None | str | DetectorEffects = None,
    seed: int = 0,
    particles: str | Sequence[str] = ("e+", "gamma", "pi+"),
    energy_range: tuple[float, float] = (1.0, 100.0),
    energy_distribution: str = "uniform",
    physics: ShowerPhysics | None = None,
    threshold_mev: float = 1.0,
    batch_size: int = 1024,
) -> SimulatedShowers:
    """Simulate ``n`` showers seen through a detector: none (``effects=None``), the sim domain's
    (``"nominal"``) or a "real" one (``"realistic"``, ``"dev"``, ``"stress"``, a DetectorEffects).

    Args:
        geometry: a preset name or Geometry whose layers have depth_mm (and cell_size for Cartesian
            layers; cylindrical layers bin by r / alpha) and may name a medium (default ``pb_lar``).
            Showers enter around the centre (beam spot), along the depth (small angular spread).
        effects: None / ``"none"`` (no digitisation), a name of :data:`~.presets.PRESETS` or a DetectorEffects.
        seed: the same seed (and batch_size) gives the same output; the fixed detector comes from
            ``effects.detector_seed`` instead, so samples with different seeds share one detector.
        particles: names from :data:`PARTICLES`, each event picks one uniformly.
        energy_range: (low, high) incident energy in GeV; energy_distribution ``"uniform"`` or ``"log-uniform"``.
        physics: the shower model's parameters (default :class:`ShowerPhysics`).
        threshold_mev: readout threshold: cells below it read 0.
        batch_size: events per vectorised batch (bounds memory: up to ``max_spots`` spots of ~100 bytes
            per event).
    """
    effects = get_effects(effects)
    geometry, physics, layout, codes, energy_range = _prepare(
        n, geometry, physics, particles, energy_range, energy_distribution, batch_size
    )
    readout = _readout(effects, geometry, layout)
    g = torch.Generator().manual_seed(seed)
    g_cells = torch.Generator().manual_seed(seed + _CELL_SEED)
    images, labels, energies, overflows = [], [], [], []
    for start in range(0, n, batch_size):
        label, energy = _primaries(min(batch_size, n - start), codes, energy_range, energy_distribution, g)
        image, overflow = _batch(label, energy, layout, physics, effects, readout, threshold_mev, g, g_cells)
        images.append(image)
        labels.append(label)
        energies.append(energy)
        overflows.append(overflow)
    return _joined(geometry, images, labels, energies, overflows)


def paired_showers(
    n: int,
    *,
    geometry: str | _geometry.Geometry = "calogan",
    sim_effects: None | str | DetectorEffects = "nominal",
    real_effects: None | str | DetectorEffects = "realistic",
    seed: int = 0,
    particles: str | Sequence[str] = ("e+", "gamma", "pi+"),
    energy_range: tuple[float, float] = (1.0, 100.0),
    energy_distribution: str = "uniform",
    physics: ShowerPhysics | None = None,
    threshold_mev: float = 1.0,
    batch_size: int = 1024,
) -> PairedShowers:
    """The same ``n`` true showers seen through the sim detector and a "real" one (paired data, Pix2Pix).

    The ``sim`` member is exactly ``showers(n, effects=sim_effects, seed=seed, ...)`` with the same
    options. The ``real`` member is the same events under ``real_effects``: its shower-level residuals
    (lateral scale, start depth, the pions' hadronic model) change the shower itself, then its readout
    digitises it. Per batch of ``batch_size`` events, the real member starts from the sim member's
    generator states and is reset to them at two points, so the members share:

    - the particle and incident energy, the per-event :class:`ShowerPhysics` draws, the photon
      conversion and pion interaction depths, the pions' EM fraction, the (ln T, ln alpha) fluctuations
      and the constant-term factor (reset after the residual knobs' draws: a Randomized residual in
      one member only does not shift them);
    - the pions' MIP energy losses, the entry point and the axis angle (reset after the sampling);
    - the sampling fluctuations and spot positions only up to the first event whose longitudinal
      profile differs: the Gamma sampler's and the spots' draws no longer line up after it (in practice
      they are independent when a shower-level residual differs);
    - the readout's draws (noise, pile-up, hot cells) up to its first step that consumes a different
      number of them (e.g. another pile-up count).

    With ``real_effects == sim_effects`` the members are identical. Options as :func:`showers`.
    """
    sim_effects, real_effects = get_effects(sim_effects), get_effects(real_effects)
    geometry, physics, layout, codes, energy_range = _prepare(
        n, geometry, physics, particles, energy_range, energy_distribution, batch_size
    )
    readouts = _readout(sim_effects, geometry, layout), _readout(real_effects, geometry, layout)
    g = torch.Generator().manual_seed(seed)
    g_cells = torch.Generator().manual_seed(seed + _CELL_SEED)
    g_real, g_real_cells = torch.Generator(), torch.Generator()
    members = ([], []), ([], [])  # (images, overflows) of sim and real
    labels, energies = [], []
    for start in range(0, n, batch_size):
        label, energy = _primaries(min(batch_size, n - start), codes, energy_range, energy_distribution, g)
        g_real.set_state(g.get_state())
        g_real_cells.set_state(g_cells.get_state())
        checkpoints: list[torch.Tensor] = []
        for effects, readout, generators, (images, overflows) in zip(
            (sim_effects, real_effects), readouts, ((g, g_cells), (g_real, g_real_cells)), members
        ):
            image, overflow = _batch(label, energy, layout, physics, effects, readout, threshold_mev, *generators,
                                     checkpoints=checkpoints)
            images.append(image)
            overflows.append(overflow)
        labels.append(label)
        energies.append(energy)
    sim, real = (_joined(geometry, images, labels, energies, overflows) for images, overflows in members)
    return PairedShowers(sim, real)
