"""simulate.dqm_maps: HCAL occupancy maps with the real detector's layout, faults and two domains."""

from pathlib import Path

import pytest
import torch

from sim2real_fast import simulate
from sim2real_fast.simulate import FAULTS

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
