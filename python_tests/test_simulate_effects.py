"""The detector: each DetectorEffects knob moves its own statistic and (about) nothing else."""

import math

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import simulate
from sim2real_fast.geometry import Geometry, Layer
from sim2real_fast.simulate import PB_LAR, PRESETS, DetectorEffects, Randomized
from sim2real_fast.simulate.readout import Readout

N = 1500
NONE = PRESETS["none"]
NOMINAL = PRESETS["nominal"]
GEOMETRY = s2r.geometry.get("calogan")


def run(effects=None, n=N, particles="e+", energy_range=(20, 60), **kwargs):
    return simulate.showers(n, particles=particles, energy_range=energy_range, seed=11, effects=effects, **kwargs)


@pytest.fixture(scope="module")
def plain():
    return run()


def features(out):
    return s2r.shower_features(out.images, out.geometry)


def layer_shares(f):
    return f.layer_energy.mean(0) / f.total.mean()


def test_none_preset_is_no_digitisation(plain):
    assert torch.equal(run(NONE).images, plain.images)
    assert torch.equal(run("none").images, plain.images)


def test_lateral_scale_widens_em_showers_by_about_its_size(plain):
    wide = run(NONE.replace(lateral_scale=1.04))
    f0, f1 = features(plain), features(wide)
    ratio = f1.width_x.mean(0) / f0.width_x.mean(0)
    assert 1.02 < ratio[0] < 1.05 and 1.015 < ratio[1] < 1.05  # +4% in radius, seen through 5 / 40 mm cells
    assert f1.total.mean() / f0.total.mean() == pytest.approx(1.0, abs=0.003)
    assert torch.allclose(layer_shares(f1), layer_shares(f0), atol=0.002)


def test_start_depth_shift_moves_the_longitudinal_centroid_by_its_size():
    """40 layers of 1 X0: a 0.25 X0 later start moves the energy-weighted depth by 0.25 X0."""
    geometry = Geometry("probe", tuple(Layer(f"l{i}", 15, 15, cell_size=(40.0, 40.0), depth_mm=PB_LAR.x0_mm)
                                       for i in range(40)))
    depth = torch.arange(40, dtype=torch.float64) + 0.5

    def centroid_and_width(effects):
        out = simulate.showers(1500, geometry=geometry, particles="e+", energy_range=(30, 30), seed=2,
                               effects=effects, threshold_mev=0.0)
        f = features(out)
        layers = f.layer_energy.double()
        return ((layers * depth).sum(1) / layers.sum(1)).mean().item(), f.width_x[:, 8].mean().item()

    (t0, w0), (t1, w1) = centroid_and_width(NONE), centroid_and_width(NONE.replace(longitudinal_shift_x0=0.25))
    assert t1 - t0 == pytest.approx(0.25, abs=0.05)
    assert w1 == pytest.approx(w0, rel=0.03)


def test_miscalibration_is_a_fixed_per_cell_factor(plain):
    out = run(NONE.replace(miscalibration=0.05))
    both = (plain.images > 0) & (out.images > 0)
    ratio = torch.where(both, out.images / plain.images.clamp_min(1e-6), float("nan"))
    per_cell = ratio.nanmean(0)
    seen = both.sum(0) >= 5
    spread_in_cell = torch.nan_to_num(ratio - per_cell).abs().amax(0)
    assert spread_in_cell[seen].max() < 1e-4  # the same factor in every event (a fixed instance)
    assert per_cell[seen].std().item() == pytest.approx(0.05, rel=0.25)
    assert torch.allclose(features(out).width_x.mean(0), features(plain).width_x.mean(0), rtol=0.02)
    other = run(NONE.replace(miscalibration=0.05, detector_seed=1))
    assert not torch.equal(other.images, out.images)
    assert torch.equal(run(NONE.replace(miscalibration=0.05)).images, out.images)


def test_layer_miscalibration_scales_each_layer_by_one_plus_or_minus_its_size(plain):
    effects = NONE.replace(layer_miscalibration=0.02, detector_seed=3)
    out = run(effects, threshold_mev=0.0)
    reference = run(threshold_mev=0.0)
    ratio = features(out).layer_energy.sum(0) / features(reference).layer_energy.sum(0)
    signs = Readout(effects, GEOMETRY).layer_signs
    assert torch.allclose(ratio, 1 + 0.02 * signs, atol=1e-4)
    assert torch.allclose(features(out).width_x.mean(0), features(reference).width_x.mean(0), rtol=1e-3)
    assert any(not torch.equal(Readout(effects.replace(detector_seed=s), GEOMETRY).layer_signs, signs)
               for s in range(4, 10))


