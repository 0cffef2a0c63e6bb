"""simulate.paired_showers: the same true showers seen by the sim detector and a "real" one."""

import pytest
import torch

from sim2real_fast import geometry, simulate
from sim2real_fast.simulate import PRESETS, PRIOR, Randomized

torch.set_num_threads(1)

CALOGAN = geometry.get("calogan")
NONE, NOMINAL = PRESETS["none"], PRESETS["nominal"]


def _fields(showers):
    return showers.images, showers.labels, showers.energy, showers.overflow


def _pearson(a, b):
    """(N,) per-event Pearson correlation of the cells of two (N, n_cells) image sets."""
    a, b = a.double() - a.double().mean(1, keepdim=True), b.double() - b.double().mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def _layer1_moments(images):
    """CaloGAN layer_1 (12 x 12, 40 mm cells): energy-weighted column centroid and rms radius, in cells."""
    layer = CALOGAN.split_layers(images.double())[1]
    total = layer.sum((1, 2))
    index = torch.arange(12, dtype=torch.float64)
    px, py = layer.sum(1) / total[:, None], layer.sum(2) / total[:, None]
    cx, cy = (px * index).sum(1), (py * index).sum(1)
    width = ((px * (index - cx[:, None]) ** 2).sum(1) + (py * (index - cy[:, None]) ** 2).sum(1)).sqrt()
    return cx, width


def test_sim_member_is_showers_and_primaries_are_shared():
    pairs = simulate.paired_showers(150, seed=4, batch_size=64, energy_distribution="log-uniform")
    alone = simulate.showers(150, effects="nominal", seed=4, batch_size=64, energy_distribution="log-uniform")
    for got, expected in zip(_fields(pairs.sim), _fields(alone)):
        assert torch.equal(got, expected)
    assert torch.equal(pairs.real.labels, pairs.sim.labels) and torch.equal(pairs.real.energy, pairs.sim.energy)
    assert pairs.real.geometry == pairs.sim.geometry == CALOGAN
    assert pairs.real.images.shape == (150, CALOGAN.n_cells) and pairs.real.images.dtype == torch.float32


@pytest.mark.parametrize("effects", ["realistic", PRIOR, None], ids=["realistic", "prior", "none"])
def test_equal_effects_give_identical_members(effects):
    pairs = simulate.paired_showers(120, seed=1, batch_size=50, sim_effects=effects, real_effects=effects)
    for sim, real in zip(_fields(pairs.sim), _fields(pairs.real)):
        assert torch.equal(sim, real)


def test_a_randomized_knob_that_changes_nothing_keeps_the_pair_identical():
    # the real member draws 2 x n uniforms more than the sim member before the shower's own draws
    real = NOMINAL.replace(lateral_scale=Randomized(1.0, 1.0), pion_width_scale=Randomized(1.0, 1.0))
    pairs = simulate.paired_showers(100, seed=2, real_effects=real)
    assert torch.equal(pairs.sim.images, pairs.real.images)


def test_realistic_pairs_are_correlated_cell_by_cell_but_differ():
    pairs = simulate.paired_showers(300, seed=5, batch_size=128)
    sim, real = pairs.sim.images, pairs.real.images
    assert not torch.equal(sim, real)
    assert (sim != real).double().mean() > 0.05  # noise, pile-up, calibration redrawn
    paired = _pearson(sim, real)
    # the same events paired with another event of the same particle and nearest energy
    order = torch.argsort(pairs.sim.labels * 1000 + pairs.sim.energy)
    partner = torch.empty_like(order)
    partner[order] = order.roll(1)
    same_kind = pairs.sim.labels[partner] == pairs.sim.labels
    unpaired = _pearson(sim, real[partner])[same_kind]
    assert paired.median() > 0.97
    assert unpaired.median() < 0.6
    # the realistic residuals move the response by a few per cent, not more
    ratio = (real.sum(1) / sim.sum(1)).median()
    assert 0.95 < ratio < 1.05 and abs(ratio - 1) > 0.005


def test_layer_miscalibration_alone_scales_the_same_true_cells():
    # no shower-level residual: the true cells are the same, the real readout multiplies each layer
    pairs = simulate.paired_showers(200, seed=3, sim_effects=None, real_effects=NONE.replace(layer_miscalibration=0.02))
    sim, real = pairs.sim.images, pairs.real.images
    both = (sim > 0) & (real > 0)
    assert both.sum() > 0.9 * (sim > 0).sum()
    ratio = torch.where(both, real / sim.where(both, 1.0), torch.nan)
    factors = []
    for layer in CALOGAN.split_layers(ratio):
        values = layer[~layer.isnan()]
        assert torch.allclose(values, values[0].expand_as(values), rtol=1e-5)
        factors.append(float(values[0]))
    assert all(f == pytest.approx(0.98, rel=1e-5) or f == pytest.approx(1.02, rel=1e-5) for f in factors)


def test_lateral_scale_widens_the_real_member_around_the_same_axis():
    pairs = simulate.paired_showers(200, seed=2, sim_effects=None, real_effects=NONE.replace(lateral_scale=1.3),
                                    particles="e+")
    centre_sim, width_sim = _layer1_moments(pairs.sim.images)
    centre_real, width_real = _layer1_moments(pairs.real.images)
    assert 1.1 < (width_real / width_sim).median() < 1.3
    assert torch.corrcoef(torch.stack([centre_sim, centre_real]))[0, 1] > 0.99


def test_start_depth_shift_moves_energy_deeper_with_the_entry_point_shared():
    # the shift changes the sampled profiles, so the generator is resynchronised before the axis is drawn
    pairs = simulate.paired_showers(200, seed=2, sim_effects=None, real_effects=NONE.replace(longitudinal_shift_x0=2.0),
                                    particles="e+")
    front = [CALOGAN.split_layers(x)[0].sum((1, 2)) / x.sum(1) for x in (pairs.sim.images, pairs.real.images)]
    assert (front[1] < front[0]).double().mean() > 0.95
    centre_sim, _ = _layer1_moments(pairs.sim.images)
    centre_real, _ = _layer1_moments(pairs.real.images)
    assert torch.corrcoef(torch.stack([centre_sim, centre_real]))[0, 1] > 0.99


def test_empty_and_bad_options():
    pairs = simulate.paired_showers(0)
    assert pairs.sim.images.shape == pairs.real.images.shape == (0, CALOGAN.n_cells)
    with pytest.raises(ValueError, match="effects"):
        simulate.paired_showers(10, real_effects="nope")
    with pytest.raises(ValueError, match="particles"):
        simulate.paired_showers(10, particles="muon")
