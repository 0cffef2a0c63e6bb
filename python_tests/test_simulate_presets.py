"""Presets, the prior and image-level randomisation: the sim domain's digitisation, realistic residuals
inside their published ranges, stress at 2-3 x, instances, and randomize_images on any geometry."""

import dataclasses

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import simulate
from sim2real_fast.simulate import PRESETS, PRIOR, DetectorEffects, Randomized
from sim2real_fast.simulate.effects import RESIDUALS, residual_size
from sim2real_fast.simulate.readout import Readout

NOMINAL = PRESETS["nominal"]
CALOGAN = s2r.geometry.get("calogan")

#: The published ranges of the issue (README "Simulator"): |knob - neutral| in [low, high].
PUBLISHED = {
    "lateral_scale": (0.02, 0.05),
    "longitudinal_shift_x0": (0.1, 0.3),
    "pion_em_fraction_scale": (0.05, 0.15),
    "pion_width_scale": (0.05, 0.15),
    "pion_length_scale": (0.05, 0.15),
    "miscalibration": (0.005, 0.01),
    "layer_miscalibration": (0.01, 0.02),
    "nonlinearity": (0.005, 0.016),  # ~1% at low energy, <= 0.1% at >= 15 GeV: |n| / 16 <= 0.001
    "noise_residual": (0.1, 0.2),
    "extra_dead_fraction": (0.0, 0.001),
    "hot_fraction": (0.0, 0.0005),
    "crosstalk_residual": (0.01, 0.02),
    "pileup_residual": (0.03, 0.07),
}


def test_presets_are_the_documented_names():
    assert set(PRESETS) == {"none", "nominal", "realistic", "dev", "stress"}
    assert DetectorEffects() == NOMINAL
    assert set(PUBLISHED) == set(RESIDUALS)


def test_nominal_is_the_sim_digitisation_without_residuals():
    assert all(s > 0 for s in NOMINAL.noise_mev) and NOMINAL.zero_suppression_sigma > 0
    assert NOMINAL.pileup_occupancy > 0 and NOMINAL.known_dead_fraction == pytest.approx(0.0005)
    assert all(getattr(NOMINAL, name) == neutral for name, neutral in RESIDUALS.items())
    none = PRESETS["none"]
    assert none.noise_mev == 0 and none.pileup_occupancy == 0 and none.known_dead_fraction == 0 and none.crosstalk == 0


def test_the_sim_domain_has_noise_pileup_and_zero_suppression():
    kwargs = dict(particles="e+", energy_range=(20, 20), seed=3)
    truth = simulate.showers(500, **kwargs)
    sim = simulate.showers(500, effects="nominal", **kwargs)
    quiet = simulate.showers(500, effects=NOMINAL.replace(pileup_occupancy=0.0), **kwargs)
    sigma = Readout(NOMINAL, CALOGAN).sigma
    nonzero = sim.images != 0
    assert bool((sim.images[nonzero] >= (2 * sigma).expand_as(sim.images)[nonzero]).all())  # zero suppression
    fresh = (truth.images == 0) & nonzero  # noise (and pile-up) above the threshold in empty cells
    assert 0.005 < fresh.float().mean().item() < 0.05
    added = (sim.images - quiet.images).sum(1).mean().item()
    assert 0.5 * 0.02 * 504 * 30 < added < 1.5 * 0.02 * 504 * 30  # pile-up: ~300 MeV per event


def test_realistic_residuals_lie_in_their_published_ranges():
    for preset in ("realistic", "dev"):
        for name, (low, high) in PUBLISHED.items():
            assert low <= residual_size(PRESETS[preset], name) <= high + 1e-12, (preset, name)
    assert PRESETS["dev"] == PRESETS["realistic"].replace(detector_seed=simulate.DEV_SEEDS)