def test_nonlinearity_moves_the_low_energy_response_more_than_the_high():
    def response(effects, energy):
        out = simulate.showers(400, particles="e+", energy_range=(energy, energy), seed=4, effects=effects,
                               threshold_mev=0.0)
        return out.images.double().sum().item()

    low = response(NONE.replace(nonlinearity=-0.02), 2.0) / response(NONE, 2.0) - 1
    high = response(NONE.replace(nonlinearity=-0.02), 80.0) / response(NONE, 80.0) - 1
    assert low == pytest.approx(-0.02 * 1 / (1 + 2.0), rel=0.1)  # 1 + n E0 / (E0 + E), E0 = 1 GeV
    assert high == pytest.approx(-0.02 * 1 / (1 + 80.0), rel=0.1)


def test_noise_residual_moves_the_empty_cell_rms_only():
    base = NONE.replace(noise_mev=20.0)
    plain = run(threshold_mev=0.0)
    rms = {}
    for residual in (0.0, 0.2):
        out = run(base.replace(noise_residual=residual), threshold_mev=0.0)
        empty = (plain.images == 0) & (out.images > 0)  # noise alone: the positive half of N(0, sigma)
        rms[residual] = out.images[empty].pow(2).mean().sqrt().item()
        core = plain.images > 200  # the shower's cells: zero-mean noise leaves their energy
        assert out.images[core].mean() / plain.images[core].mean() == pytest.approx(1.0, abs=0.003)
    assert rms[0.0] == pytest.approx(20.0, rel=0.03)
    assert rms[0.2] / rms[0.0] == pytest.approx(1.2, rel=0.03)


def test_zero_suppression_uses_the_nominal_noise():
    out = run(NOMINAL.replace(noise_residual=0.5, pileup_occupancy=0.0, known_dead_fraction=0.0))
    nominal_sigma = Readout(NOMINAL, GEOMETRY).sigma
    nonzero = out.images != 0
    assert bool((out.images[nonzero] >= (2 * nominal_sigma).expand_as(out.images)[nonzero]).all())


def test_extra_dead_cells_always_read_zero_and_nothing_else_changes(plain):
    effects = NONE.replace(extra_dead_fraction=0.02)
    out = run(effects)
    dead = Readout(effects, GEOMETRY).dead
    assert abs(int(dead.sum()) - 0.02 * GEOMETRY.n_cells) < 1
    assert bool((out.images[:, dead] == 0).all())
    assert torch.equal(out.images[:, ~dead], plain.images[:, ~dead])


def test_intermittent_hot_cells_fire_in_about_the_stated_fraction_of_events(plain):
    effects = NONE.replace(hot_fraction=0.02, hot_rate=0.3, hot_mev=300.0)
    out = run(effects)
    hot = Readout(effects, GEOMETRY).hot_cells
    assert abs(hot.numel() - 0.02 * GEOMETRY.n_cells) < 1
    fired = out.images[:, hot] != plain.images[:, hot]
    assert fired.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert bool((fired.float().mean(0) < 0.4).all())  # no cell fires in every event
    excess = (out.images - plain.images)[:, hot][fired]
    assert excess.mean().item() == pytest.approx(300.0, rel=0.02)
    others = torch.ones(GEOMETRY.n_cells, dtype=torch.bool)
    others[hot] = False
    assert torch.equal(out.images[:, others], plain.images[:, others])


def test_crosstalk_residual_moves_layer_0_energy_to_its_column_neighbours(plain):
    base = NONE.replace(crosstalk=0.04)
    nominal = run(base, threshold_mev=0.0)
    out = run(base.replace(crosstalk_residual=0.02), threshold_mev=0.0)
    f0, f1 = features(nominal), features(out)
    start = GEOMETRY.layer_offsets[1]
    assert torch.equal(out.images[:, start:], nominal.images[:, start:])
    assert torch.allclose(f1.layer_energy[:, 0], f0.layer_energy[:, 0], rtol=1e-2)
    assert f1.width_x[:, 0].mean() > f0.width_x[:, 0].mean()
    peak0, peak1 = nominal.images[:, :start].amax(1), out.images[:, :start].amax(1)
    assert (peak1 / peak0).mean().item() < 0.99  # the hottest strip shares more with its neighbours
    rows0 = GEOMETRY.split_layers(nominal.images)[0].sum(-1)
    rows1 = GEOMETRY.split_layers(out.images)[0].sum(-1)
    assert torch.allclose(rows1, rows0, rtol=1e-2, atol=5.0)  # along the columns (eta) only


def test_pileup_residual_scales_the_pileup_deposits(plain):
    added = {}
    for residual in (0.0, 0.2):
        out = run(NONE.replace(pileup_occupancy=0.05, pileup_mev=20.0, pileup_residual=residual))
        added[residual] = (out.images - plain.images).sum(1).mean().item()
        fresh = (plain.images == 0) & (out.images > 0)
        assert out.images[fresh].mean().item() == pytest.approx(20.0, rel=0.1)
    assert added[0.0] == pytest.approx(0.05 * GEOMETRY.n_cells * 20.0, rel=0.1)
    assert added[0.2] / added[0.0] == pytest.approx(1.2, rel=0.05)


