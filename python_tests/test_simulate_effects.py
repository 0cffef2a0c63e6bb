"""The "real" domain: each DetectorEffects knob moves its statistic and (about) nothing else."""

import math

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import simulate
from sim2real_fast.simulate import PRESETS, DetectorEffects, Randomized

N = 1500
NONE = PRESETS["none"]
GEOMETRY = s2r.geometry.get("calogan")


def run(effects=None, n=N, particles="e+", **kwargs):
    return simulate.showers(n, particles=particles, energy_range=(20, 60), seed=11, effects=effects, **kwargs)


@pytest.fixture(scope="module")
def plain():
    return run()


def features(out):
    return s2r.shower_features(out.images, out.geometry)


def test_none_preset_is_the_plain_simulation(plain):
    assert torch.equal(run(NONE).images, plain.images)
    assert torch.equal(run("none").images, plain.images)


def test_lateral_scale_widens_showers_not_their_energy(plain):
    wide = run(NONE.replace(lateral_scale=1.3))
    f0, f1 = features(plain), features(wide)
    ratio = f1.width_x.mean(0) / f0.width_x.mean(0)
    assert (ratio[:2] > 1.1).all()  # layer_0 (5 mm strips) and layer_1
    assert f1.total.mean() / f0.total.mean() == pytest.approx(1.0, abs=0.01)
    # the layer energies stay (wider showers leak a little more out of the small layer_2)
    share0 = f0.layer_energy.mean(0) / f0.total.mean()
    share1 = f1.layer_energy.mean(0) / f1.total.mean()
    assert torch.allclose(share1, share0, atol=0.003)


def test_longitudinal_shift_moves_energy_deeper_keeps_the_total(plain):
    deep = run(NONE.replace(longitudinal_shift_x0=1.0))
    f0, f1 = features(plain), features(deep)
    fraction0 = f0.layer_energy[:, 0] / f0.total
    fraction1 = f1.layer_energy[:, 0] / f1.total
    assert fraction1.mean() < 0.8 * fraction0.mean()
    assert f1.total.mean() / f0.total.mean() == pytest.approx(1.0, abs=0.01)


def test_miscalibration_is_a_fixed_per_cell_factor(plain):
    out = run(NONE.replace(miscalibration=0.05))
    both = (plain.images > 0) & (out.images > 0)
    ratio = torch.where(both, out.images / plain.images.clamp_min(1e-6), float("nan"))
    per_cell = ratio.nanmean(0)
    seen = both.sum(0) >= 5
    # the same factor in every event (fixed detector), spread 5% across cells
    spread_in_cell = torch.nan_to_num(ratio - per_cell).abs().amax(0)
    assert spread_in_cell[seen].max() < 1e-4
    assert per_cell[seen].std().item() == pytest.approx(0.05, rel=0.25)
    assert per_cell[seen].mean().item() == pytest.approx(1.0, abs=0.015)
    # totals move only by the few central cells' factors; shapes stay
    assert features(out).total.mean() / features(plain).total.mean() == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(features(out).width_x.mean(0), features(plain).width_x.mean(0), rtol=0.02)
    # another detector, another map; the same detector_seed, the same map
    other = run(NONE.replace(miscalibration=0.05, detector_seed=1))
    assert not torch.equal(other.images, out.images)
    assert torch.equal(run(NONE.replace(miscalibration=0.05)).images, out.images)


def test_noise_and_zero_suppression_move_sparsity(plain):
    noisy = run(NONE.replace(noise_mev=(20.0, 20.0, 20.0), zero_suppression_sigma=2.0))
    s0, s1 = features(plain).sparsity.mean(0), features(noisy).sparsity.mean(0)
    # about 2.3% of the empty cells pass a 2-sigma cut
    assert (s1 - s0 > 0.005).all()
    assert (s1 - s0)[0].item() == pytest.approx(0.023, abs=0.006)  # layer_0: mostly empty cells
    # a higher cut removes noise cells (and soft shower cells)
    strict = run(NONE.replace(noise_mev=(20.0, 20.0, 20.0), zero_suppression_sigma=5.0))
    assert (features(strict).sparsity.mean(0) < s0).all()
    assert features(noisy).total.mean() / features(plain).total.mean() == pytest.approx(1.0, abs=0.03)


