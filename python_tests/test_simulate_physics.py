"""Physics validation of the shower simulator: profiles, containment, resolution, pions vs electrons."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import simulate
from sim2real_fast.geometry import Geometry, Layer
from sim2real_fast.simulate import PB_LAR, em
from sim2real_fast.simulate.medium import FE_SCINT, LAR, MEDIA, W_SI

X0 = PB_LAR.x0_mm
ON_AXIS = simulate.ShowerPhysics(beam_spot_cells=0.0, beam_divergence_mrad=0.0)
COARSE = simulate.ShowerPhysics(max_spots=512)  # for energy sums and depth profiles: fewer lateral spots, faster


def sampling_terms(medium) -> dict:
    return dict(period_x0=medium.period_x0, e_hat=medium.e_hat)


def thin_layers(n_layers: int, depth_x0: float, cell_mm: float = 40.0, cells: int = 15) -> Geometry:
    """n_layers Cartesian layers of depth_x0 each, cells x cells of cell_mm: a fine longitudinal probe."""
    layer = dict(rows=cells, cols=cells, cell_size=(cell_mm, cell_mm), depth_mm=depth_x0 * X0)
    return Geometry("probe", tuple(Layer(f"l{i}", **layer) for i in range(n_layers)))


def resolution_fit(energies: np.ndarray, resolutions: list[float]) -> tuple[float, float]:
    """(a, b) of sigma/E = a/sqrt(E) (+) b, least squares on (sigma/E)^2 = a^2/E + b^2."""
    design = np.stack([1 / energies, np.ones_like(energies)], 1)
    (a2, b2), *_ = np.linalg.lstsq(design, np.array(resolutions) ** 2, rcond=None)
    return math.sqrt(max(a2, 0)), math.sqrt(max(b2, 0))


def relative_spread(images: torch.Tensor) -> float:
    total = images.double().sum(1)
    return (total.std() / total.mean()).item()


@pytest.mark.parametrize("medium", sorted(MEDIA))
@pytest.mark.parametrize("energy", [10.0, 100.0])
def test_longitudinal_sampler_peaks_at_the_parametrised_maximum(energy, medium):
    """Grindhammer-Peters: the mean profile in 0.25 X0 bins peaks at T = ln y - 0.812 (+ the sampling terms in a
    sampling medium; medians: exactly)."""
    medium = MEDIA[medium]
    edges = torch.arange(0, 40.01, 0.25)
    centres = (edges[:-1] + edges[1:]) / 2
    t_max = em.median_shower_max(energy, medium.critical_mev, **sampling_terms(medium))
    e = torch.full((20000,), energy)
    alpha, beta = em.longitudinal_parameters(e[:1], medium.z_eff, medium.critical_mev, generator=None,
                                             **sampling_terms(medium))
    fraction, _ = em.profile_fractions(alpha, beta, torch.zeros(1), edges)
    assert abs(centres[fraction[0].argmax()] - t_max) <= 0.125 + 1e-6
    g = torch.Generator().manual_seed(1)
    alpha, beta = em.longitudinal_parameters(e, medium.z_eff, medium.critical_mev, generator=g,
                                             **sampling_terms(medium))
    fraction, mean_depth = em.profile_fractions(alpha, beta, torch.zeros_like(e), edges)
    assert abs(centres[fraction.mean(0).argmax()] - t_max) <= 0.5
    # the fluctuations are there: the per-shower maxima spread by about sigma(ln T) T
    per_shower_t = (alpha - 1) / beta
    ln_y = math.log(energy * 1000 / medium.critical_mev)
    sigma_ln_t = 1 / (-2.5 + 1.25 * ln_y) if medium.period_x0 > 0 else 1 / (-1.4 + 1.26 * ln_y)
    assert torch.log(per_shower_t).std().item() == pytest.approx(sigma_ln_t, rel=0.1)
    # the Gamma CDF fractions and first moments are consistent with the closed forms
    assert fraction.sum(1).mean().item() == pytest.approx(1.0, abs=2e-3)
    mean = (fraction * mean_depth).sum(1) / fraction.sum(1)
    contained = fraction.sum(1) > 0.999
    assert contained.float().mean() > 0.9
    assert torch.allclose(mean[contained], (alpha / beta)[contained], rtol=5e-3)


def test_showers_in_fine_layers_peak_where_the_parametrisation_says_photons_later():
    """Through the whole simulator: 40 layers of 1 X0; e+ peak at T, photons ~9/7 X0 deeper on average."""
    energy = 50.0
    geometry = thin_layers(40, 1.0)
    depth = torch.arange(40) + 0.5
    profiles, mean_depth = {}, {}
    for particle in ("e+", "gamma"):
        out = simulate.showers(4000, geometry=geometry, particles=particle, energy_range=(energy, energy),
                               seed=3, threshold_mev=0.0, physics=COARSE)
        layers = s2r.shower_features(out.images, geometry).layer_energy.double()
        profiles[particle] = layers.mean(0)
        mean_depth[particle] = ((layers * depth).sum(1) / layers.sum(1)).mean().item()
    t_max = em.median_shower_max(energy, PB_LAR.critical_mev, **sampling_terms(PB_LAR))
    assert abs(depth[profiles["e+"].argmax()].item() - t_max) <= 1.0
    assert depth[profiles["gamma"].argmax()] >= depth[profiles["e+"].argmax()]
    assert mean_depth["gamma"] - mean_depth["e+"] == pytest.approx(9 / 7, abs=0.25)


def test_ninety_percent_of_em_energy_within_one_moliere_radius():
    """The radial sampler (GFlash two-component profile), energy-weighted over the shower depth."""
    g = torch.Generator().manual_seed(2)
    n = 4000
    energy = torch.full((n,), 50.0)
    alpha, beta = em.longitudinal_parameters(energy, PB_LAR.z_eff, PB_LAR.critical_mev, generator=g)
    edges = torch.arange(0, 30.01, 1.0)
    fraction, mean_depth = em.profile_fractions(alpha, beta, torch.zeros(n), edges)
    tau = mean_depth * (beta / (alpha - 1))[:, None]
    r_core, r_tail, p = em.radial_parameters(energy[:, None], tau, PB_LAR.z_eff)
    # draw 50 radii per (shower, depth bin), weight them by the bin's energy
    radius = em.sample_radius(*(t[..., None].expand(-1, -1, 50) for t in (r_core, r_tail, p)), generator=g)
    weight = fraction[..., None].expand_as(radius)
    within = (weight * (radius < 1)).sum() / weight.sum()
    assert within.item() == pytest.approx(0.90, abs=0.03)
    within_2 = (weight * (radius < 2)).sum() / weight.sum()
    assert within_2.item() > 0.94
    # the sampler follows each component's CDF r^2 / (r^2 + R^2)
    one = torch.ones(200000)
    r = em.sample_radius(one * 0.2, one * 0.2, one, generator=g)
    assert (r < 0.2).float().mean().item() == pytest.approx(0.5, abs=0.005)


def test_em_resolution_scales_as_one_over_sqrt_e():
    """sigma/E = a/sqrt(E) (+) b fitted at six energies gives the configured a (10%) and b (0.5%)."""
    energies = np.array([2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
    resolution = [
        relative_spread(simulate.showers(2000, particles="e+", energy_range=(e, e), seed=4, threshold_mev=0.0,
                                         physics=COARSE).images)
        for e in energies
    ]
    a, b = resolution_fit(energies, resolution)
    assert a == pytest.approx(0.10, abs=0.012)
    assert b < 0.012
    # doubling the configured stochastic term doubles the fitted one
    physics = COARSE.replace(em_stochastic=0.2)
    out = simulate.showers(2000, particles="e+", energy_range=(10, 10), seed=4, threshold_mev=0.0, physics=physics)
    assert relative_spread(out.images) == pytest.approx(math.hypot(0.2 / math.sqrt(10), 0.005), rel=0.1)


def test_pions_are_wider_fluctuate_more_and_read_lower():
    """CaloGAN at 50 GeV: pion showers are wider and fluctuate more than electron showers."""
    results = {}
    for particle in ("e+", "pi+"):
        out = simulate.showers(3000, particles=particle, energy_range=(50, 50), seed=5)
        features = s2r.shower_features(out.images, out.geometry)
        showering = features.layer_energy[:, 1] > 2000  # pions that interacted in front of / in layer_1
        results[particle] = (features, showering)
    e_features, _ = results["e+"]
    pi_features, showering = results["pi+"]
    assert pi_features.width_x[showering, 1].mean() > 1.5 * e_features.width_x[:, 1].mean()
    e_resolution = e_features.total.std() / e_features.total.mean()
    pi_resolution = pi_features.total.std() / pi_features.total.mean()
    assert pi_resolution > 3 * e_resolution
    assert pi_features.total.mean() < 0.8 * e_features.total.mean()


def test_pion_response_in_a_deep_calorimeter_is_e_over_h():
    """Contained showers (10 lambda_I deep): e/pi = 1 / (f_em + (1 - f_em) h/e) and ~50%/sqrt(E) (+) 3%."""
    deep = thin_layers(12, PB_LAR.lambda_mm / X0, cell_mm=100.0, cells=21)
    energy = 50.0
    out = {p: simulate.showers(2000, geometry=deep, particles=p, energy_range=(energy, energy), seed=6,
                               threshold_mev=0.0, physics=COARSE).images.double().sum(1) for p in ("e+", "pi+")}
    f_em = 1 - energy**-0.18
    expected = 1 / (f_em + (1 - f_em) * 0.7)
    assert (out["e+"].mean() / out["pi+"].mean()).item() == pytest.approx(expected, rel=0.05)
    pi_resolution = (out["pi+"].std() / out["pi+"].mean()).item()
    assert 0.04 < pi_resolution < 0.5 / math.sqrt(energy) + 0.05
    # longer: in layers of one lambda_I, electrons stop in the first, pions reach deeper
    depth = {}
    for particle in ("e+", "pi+"):
        images = simulate.showers(500, geometry=deep, particles=particle, energy_range=(energy, energy), seed=6,
                                  threshold_mev=0.0, physics=COARSE).images
        layers = s2r.shower_features(images, deep).layer_energy.double()
        depth[particle] = ((layers * torch.arange(12)).sum(1) / layers.sum(1)).mean().item()
    assert depth["e+"] < 0.05 and depth["pi+"] > 0.7


def test_non_interacting_pions_leave_a_mip_track():
    """A pion that punches through deposits ~0.56 MeV/mm along its path, in the central cells only."""
    geometry = s2r.geometry.get("calogan")
    physics = ON_AXIS.replace(medium=PB_LAR)
    out = simulate.showers(4000, particles="pi+", energy_range=(20, 20), seed=7, physics=physics)
    total = out.images.sum(1)
    mip = 480.0 * PB_LAR.mip_mev_per_mm
    track_only = (out.images > 0).sum(1) <= geometry.n_layers
    assert track_only.float().mean().item() == pytest.approx(math.exp(-480.0 / PB_LAR.lambda_mm), abs=0.03)
    # the track enters at (0, 0): layer_0 row 1 col 48, layer_1 row 6 col 6, layer_2 row 6 col 3
    centre = geometry.position_to_cell(torch.tensor([0, 1, 2]), torch.tensor([1, 6, 6]), torch.tensor([48, 6, 3]))
    outside = torch.ones(geometry.n_cells, dtype=torch.bool)
    outside[centre] = False
    assert (out.images[track_only][:, outside] == 0).all()
    assert total[track_only].median().item() == pytest.approx(mip, rel=0.1)


# ---- the CaloChallenge geometries: W/Si (ds2), and ATLAS's Pb/LAr + Fe/scintillator stack (ds1) ----------


def test_ds2_profile_peaks_at_the_w_si_maximum_ninety_percent_within_one_moliere_radius():
    """ds2: 45 layers of 3.4 mm W/Si (0.81 X0); 50 GeV e+ peak at T(W/Si) and keep ~90% inside R_M = 10.9 mm."""
    geometry = s2r.geometry.get("calochallenge-ds2")
    out = simulate.showers(800, geometry=geometry, particles="e+", energy_range=(50, 50), seed=3, threshold_mev=0.0,
                           physics=ON_AXIS)
    profile = s2r.shower_features(out.images, geometry).layer_energy.double().mean(0)
    depth = (torch.arange(45) + 0.5) * (3.4 / W_SI.x0_mm)
    t_max = em.median_shower_max(50.0, W_SI.critical_mev, **sampling_terms(W_SI))
    assert abs(depth[profile.argmax()].item() - t_max) <= 0.81
    per_r = out.images.view(-1, 45, 16, 9).double().sum((0, 1, 2))
    cumulative = np.r_[0.0, (torch.cumsum(per_r, 0) / per_r.sum()).numpy()]
    within = np.interp(W_SI.moliere_mm, geometry.layers[0].r_edges, cumulative)
    assert within == pytest.approx(0.90, abs=0.03)
    # 41.85 mm = 3.8 R_M of radius contains ~99% (the rest leaks sideways)
    assert (out.images.double().sum(1) / 50_000).mean().item() == pytest.approx(0.987, abs=0.01)


def test_ds2_resolution_scales_as_one_over_sqrt_e():
    energies = np.array([5.0, 20.0, 80.0])
    resolution = [
        relative_spread(simulate.showers(400, geometry="calochallenge-ds2", particles="e+", energy_range=(e, e),
                                         seed=4, threshold_mev=0.0).images)
        for e in energies
    ]
    a, b = resolution_fit(energies, resolution)
    assert a == pytest.approx(0.10, abs=0.015)
    assert b < 0.015  # the configured 0.5% and the lateral leakage's fluctuation


def test_ds2_pions_are_wider_and_read_lower_than_electrons():
    geometry = s2r.geometry.get("calochallenge-ds2")
    features = {p: s2r.shower_features(simulate.showers(500, geometry=geometry, particles=p, energy_range=(50, 50),
                                                        seed=5).images, geometry) for p in ("e+", "pi+")}
    e, pi = features["e+"], features["pi+"]
    showering = pi.layer_energy[:, 12] > 1000  # pions with a shower in layer 12 (9.7 X0: e+ well sampled)
    assert showering.float().mean() > 0.1
    assert pi.width_x[showering, 12].mean() > 2 * e.width_x[:, 12].mean()
    assert pi.total.mean() < 0.5 * e.total.mean()  # 1.3 lambda_I deep: most of the hadronic energy leaks


def test_ds1_em_layers_follow_the_pb_lar_profile_behind_the_lar_presampler():
    """ds1 photons geometry: layer depths add up per medium (11.3 mm LAr = 0.08 X0, then Pb/LAr); 50 GeV e+
    share their energy among the layers as the Pb/LAr Grindhammer-Peters profile over those X0 edges."""
    geometry = s2r.geometry.get("calochallenge-ds1-photons")
    out = simulate.showers(1500, geometry=geometry, particles="e+", energy_range=(50, 50), seed=6, threshold_mev=0.0)
    layers = s2r.shower_features(out.images, geometry).layer_energy.double()
    share = (layers / layers.sum(1, keepdim=True)).mean(0)
    thickness_x0 = [11.3 / LAR.x0_mm, 68.6 / PB_LAR.x0_mm, 255.2 / PB_LAR.x0_mm, 31.9 / PB_LAR.x0_mm,
                    298.5 / FE_SCINT.x0_mm]
    edges = torch.tensor([0.0, *thickness_x0]).cumsum(0)
    alpha, beta = em.longitudinal_parameters(torch.tensor([50.0]), PB_LAR.z_eff, PB_LAR.critical_mev, generator=None,
                                             **sampling_terms(PB_LAR))
    expected, _ = em.profile_fractions(alpha, beta, torch.zeros(1), edges)
    assert torch.allclose(share, expected[0].double(), atol=0.01)
    assert share[2] > 0.85  # EMB2 holds the shower


def test_ds1_pions_cross_each_layer_in_its_own_interaction_lengths():
    """ds1 pions: the EM layers are 0.96 lambda_I (LAr + Pb/LAr), the tiles 7.6 lambda_I of Fe/scintillator."""
    geometry = s2r.geometry.get("calochallenge-ds1-pions")
    out = simulate.showers(2000, geometry=geometry, particles="pi+", energy_range=(50, 50), seed=7, threshold_mev=0.0,
                           physics=COARSE)
    em_layers = s2r.shower_features(out.images, geometry).layer_energy[:, :4].double().sum(1)
    lambda_em = 11.3 / LAR.lambda_mm + (68.6 + 255.2 + 31.9) / PB_LAR.lambda_mm
    mip = 11.3 * LAR.mip_mev_per_mm + (68.6 + 255.2 + 31.9) * PB_LAR.mip_mev_per_mm  # 203 MeV
    track_only = em_layers < 2 * mip
    # pions that pass the EM layers leave only their MIP track there (a few more interact at the very end)
    assert math.exp(-lambda_em) <= track_only.float().mean().item() <= math.exp(-lambda_em) + 0.07
    assert em_layers[track_only].median().item() == pytest.approx(mip, rel=0.05)
    # the 1.47 m of tiles hold the hadronic showers: little leaks behind them, much more if it were Pb/LAr
    leak = (out.overflow.double() / 50_000).mean().item()
    as_pb_lar = simulate.showers(2000, geometry=geometry, particles="pi+", energy_range=(50, 50), seed=7,
                                 physics=COARSE.replace(medium=PB_LAR)).overflow.double() / 50_000
    assert leak < 0.02 and as_pb_lar.mean().item() > 3 * leak


# ---- GFlash's sampling-calorimeter terms, the spot count, the beam ------------------------------------


def test_sampling_terms_match_hand_computed_values_for_pb_lar():
    """hep-ex/0001020 (sampling section; Geant4 GFlashSamplingShowerTuning coefficients), 50 GeV e+ in 2 mm Pb
    + 4 mm LAr: X0_eff = 15.556 mm, F_S = 15.556 / 6 = 2.5926, e-hat = 1 / (1 + 0.007 (82 - 18)) = 0.69061,
    ln y = ln(50000 / 9.3122) = 8.5884; T_hom = 8.5884 - 0.812 = 7.7764,
    T_sam = 7.7764 - 0.55 / 2.5926 - 0.69 (1 - 0.69061) = 7.3508;
    alpha_hom = 0.81 + (0.458 + 2.26 / 69.365) 8.5884 = 5.0233, alpha_sam = 5.0233 - 0.476 / 2.5926 = 4.8397;
    sigma(ln T) = 1 / (-2.5 + 1.25 x 8.5884) = 0.12142."""
    assert 1 / PB_LAR.period_x0 == pytest.approx(2.5926, abs=1e-4)
    assert PB_LAR.e_hat == pytest.approx(0.69061, abs=1e-5)
    assert em.median_shower_max(50.0, PB_LAR.critical_mev) == pytest.approx(7.7764, abs=1e-4)
    assert em.median_shower_max(50.0, PB_LAR.critical_mev, **sampling_terms(PB_LAR)) == pytest.approx(7.3508, abs=1e-4)
    e = torch.tensor([50.0], dtype=torch.float64)
    alpha, beta = em.longitudinal_parameters(e, PB_LAR.z_eff, PB_LAR.critical_mev, generator=None,
                                             **sampling_terms(PB_LAR))
    assert alpha.item() == pytest.approx(4.8397, abs=1e-4)
    assert ((alpha - 1) / beta).item() == pytest.approx(7.3508, abs=1e-4)
    homogeneous = em.longitudinal_parameters(e, PB_LAR.z_eff, PB_LAR.critical_mev, generator=None)
    assert homogeneous[0].item() == pytest.approx(5.0233, abs=1e-4)
    g = torch.Generator().manual_seed(0)
    alpha, beta = em.longitudinal_parameters(e.expand(40000), PB_LAR.z_eff, PB_LAR.critical_mev, generator=g,
                                             **sampling_terms(PB_LAR))
    assert torch.log((alpha - 1) / beta).std().item() == pytest.approx(0.12142, rel=0.03)
    assert LAR.period_x0 == 0 and LAR.e_hat == 1  # homogeneous: no sampling terms


def test_sampling_terms_move_the_simulated_centroid_as_the_paper_says():
    """Through the simulator in 40 layers of 1 X0 of Pb/LAr: the energy-weighted depth of 50 GeV e+ moves by
    <t>_sam - <t>_hom = T_s alpha_s / (alpha_s - 1) - T_h alpha_h / (alpha_h - 1) = 9.265 - 9.709 = -0.444 X0."""
    geometry = thin_layers(40, 1.0)
    depth = torch.arange(40, dtype=torch.float64) + 0.5
    centroid = {}
    for name, medium in (("sampling", PB_LAR), ("homogeneous", dataclasses.replace(PB_LAR, period_x0=0.0, e_hat=1.0))):
        out = simulate.showers(2000, geometry=geometry, particles="e+", energy_range=(50, 50), seed=8,
                               threshold_mev=0.0, physics=COARSE.replace(medium=medium))
        layers = s2r.shower_features(out.images, geometry).layer_energy.double()
        centroid[name] = ((layers * depth).sum(1) / layers.sum(1)).mean().item()
    assert centroid["sampling"] - centroid["homogeneous"] == pytest.approx(-0.444, abs=0.08)


def test_spot_count_follows_the_energy():
    """GFlash: N = 10.3 / S_c E^0.959 (sampling), 93 ln Z E^0.876 (homogeneous); 10 GeV, S_c = 0.1: 937.2."""
    e = torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)
    sampling = em.spot_count(e, sampling_term=0.1, z_eff=69.4, sampling=True)
    assert sampling.tolist() == pytest.approx([103.0, 937.2, 8527.5], rel=1e-4)
    homogeneous = em.spot_count(e, sampling_term=0.1, z_eff=18.0, sampling=False)
    assert homogeneous[0].item() == pytest.approx(93 * math.log(18.0))
    assert homogeneous[2].item() == pytest.approx(93 * math.log(18.0) * 100**0.876)


def test_cell_fluctuations_keep_falling_above_a_few_gev():
    """The hottest layer_1 cell's share of its layer fluctuates less at higher energy, up to the spot cap
    (4096 spots: ~47 GeV); with a cap of 256 spots (~2.5 GeV) it would stop falling."""
    calogan = s2r.geometry.get("calogan")

    def spread(energy, physics):
        out = simulate.showers(600, particles="e+", energy_range=(energy, energy), seed=3, physics=physics)
        layer = calogan.split_layers(out.images)[1].flatten(1).double()
        share = layer.max(1).values / layer.sum(1)
        return (share.std() / share.mean()).item()

    gflash = [spread(e, ON_AXIS) for e in (5.0, 10.0, 20.0, 40.0)]
    assert all(b < 0.85 * a for a, b in zip(gflash, gflash[1:]))
    capped = [spread(e, ON_AXIS.replace(max_spots=256)) for e in (10.0, 40.0)]
    assert capped[1] > 0.8 * capped[0] and capped[1] > 1.5 * gflash[3]


def test_beam_spot_spreads_the_entry_by_about_one_cell_and_showers_stay_contained():
    kwargs = dict(particles="e+", energy_range=(50, 50), seed=9)
    beam = simulate.showers(2000, physics=COARSE, **kwargs)
    axis = simulate.showers(2000, physics=COARSE.replace(beam_spot_cells=0.0, beam_divergence_mrad=0.0), **kwargs)
    f_beam, f_axis = (s2r.shower_features(o.images, o.geometry) for o in (beam, axis))
    # layer_1 (40 mm cells): centroid spread ~ 0.5 x 40 mm per axis (Gaussian, so ~one cell wide)
    assert f_beam.centroid_x[:, 1].std().item() == pytest.approx(20.0, rel=0.1)
    assert f_beam.centroid_y[:, 1].std().item() == pytest.approx(20.0, rel=0.1)
    assert f_axis.centroid_x[:, 1].std().item() < 3.0
    assert f_beam.total.mean() / f_axis.total.mean() == pytest.approx(1.0, abs=0.002)
    # the angular spread tilts the axis: the entry point moves apart between the front and the back
    tilted = simulate.showers(2000, physics=COARSE.replace(beam_spot_cells=0.0, beam_divergence_mrad=50.0), **kwargs)
    f_tilt = s2r.shower_features(tilted.images, tilted.geometry)
    lever = (f_tilt.centroid_x[:, 1] - f_tilt.centroid_x[:, 0]).std() / (f_axis.centroid_x[:, 1] - f_axis.centroid_x[:, 0]).std()
    assert lever > 1.5