@pytest.mark.parametrize("knob, value", [("pion_width_scale", 1.15), ("pion_length_scale", 1.15),
                                         ("pion_em_fraction_scale", 0.85)])
def test_pion_hadronic_residual_moves_pions_only(knob, value):
    effects = NONE.replace(**{knob: value})
    for particle in ("e+", "gamma"):
        assert torch.equal(run(effects, n=300, particles=particle).images, run(n=300, particles=particle).images)
    # a deep stack (24 layers of lambda_I / 2, 2.1 m wide) sees the whole pion shower
    deep = Geometry("deep", tuple(Layer(f"l{i}", 21, 21, cell_size=(100.0, 100.0), depth_mm=PB_LAR.lambda_mm / 2)
                                  for i in range(24)))
    kwargs = dict(geometry=deep, particles="pi+", energy_range=(50, 50), seed=6, threshold_mev=0.0)
    f0 = features(simulate.showers(1500, **kwargs))
    f1 = features(simulate.showers(1500, effects=effects, **kwargs))

    def centroid(f):  # energy-weighted depth, lambda_I
        layers = f.layer_energy.double()
        return ((layers * (torch.arange(24) + 0.5) / 2).sum(1) / layers.sum(1).clamp_min(1e-9)).mean().item()

    width = (f1.width_x[:, 2:6].mean() / f0.width_x[:, 2:6].mean()).item()
    if knob == "pion_width_scale":
        assert width > 1.05
        assert centroid(f1) == pytest.approx(centroid(f0), abs=0.01)
    elif knob == "pion_length_scale":
        assert centroid(f1) > centroid(f0) + 0.05
        assert width == pytest.approx(1.0, abs=0.02)
    else:  # less EM energy: a lower response (h/e < 1), a less peaked shower
        assert f1.total.mean() < 0.98 * f0.total.mean()
        assert f1.max_fraction.mean() < 0.97 * f0.max_fraction.mean()


def test_randomized_knobs_are_drawn_per_event(plain):
    fixed_low = features(run(NONE.replace(lateral_scale=1.0))).width_x[:, 1].mean()
    fixed_high = features(run(NONE.replace(lateral_scale=1.4))).width_x[:, 1].mean()
    randomized = features(run(NONE.replace(lateral_scale=Randomized(1.0, 1.4)))).width_x[:, 1].mean()
    assert fixed_low < randomized < fixed_high
    out = run(NONE.replace(miscalibration=Randomized(0.04, 0.06)))
    both = (plain.images > 0) & (out.images > 0)
    ratio = torch.where(both, out.images / plain.images.clamp_min(1e-6), float("nan"))
    assert torch.nan_to_num(ratio - ratio.nanmean(0)).abs().amax(0).max() > 0.05  # a fresh map per event
    physics = simulate.ShowerPhysics(em_stochastic=Randomized(0.05, 0.3))
    assert not torch.equal(run(physics=physics).images, plain.images)
    assert NOMINAL.replace(crosstalk_residual=Randomized(-0.01, 0.01)).randomized
    with pytest.raises(ValueError, match="low <= high"):
        Randomized(2.0, 1.0)


def test_bad_effects_are_refused():
    with pytest.raises(ValueError, match="preset"):
        run("default")
    with pytest.raises(ValueError, match="noise_mev"):
        NONE.replace(noise_mev=())
    with pytest.raises(ValueError, match="hot_mev"):
        NONE.replace(hot_mev=(1.0, 2.0))
    with pytest.raises(ValueError, match="extra_dead_fraction"):
        DetectorEffects(extra_dead_fraction=1.5)
    with pytest.raises(ValueError, match="lateral_scale"):
        DetectorEffects(lateral_scale=Randomized(-1.0, 1.0))
    with pytest.raises(ValueError, match="known_dead_fraction"):
        DetectorEffects(known_dead_fraction=Randomized(0.0, 0.1))
    with pytest.raises(ValueError, match="detector_seed"):
        DetectorEffects(detector_seed=-1)
    with pytest.raises(ValueError, match="noise_scale"):
        simulate.Medium.sampling("Pb", [(simulate.medium.MATERIALS["Pb"], 1.0)], noise_scale=0.0)


# ---- fine voxels: CaloChallenge ds2 (6480 W/Si cells of 4-72 mm²) -------------------------------------

DS2 = s2r.geometry.get("calochallenge-ds2")
W_SI_NOISE = simulate.medium.W_SI.noise_scale


def run_ds2(effects=None, n=300, **kwargs):
    kwargs = dict(particles="e+", energy_range=(50, 50), seed=5) | kwargs
    return simulate.showers(n, geometry=DS2, effects=effects, **kwargs)