def test_noise_tuple_spreads_over_any_number_of_layers():
    """(10, 20, 30) MeV on the 5 layers of ds1 photons: front to back in 3 groups, 10, 10, 20, 20, 30."""
    geometry = s2r.geometry.get("calochallenge-ds1-photons")
    kwargs = dict(geometry=geometry, particles="e+", energy_range=(10, 10), seed=2, threshold_mev=0.0)
    plain = simulate.showers(400, **kwargs)
    noisy = simulate.showers(400, effects=NONE.replace(noise_mev=(10.0, 20.0, 30.0)), **kwargs)
    empty = (plain.images == 0) & (noisy.images > 0)  # noise alone: the positive half of N(0, sigma)
    rms = [noisy.images[:, a:b][empty[:, a:b]].pow(2).mean().sqrt().item()
           for a, b in zip(geometry.layer_offsets, geometry.layer_offsets[1:])]
    assert rms == pytest.approx([10.0, 10.0, 20.0, 20.0, 30.0], rel=0.1)


def test_dead_cells_read_zero_and_nothing_else_changes(plain):
    out = run(NONE.replace(dead_fraction=0.02))
    dead = (out.images == 0).all(0) & (plain.images != 0).any(0)
    assert 5 <= int(dead.sum()) <= round(0.02 * GEOMETRY.n_cells)
    alive = ~dead & (out.images != 0).any(0)
    assert torch.equal(out.images[:, alive], plain.images[:, alive])


def test_hot_cells_add_their_energy_in_their_cells_only(plain):
    out = run(NONE.replace(hot_fraction=0.01, hot_mev=300.0))
    changed = (out.images != plain.images).any(0)
    assert int(changed.sum()) == round(0.01 * GEOMETRY.n_cells)
    excess = (out.images - plain.images)[:, changed]
    assert excess.mean().item() == pytest.approx(300.0, rel=0.02)


def test_crosstalk_moves_layer_0_energy_to_its_column_neighbours(plain):
    out = run(NONE.replace(crosstalk=0.05))
    f0, f1 = features(plain), features(out)
    # layers 1 and 2 untouched, layer_0 energy conserved (up to the readout threshold)
    start = GEOMETRY.layer_offsets[1]
    assert torch.equal(out.images[:, start:], plain.images[:, start:])
    assert torch.allclose(f1.layer_energy[:, 0], f0.layer_energy[:, 0], rtol=1e-2)
    assert f1.width_x[:, 0].mean() > f0.width_x[:, 0].mean()
    layer_0 = slice(0, start)
    peak0, peak1 = plain.images[:, layer_0].amax(1), out.images[:, layer_0].amax(1)
    assert (peak1 / peak0).mean().item() < 0.95  # the hottest strip shares with its neighbours
    # along the columns (eta) only: the row profile of layer_0 does not change
    rows0 = GEOMETRY.split_layers(plain.images)[0].sum(-1)
    rows1 = GEOMETRY.split_layers(out.images)[0].sum(-1)
    assert torch.allclose(rows1, rows0, rtol=1e-2, atol=5.0)
    assert (f1.sparsity[:, 0] > f0.sparsity[:, 0]).float().mean() > 0.5


def test_pileup_adds_diffuse_low_energy_deposits(plain):
    out = run(NONE.replace(pileup_occupancy=0.05, pileup_mev=20.0))
    added = (out.images - plain.images).sum(1)
    expected = 0.05 * GEOMETRY.n_cells * 20.0
    assert added.mean().item() == pytest.approx(expected, rel=0.1)
    # diffuse: in cells the shower did not touch, with a soft spectrum
    fresh = (plain.images == 0) & (out.images > 0)
    assert fresh.float().mean().item() == pytest.approx(0.05, rel=0.2)
    assert out.images[fresh].mean().item() == pytest.approx(20.0, rel=0.1)


def test_presets_grow_the_gap(plain):
    f0 = features(plain)
    gaps = []
    for name in ("mild", "default", "severe"):
        f = features(run(name))
        gaps.append((f.width_x[:, 1].mean() / f0.width_x[:, 1].mean() - 1).item())
    assert 0 < gaps[0] < gaps[1] < gaps[2]
    assert DetectorEffects() == PRESETS["default"]


