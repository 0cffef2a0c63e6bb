"""The "real" domain: each DetectorEffects knob moves its statistic and (about) nothing else."""

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