@pytest.fixture(scope="module")
def plain_ds2():
    return run_ds2()


def test_cell_areas_from_cell_sizes_and_r_alpha_bins():
    expected = torch.tensor([800.0] * 288 + [1600.0] * 144 + [3200.0] * 72, dtype=torch.float64)
    assert torch.equal(simulate.effects.cell_areas(GEOMETRY), expected)
    areas = simulate.effects.cell_areas(DS2)
    layer_0 = areas[: DS2.layer_offsets[1]].view(16, 9)  # (alpha, r): every alpha bin the same ring
    assert torch.equal(layer_0, layer_0[:1].expand(16, 9))
    assert layer_0[0, 0].item() == pytest.approx(torch.pi * 4.65**2 / 16)
    assert layer_0.sum().item() == pytest.approx(torch.pi * 41.85**2)


@pytest.mark.parametrize("geometry", ["calochallenge-ds2", "calochallenge-ds1-photons"])
def test_presets_keep_the_energy_scale_on_any_geometry(geometry):
    """The per-cell knobs do not swamp the shower: visible / incident of 50 GeV e+ within 5% of no digitisation."""
    kwargs = dict(geometry=geometry, particles="e+", energy_range=(50, 50), seed=6)
    plain = simulate.showers(200, **kwargs).images.sum(1).mean().item()
    for name in ("nominal", "realistic", "dev", "stress"):
        real = simulate.showers(200, effects=name, **kwargs).images.sum(1).mean().item()
        assert real / plain == pytest.approx(1.0, abs=0.05), name


def test_ds2_noise_is_the_silicon_channels_and_moves_sparsity(plain_ds2):
    noisy = run_ds2(NONE.replace(noise_mev=200.0), threshold_mev=0.0)
    plain = run_ds2(threshold_mev=0.0)
    empty = (plain.images == 0) & (noisy.images > 0)
    rms = noisy.images[empty].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(200.0 * W_SI_NOISE, rel=0.05)
    s0 = features(plain_ds2).sparsity.mean()
    s1 = features(run_ds2(NONE.replace(noise_mev=100.0))).sparsity.mean()
    tail = 0.5 * math.erfc(1.0 / (100.0 * W_SI_NOISE) / math.sqrt(2))  # P(N(0, 1.5 MeV) > 1 MeV)
    assert (s1 - s0).item() == pytest.approx(tail * (1 - s0.item()), rel=0.05)


def test_ds2_pileup_lands_by_area(plain_ds2):
    out = run_ds2(NONE.replace(pileup_occupancy=0.5, pileup_mev=20.0), threshold_mev=0.0)
    plain = run_ds2(threshold_mev=0.0)
    areas = simulate.effects.cell_areas(DS2)
    weight = (areas / simulate.effects.REFERENCE_CELL_MM2).clamp(max=1)
    added = (out.images - plain.images).sum(1)
    assert added.mean().item() == pytest.approx(0.5 * weight.sum().item() * 20.0, rel=0.05)
    fresh = ((plain.images == 0) & (out.images > 0)).double().mean(0).view(45, 16, 9)
    occupancy = fresh.mean((0, 1))
    expected = 1 - torch.exp(-0.5 * weight.view(45, 16, 9)[0, 0])  # P(at least one deposit)
    assert torch.allclose(occupancy[-3:], expected[-3:], rtol=0.1)
    assert occupancy[0] < 0.2 * occupancy[-1]


def test_ds2_hot_channels_add_silicon_scale_energy(plain_ds2):
    effects = NONE.replace(hot_fraction=0.01, hot_rate=1.0, hot_mev=300.0)
    out = run_ds2(effects)
    hot = Readout(effects, DS2).hot_cells
    excess = (out.images - plain_ds2.images)[:, hot]
    assert abs(hot.numel() - 0.01 * DS2.n_cells) < 1
    assert excess.mean().item() == pytest.approx(300.0 * W_SI_NOISE, rel=0.05)


def test_ds2_known_dead_map_is_shared_by_sim_and_every_real_instance():
    maps = {name: Readout(PRESETS[name], DS2) for name in ("nominal", "realistic", "dev", "stress")}
    known = maps["nominal"].known_dead
    assert abs(int(known.sum()) - 0.0005 * DS2.n_cells) < 1 and bool(known.any())
    for name, readout in maps.items():
        assert torch.equal(readout.known_dead, known) and bool(readout.dead[known].all()), name
    sim = run_ds2("nominal", n=100)
    assert bool((sim.images[:, known] == 0).all())
    assert not torch.equal(maps["realistic"].dead, maps["dev"].dead) or not torch.equal(
        maps["realistic"].cell_calibration, maps["dev"].cell_calibration)