def test_dev_instances_are_never_test_instances():
    dev = {simulate.real_effects("dev", k).detector_seed for k in range(50)}
    test = {simulate.real_effects(p, k).detector_seed for p in ("realistic", "stress") for k in range(50)}
    assert not dev & test and min(dev) == simulate.DEV_SEEDS
    assert simulate.real_effects("stress", 3) == PRESETS["stress"].replace(detector_seed=3)


def test_stress_is_two_to_three_times_realistic_per_family_same_sign():
    realistic, stress = PRESETS["realistic"], PRESETS["stress"]
    for name, neutral in RESIDUALS.items():
        size = residual_size(realistic, name)
        assert size > 0, name
        assert 2.0 <= residual_size(stress, name) / size <= 3.0, name
        assert (getattr(stress, name) - neutral) * (getattr(realistic, name) - neutral) > 0, name
    others = [f.name for f in dataclasses.fields(DetectorEffects) if f.name not in RESIDUALS]
    assert all(getattr(stress, name) == getattr(NOMINAL, name) for name in others if name != "detector_seed")


def test_no_preset_has_cells_firing_every_event():
    for name, effects in PRESETS.items():
        assert effects.hot_fraction == 0 or effects.hot_rate < 0.5, name
    readout = Readout(PRESETS["stress"], s2r.geometry.get("calochallenge-ds3"))
    assert readout.hot_cells.numel() > 0  # 0.1% of 40,500 cells, each firing in 10% of the events


def test_detector_seed_changes_the_maps_only():
    a, b = simulate.real_effects("realistic", 0), simulate.real_effects("realistic", 7)
    assert a == PRESETS["realistic"] and b == a.replace(detector_seed=7)
    geometry = s2r.geometry.get("calochallenge-ds2")
    ra, rb = Readout(a, geometry), Readout(b, geometry)
    assert torch.equal(ra.known_dead, rb.known_dead) and torch.equal(ra.sigma, rb.sigma)
    assert not torch.equal(ra.cell_calibration, rb.cell_calibration)
    assert not torch.equal(ra.hot_cells, rb.hot_cells)
    with pytest.raises(ValueError, match="preset"):
        simulate.real_effects("default", 0)
    with pytest.raises(ValueError, match="detector_seed"):
        simulate.real_effects("realistic", -1)


def test_prior_randomises_every_residual_over_its_published_range():
    assert simulate.prior_effects() is PRIOR
    for name, neutral in RESIDUALS.items():
        knob = getattr(PRIOR, name)
        assert isinstance(knob, Randomized), name
        low, high = PUBLISHED[name]
        assert max(abs(knob.low - neutral), abs(knob.high - neutral)) <= high + 0.005 + 1e-12, name
        assert knob.low <= getattr(PRESETS["realistic"], name) <= knob.high, name
    for name in ("pion_em_fraction_scale", "pion_width_scale", "pion_length_scale", "nonlinearity",
                 "noise_residual", "crosstalk_residual", "pileup_residual"):  # sign unknown: symmetric
        knob, neutral = getattr(PRIOR, name), RESIDUALS[name]
        assert knob.high - neutral == pytest.approx(neutral - knob.low), name
    others = [f.name for f in dataclasses.fields(DetectorEffects) if f.name not in RESIDUALS]
    assert all(getattr(PRIOR, name) == getattr(NOMINAL, name) for name in others)


@pytest.mark.parametrize("geometry", ["calogan", "calochallenge-ds1-photons", "calochallenge-ds1-pions",
                                      "calochallenge-ds2", "calochallenge-ds3"])
def test_every_geometry_simulates_with_every_preset_and_the_prior(geometry):
    n_cells = s2r.geometry.get(geometry).n_cells
    for effects in [*PRESETS, PRIOR]:
        out = simulate.showers(12, geometry=geometry, seed=1, effects=effects)
        assert out.images.shape == (12, n_cells) and bool((out.images >= 0).all())
        assert bool((out.images.sum(1) > 0).all())