def test_randomized_knobs_are_drawn_per_event(plain):
    fixed_low = features(run(NONE.replace(lateral_scale=1.0))).width_x[:, 1].mean()
    fixed_high = features(run(NONE.replace(lateral_scale=1.4))).width_x[:, 1].mean()
    randomized = features(run(NONE.replace(lateral_scale=Randomized(1.0, 1.4)))).width_x[:, 1].mean()
    assert fixed_low < randomized < fixed_high
    # a randomised miscalibration gives every event its own map: per-cell ratios vary between events
    out = run(NONE.replace(miscalibration=Randomized(0.04, 0.06)))
    both = (plain.images > 0) & (out.images > 0)
    ratio = torch.where(both, out.images / plain.images.clamp_min(1e-6), float("nan"))
    assert torch.nan_to_num(ratio - ratio.nanmean(0)).abs().amax(0).max() > 0.05
    # randomised shower physics too
    physics = simulate.ShowerPhysics(em_stochastic=Randomized(0.05, 0.3))
    assert not torch.equal(run(physics=physics).images, plain.images)
    assert PRESETS["default"].replace(crosstalk=Randomized(0.0, 0.1)).randomized
    with pytest.raises(ValueError, match="low <= high"):
        Randomized(2.0, 1.0)


def test_bad_effects_are_refused():
    with pytest.raises(ValueError, match="preset"):
        run("nonsense")
    with pytest.raises(ValueError, match="noise_mev"):
        NONE.replace(noise_mev=())
    with pytest.raises(ValueError, match="hot_mev"):
        NONE.replace(hot_mev=(1.0, 2.0))
    with pytest.raises(ValueError, match="dead_fraction"):
        DetectorEffects(dead_fraction=1.5)
    with pytest.raises(ValueError, match="lateral_scale"):
        DetectorEffects(lateral_scale=Randomized(-1.0, 1.0))
    with pytest.raises(ValueError, match="noise_scale"):
        simulate.Medium.sampling("Pb", [(simulate.medium.MATERIALS["Pb"], 1.0)], noise_scale=0.0)


# CaloGAN's output for seed 0 (400 showers, batch_size 256) as calibrated in the README: float64 sum and
# sum of squares of the images, and the number of non-zero cells. The per-cell rules for other
# geometries (noise_scale, pile-up by area) must leave these unchanged.
CALOGAN_SEED_0 = {
    "none": (14961568.144903302, 149423058853.55225, 12031),
    "mild": (14834520.52204132, 138933344358.978, 12465),
    "default": (15885573.272735596, 144175299483.90546, 19164),
    "severe": (16988413.899326324, 156452848018.43945, 19543),
    "randomized": (15689128.609024048, 138671479655.92682, 19609),
}


@pytest.mark.parametrize("name", list(CALOGAN_SEED_0))
def test_calogan_output_is_what_the_presets_were_calibrated_on(name):
    effects = PRESETS.get(name) or PRESETS["default"].replace(
        noise_mev=(Randomized(10.0, 30.0), 40.0, 20.0), pileup_occupancy=Randomized(0.0, 0.1),
        hot_fraction=Randomized(0.0, 0.02), dead_fraction=Randomized(0.0, 0.02), miscalibration=Randomized(0.0, 0.03),
    )
    x = simulate.showers(400, effects=effects, seed=0, batch_size=256).images.double()
    total, squares, nonzero = CALOGAN_SEED_0[name]
    assert x.sum().item() == pytest.approx(total, rel=1e-7)
    assert x.pow(2).sum().item() == pytest.approx(squares, rel=1e-7)
    assert int((x != 0).sum()) == nonzero


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
    assert torch.equal(simulate.effects.cell_areas(GEOMETRY), torch.tensor([800.0] * 288 + [1600.0] * 144 + [3200.0] * 72, dtype=torch.float64))
    areas = simulate.effects.cell_areas(DS2)
    layer_0 = areas[: DS2.layer_offsets[1]].view(16, 9)  # (alpha, r): every alpha bin the same ring
    assert torch.equal(layer_0, layer_0[:1].expand(16, 9))
    assert layer_0[0, 0].item() == pytest.approx(torch.pi * 4.65**2 / 16)
    assert layer_0.sum().item() == pytest.approx(torch.pi * 41.85**2)


@pytest.mark.parametrize("geometry", ["calochallenge-ds2", "calochallenge-ds1-photons"])
def test_presets_keep_the_energy_scale_on_any_geometry(geometry):
    """The per-cell knobs do not swamp the shower: visible / incident of 50 GeV e+ within 10% of the plain simulation's."""
    kwargs = dict(geometry=geometry, particles="e+", energy_range=(50, 50), seed=6)
    plain = simulate.showers(200, **kwargs).images.sum(1).mean().item()
    for name in ("mild", "default", "severe"):
        real = simulate.showers(200, effects=name, **kwargs).images.sum(1).mean().item()
        assert real / plain == pytest.approx(1.0, abs=0.1), name


