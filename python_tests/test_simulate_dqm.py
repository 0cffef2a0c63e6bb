"""simulate.dqm_maps: HCAL occupancy maps with the real detector's layout, faults, two domains and runs."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401  (an autouse fixture)

from sim2real_fast import simulate
from sim2real_fast.simulate import DOMAIN_CONDITIONS, FAULTS, RUNS, RunConditions

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hcal" / "hcal_dqm_run306138_10ls.hdf5"
SHAPE = (7, 72, 84)


def test_layout_and_labels():
    out = simulate.dqm_maps(40, seed=0)
    assert out.maps.shape == (40, 7 * 72 * 84) and out.maps.dtype == torch.float32
    assert out.labels.shape == (40,) and out.labels.dtype == torch.int64
    assert out.fault_mask.shape == out.maps.shape
    assert out.geometry.name == "hcal"
    assert ((out.maps >= 0) & (out.maps <= out.events[:, None])).all()
    assert (out.maps == out.maps.round()).all()
    # the good maps touch nothing; the faulty ones a region
    good = out.labels == 0
    assert 0 < good.sum() < 40
    assert not out.fault_mask[good].any() and out.fault_mask[~good].any(1).all()


def test_empty_regions_as_the_2017_detector():
    mask = simulate.active_mask()
    zero = 1 - mask.float().mean((1, 2))
    expected = torch.tensor([0.276, 0.631, 0.805, 0.497, 0.995, 0.996, 0.999])
    assert torch.allclose(zero, expected, atol=0.004)
    columns = mask[4:].any(1).any(0).nonzero().flatten()
    assert columns.min() >= 59 and columns.max() <= 69
    maps = simulate.dqm_maps(5, faults=None).maps.view(5, *SHAPE)
    assert ((maps > 0).any(0) == mask).all()


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/hcal (not in a user's clone)")
def test_active_cells_match_run_306138():
    h5py = pytest.importorskip("h5py")
    with h5py.File(DATA) as f:
        real = torch.stack([torch.from_numpy(f[f"DigiTask_Occupancy_depth_depth{d}"][:]) for d in range(1, 8)], 1)
    seen = (real > 0).any(0)
    mask = simulate.active_mask()
    # every cell the run read is in the mask; the mask's extra cells are the run's few dead channels
    assert not (seen & ~mask).any()
    assert int((mask & ~seen).sum()) <= 40
    zero_real = (real == 0).float().mean((0, 2, 3))
    sim = simulate.dqm_maps(10, domain="real", faults=None).maps.view(10, *SHAPE)
    assert torch.allclose((sim == 0).float().mean((0, 2, 3)), zero_real, atol=0.01)
    # HF saturates: its cells read the LS's event count, as in the data
    hf = real[:, 0, :, 3]
    assert (hf[hf > 0] == real.amax((1, 2, 3))[:, None].expand_as(hf)[hf > 0]).float().mean() > 0.9
    assert (sim[:, 0, 2::2, 3] == sim.amax((1, 2, 3))[:, None]).float().mean() > 0.9


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "good"])
def test_each_fault_does_what_it_says(fault):
    good = simulate.dqm_maps(30, faults=None, seed=3)
    bad = simulate.dqm_maps(30, faults=[fault], fault_fraction=1.0, seed=3)
    assert (bad.labels == FAULTS[fault]).all()
    touched = bad.fault_mask
    assert touched.any(1).all()
    inside = bad.maps[touched] / bad.events[:, None].expand_as(touched)[touched]
    reference = good.maps[touched] / good.events[:, None].expand_as(touched)[touched]
    if fault in ("dead_rbx", "dead_region"):
        assert (inside == 0).all()
    elif fault == "hot_channels":
        assert (inside == 1).all() and touched.sum(1).max() <= 5
    elif fault == "noisy_region":
        assert inside.mean() > reference.mean() * 1.2
    else:
        assert inside.mean() == pytest.approx(0.5 * reference.mean().item(), rel=0.1)
    # nothing outside the fault changes its intensity
    outside = ~touched & (good.maps > 0)
    ratio = bad.maps[outside].sum() / good.maps[outside].sum() * good.events.sum() / bad.events.sum()
    assert ratio.item() == pytest.approx(1.0, abs=0.01)


def test_sim_and_real_domains_differ_and_seeds_repeat():
    sim = simulate.dqm_maps(50, domain="sim", faults=None, seed=1)
    real = simulate.dqm_maps(50, domain="real", faults=None, seed=1)
    rate_sim = (sim.maps.sum(1) / sim.events).mean()
    rate_real = (real.maps.sum(1) / real.events).mean()
    assert rate_real > 1.05 * rate_sim  # pile-up
    assert real.events.std() > 3 * sim.events.std()  # luminosity changes through the run
    again = simulate.dqm_maps(50, domain="real", faults=None, seed=1)
    assert torch.equal(again.maps, real.maps)
    assert not torch.equal(simulate.dqm_maps(50, domain="real", faults=None, seed=2).maps, real.maps)
    with pytest.raises(ValueError, match="domain"):
        simulate.dqm_maps(2, domain="data")
    with pytest.raises(ValueError, match="faults"):
        simulate.dqm_maps(2, faults=["fire"])


def _per_event(out, cells):
    """(LS,) mean occupancy per event of the given (42336,) cells."""
    return out.maps[:, cells].mean(1) / out.events


def test_default_conditions_are_the_domains_runs():
    for domain in ("sim", "real"):
        default = simulate.dqm_maps(20, domain=domain, seed=4)
        explicit = simulate.dqm_maps(20, domain=domain, seed=4, conditions=DOMAIN_CONDITIONS[domain])
        assert torch.equal(default.maps, explicit.maps) and torch.equal(default.events, explicit.events)
        assert torch.equal(default.labels, explicit.labels)
    by_hand = RunConditions(
        events_peak=1400.0, lifetime_ls=2000.0, step_ls="random", step_factor=1.45, events_range=(1000.0, 2100.0),
        pileup_peak=1.3, pileup_follows_luminosity=False,
    )
    real = simulate.dqm_maps(30, domain="real", faults=None, seed=6)
    assert torch.equal(simulate.dqm_maps(30, domain="real", faults=None, seed=6, conditions=by_hand).maps, real.maps)
    assert (real.pileup == torch.tensor(1.3)).all()
    level = real.luminosity / torch.exp(-torch.arange(30.0) / 2000)
    assert (((level - 1).abs() < 1e-5) | ((level - 1.45).abs() < 1e-5)).all()
    assert (level.diff() >= 0).all()  # at most one step, up
    sim = simulate.dqm_maps(30, faults=None, seed=6)
    assert (sim.luminosity == 1).all() and (sim.pileup == 1).all()


def test_events_follow_the_luminosity():
    run = RunConditions(events_peak=2000.0, lifetime_ls=20.0, pileup_peak=1.2)
    out = simulate.dqm_maps(40, faults=None, seed=2, conditions=run)
    ls = torch.arange(40.0, dtype=torch.float64)
    assert torch.allclose(out.luminosity.double(), torch.exp(-ls / 20), rtol=1e-6)
    assert torch.allclose(out.pileup.double(), 1.2 * torch.exp(-ls / 20), rtol=1e-6)
    # the second half holds exp(-1) of the first half's events, within the 2% per-LS jitter
    ratio = out.events[20:].sum() / out.events[:20].sum()
    assert ratio.item() == pytest.approx(math.exp(-1), rel=0.02)
    assert (out.events / (2000 * out.luminosity)).mean().item() == pytest.approx(1.0, abs=0.015)


def test_step_raises_luminosity_events_and_pileup():
    run = RunConditions(step_ls=12, step_factor=1.5, pileup_peak=1.2)
    out = simulate.dqm_maps(30, faults=None, seed=3, conditions=run)
    assert (out.luminosity[:12] == 1).all() and (out.luminosity[12:] == 1.5).all()
    assert torch.allclose(out.pileup[12:], torch.tensor(1.8)) and torch.allclose(out.pileup[:12], torch.tensor(1.2))
    assert (out.events[12:].mean() / out.events[:12].mean()).item() == pytest.approx(1.5, rel=0.02)
    active = simulate.active_mask().flatten()
    occupancy = _per_event(out, active)
    assert occupancy[12:].min() > occupancy[:12].max()
    # a random step lies inside the simulated piece, counted in the run's LS
    random_step = dataclasses.replace(run, step_ls="random")
    pieces = [simulate.dqm_maps(10, faults=None, seed=seed, first_ls=100, conditions=random_step) for seed in range(5)]
    up = torch.stack([piece.luminosity == 1.5 for piece in pieces])
    assert (up.int().diff() >= 0).all() and (up.any(1) & ~up.all(1)).any()


def test_first_ls_continues_the_run():
    run = RunConditions(events_peak=1800.0, lifetime_ls=30.0, step_ls=25, step_factor=1.3, pileup_peak=1.1)
    whole = simulate.dqm_maps(40, faults=None, seed=0, conditions=run)
    first = simulate.dqm_maps(20, faults=None, seed=1, conditions=run)
    second = simulate.dqm_maps(20, faults=None, seed=2, conditions=run, first_ls=20)
    assert torch.equal(torch.cat([first.luminosity, second.luminosity]), whole.luminosity)
    assert torch.equal(torch.cat([first.pileup, second.pileup]), whole.pileup)
    assert second.luminosity[0].item() == pytest.approx(math.exp(-20 / 30), rel=1e-6)
    for piece, part in ((first, whole.events[:20]), (second, whole.events[20:])):
        assert (piece.events.mean() / part.mean()).item() == pytest.approx(1.0, abs=0.02)
    assert not torch.equal(second.maps, whole.maps[20:])  # own draws


@pytest.mark.parametrize("pileup", [0.7, 1.4])
def test_pileup_raises_the_occupancy_of_non_hf_cells_as_expected(pileup):
    run = RunConditions(pileup_peak=pileup)
    out = simulate.dqm_maps(30, faults=None, seed=5, conditions=run)
    p = simulate.hit_probability("sim").double().flatten()
    cells = (p > 0) & (p < 1)  # active, not HF
    expected_p = 1 - (1 - p[cells]) ** pileup
    events = out.events.double()
    measured = out.maps[:, cells].double().sum()
    expected = events.sum() * expected_p.sum()
    # binomial variance plus the rounding of the normal approximation
    sigma = (events.sum() * (expected_p * (1 - expected_p)).sum() + out.maps.shape[0] * cells.sum() / 12).sqrt()
    assert abs(measured - expected) < 5 * sigma
    assert abs(events.sum() * p[cells].sum() - expected) > 100 * sigma  # pile-up 1 would fail


@pytest.mark.parametrize(
    "field, value",
    [
        ("events_peak", 0.0), ("events_peak", math.inf), ("lifetime_ls", 0.0), ("lifetime_ls", math.nan),
        ("step_ls", -1), ("step_ls", 2.5), ("step_ls", "middle"), ("step_factor", 0.0), ("events_jitter", -0.1),
        ("events_range", (10.0, 5.0)), ("events_range", (-1.0, 5.0)), ("pileup_peak", math.nan),
        ("pileup_peak", -1.0), ("pileup_follows_luminosity", "yes"),
    ],
)
def test_bad_conditions_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        RunConditions(**{field: value})


def test_bad_run_arguments_name_the_argument():
    with pytest.raises(ValueError, match="^first_ls:"):
        simulate.dqm_maps(2, first_ls=-1)
    with pytest.raises(ValueError, match="^conditions:"):
        simulate.dqm_maps(2, conditions="A")
    with pytest.raises(ValueError, match="^domain:"):
        simulate.hit_probability("data")
    with pytest.raises(dataclasses.FrozenInstanceError):
        RUNS["A"].events_peak = 1.0


def test_example_runs_differ_in_intensity_and_a_little_in_pileup():
    a = simulate.dqm_maps(30, faults=None, seed=0, conditions=RUNS["A"])
    b = simulate.dqm_maps(30, faults=None, seed=1, conditions=RUNS["B"])
    active = simulate.active_mask().flatten()
    raw_a, raw_b = a.maps[:, active].mean(1), b.maps[:, active].mean(1)
    assert raw_a.min() > 1.3 * raw_b.max()  # raw counts: trivially apart (ratio ~1.5)
    norm_a, norm_b = raw_a / a.events, raw_b / b.events
    ratio = (norm_a.mean() / norm_b.mean()).item()
    assert 1.005 < ratio < 1.03  # per event: ~1.5% apart, through the pile-up alone
    error = (norm_a.var() / 30 + norm_b.var() / 30).sqrt()
    assert (norm_a.mean() - norm_b.mean()) > 10 * error
    # where A's pile-up has decayed to B's peak value, the per-event maps agree while the raw ones do not
    lag = round(2500 * math.log(1.05))
    late_a = simulate.dqm_maps(30, faults=None, seed=2, conditions=RUNS["A"], first_ls=lag)
    late_raw = late_a.maps[:, active].mean(1)
    assert (late_raw / late_a.events).mean().item() == pytest.approx(norm_b.mean().item(), rel=0.001)
    assert late_raw.mean() > 1.3 * raw_b.mean()