# ---- randomize_images -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nominal_images():
    return simulate.showers(600, seed=4, effects="nominal").images


def test_randomize_images_with_no_residual_changes_nothing(nominal_images):
    assert torch.equal(simulate.randomize_images(nominal_images, "calogan", effects=NOMINAL), nominal_images)


def test_randomize_images_applies_the_prior_per_event(nominal_images):
    a = simulate.randomize_images(nominal_images, "calogan", seed=1)
    assert torch.equal(a, simulate.randomize_images(nominal_images, CALOGAN, seed=1))
    assert not torch.equal(a, simulate.randomize_images(nominal_images, "calogan", seed=2))
    assert not torch.equal(a, nominal_images) and a.dtype == torch.float32
    sigma = Readout(NOMINAL, CALOGAN).sigma
    nonzero = a != 0
    assert bool((a >= 0).all()) and bool((a[nonzero] >= (2 * sigma).expand_as(a)[nonzero]).all())
    known = Readout(NOMINAL, CALOGAN).known_dead
    assert bool((a[:, known] == 0).all())
    assert a.sum() / nominal_images.sum() == pytest.approx(1.0, abs=0.03)


def test_randomize_images_layer_scale_moves_each_layer_by_its_factor(nominal_images):
    effects = NOMINAL.replace(layer_miscalibration=0.02, detector_seed=3)
    out = simulate.randomize_images(nominal_images, "calogan", effects=effects)
    signs = Readout(effects, CALOGAN).layer_signs
    for layer, (a, b) in enumerate(zip(CALOGAN.layer_offsets, CALOGAN.layer_offsets[1:])):
        cells = nominal_images[:, a:b] > 200  # well above the zero suppression
        ratio = out[:, a:b][cells] / nominal_images[:, a:b][cells]
        assert torch.allclose(ratio, torch.tensor(1 + 0.02 * signs[layer].item()), rtol=1e-5)


@pytest.mark.parametrize("geometry", ["calochallenge-ds2", "hcal"])
def test_randomize_images_works_on_any_geometry(geometry):
    geometry = s2r.geometry.get(geometry)
    images = torch.rand(4, geometry.n_cells) * 100 * (torch.rand(4, geometry.n_cells) < 0.2)
    out = simulate.randomize_images(images, geometry, effects=PRESETS["stress"], seed=3)
    assert out.shape == images.shape and bool((out >= 0).all())
    with pytest.raises(ValueError, match="images"):
        simulate.randomize_images(images[:, :10], geometry)
    assert set(simulate.IMAGE_LEVEL_FAMILIES) | set(simulate.SHOWER_LEVEL_FAMILIES) == set(RESIDUALS)


# CaloGAN's output for seed 0 (400 showers, batch_size 256) with this code: float64 sum and sum of
# squares of the images, and the number of non-zero cells. Pins the simulator's arithmetic (showers,
# digitisation, instance maps); a change here must be a deliberate change of the model.
CALOGAN_SEED_0 = {
    "none": (15243652.849660039, 305464515913.6079, 35300),
    "nominal": (15213238.877397537, 304970311351.0691, 19661),
    "realistic": (15172596.404090881, 315807865114.2478, 23627),
    "dev": (14771164.170179367, 295602699711.4, 23529),
    "stress": (16253926.56329918, 371148727315.137, 29508),
    "prior": (15821742.8352108, 326017364054.7882, 20510),
}


@pytest.mark.parametrize("name", list(CALOGAN_SEED_0))
def test_calogan_output_is_pinned(name):
    effects = PRIOR if name == "prior" else PRESETS[name]
    x = simulate.showers(400, effects=effects, seed=0, batch_size=256).images.double()
    total, squares, nonzero = CALOGAN_SEED_0[name]
    assert x.sum().item() == pytest.approx(total, rel=1e-6)
    assert x.pow(2).sum().item() == pytest.approx(squares, rel=1e-6)
    assert int((x != 0).sum()) == nonzero