def test_ds2_noise_is_the_silicon_channels_and_moves_sparsity(plain_ds2):
    noisy = run_ds2(NONE.replace(noise_mev=200.0, zero_suppression_sigma=0.0), threshold_mev=0.0)
    plain = run_ds2(threshold_mev=0.0)
    empty = (plain.images == 0) & (noisy.images > 0)  # noise alone: the positive half of N(0, sigma)
    rms = noisy.images[empty].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(200.0 * W_SI_NOISE, rel=0.05)
    # at the default threshold (1 MeV) the noise passes in a few % of the empty cells
    s0 = features(plain_ds2).sparsity.mean()
    s1 = features(run_ds2(NONE.replace(noise_mev=100.0, zero_suppression_sigma=0.0))).sparsity.mean()
    tail = 0.5 * math.erfc(1.0 / (100.0 * W_SI_NOISE) / math.sqrt(2))  # P(N(0, 1.5 MeV) > 1 MeV)
    assert (s1 - s0).item() == pytest.approx(tail * (1 - s0.item()), rel=0.05)


def test_ds2_pileup_lands_by_area(plain_ds2):
    out = run_ds2(NONE.replace(pileup_occupancy=0.5, pileup_mev=20.0), threshold_mev=0.0)
    plain = run_ds2(threshold_mev=0.0)
    areas = simulate.effects.cell_areas(DS2)
    weight = (areas / simulate.effects.REFERENCE_CELL_MM2).clamp(max=1)
    added = (out.images - plain.images).sum(1)
    assert added.mean().item() == pytest.approx(0.5 * weight.sum().item() * 20.0, rel=0.05)
    # fresh deposits per cell follow the area: the outer r bin (area 72 mm²) vs the innermost (4.2 mm²)
    fresh = ((plain.images == 0) & (out.images > 0)).double().mean(0).view(45, 16, 9)
    occupancy = fresh.mean((0, 1))
    expected = 1 - torch.exp(-0.5 * weight.view(45, 16, 9)[0, 0])  # P(at least one deposit)
    assert torch.allclose(occupancy[-3:], expected[-3:], rtol=0.1)
    assert occupancy[0] < 0.2 * occupancy[-1]


def test_ds2_hot_channels_add_silicon_scale_energy(plain_ds2):
    out = run_ds2(NONE.replace(hot_fraction=0.01, hot_mev=300.0))
    changed = (out.images != plain_ds2.images).any(0)
    assert int(changed.sum()) == round(0.01 * DS2.n_cells)
    excess = (out.images - plain_ds2.images)[:, changed]
    assert excess.mean().item() == pytest.approx(300.0 * W_SI_NOISE, rel=0.05)


def test_ds2_shape_dead_calibration_and_crosstalk_knobs(plain_ds2):
    f0 = features(plain_ds2)
    wide = features(run_ds2(NONE.replace(lateral_scale=1.3)))
    ratio = (wide.width_x.mean(0) / f0.width_x.mean(0))[3:16]  # around the maximum (2.4-13 X0)
    assert ratio.min() > 1.05 and ratio.mean() > 1.1  # less than 1.3: the 42 mm voxel grid cuts the tails
    deep = features(run_ds2(NONE.replace(longitudinal_shift_x0=2.0)))
    assert deep.layer_energy[:, :5].sum() < 0.6 * f0.layer_energy[:, :5].sum()
    dead = run_ds2(NONE.replace(dead_fraction=0.02))
    silent = (dead.images == 0).all(0) & (plain_ds2.images != 0).any(0)
    assert 0 < int(silent.sum()) <= round(0.02 * DS2.n_cells)
    assert torch.equal(dead.images[:, ~silent], plain_ds2.images[:, ~silent])
    calibrated = run_ds2(NONE.replace(miscalibration=0.05))
    both = (plain_ds2.images > 0) & (calibrated.images > 0)
    ratio = torch.where(both, calibrated.images / plain_ds2.images.clamp_min(1e-6), float("nan")).nanmean(0)
    assert ratio[both.sum(0) >= 5].std().item() == pytest.approx(0.05, rel=0.2)
    # cross-talk along the r bins (the columns of a cylindrical layer): the layer's energy stays, its width grows
    plain = features(run_ds2(threshold_mev=0.0))
    talk = features(run_ds2(NONE.replace(crosstalk=0.1, crosstalk_layer="layer_10"), threshold_mev=0.0))
    assert torch.allclose(talk.layer_energy[:, 10], plain.layer_energy[:, 10], rtol=1e-4)
    assert talk.width_x[:, 10].mean() > 1.05 * plain.width_x[:, 10].mean()
    others = [i for i in range(DS2.n_layers) if i != 10]
    assert torch.equal(talk.layer_energy[:, others], plain.layer_energy[:, others])
