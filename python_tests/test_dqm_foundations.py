"""dqm: fault injection on real and simulated HCAL maps, normalisations, training-free baselines, metrics."""

import math
from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401

from sim2real_fast import dqm, io, simulate

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hcal" / "hcal_dqm_run306138_10ls.hdf5"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/hcal (not in a user's clone)")
SHAPE = (7, 72, 84)
RBX_COLUMNS, RBX_WIDTHS = (13, 27, 42, 57), (14, 15, 15, 14)


@pytest.fixture(scope="module")
def real():
    return io.read_hcal_dqm(DATA).maps


@pytest.fixture(scope="module")
def sim():
    return simulate.dqm_maps(12, faults=None, seed=5)


def check_faults(before, events, out):
    """The invariants of every injected fault, map by map."""
    assert out.maps.shape == before.shape and out.channel_labels.shape == before.shape
    assert torch.equal(out.events, events)
    touched = out.channel_labels
    assert not (touched & (before == 0)).any()  # only active cells
    assert torch.equal(out.maps[~touched], before[~touched])  # nothing else changes
    assert torch.equal(touched.any(1), out.labels != 0)
    for i, label in enumerate(out.labels.tolist()):
        cells, old, new, n = touched[i], before[i][touched[i]], out.maps[i][touched[i]], events[i]
        depth, row, col = (x[cells.view(SHAPE)] for x in torch.meshgrid(*map(torch.arange, SHAPE), indexing="ij"))
        if label in (dqm.FAULTS["dead_rbx"], dqm.FAULTS["degraded_gain"]):
            # one readout box: 4 iphi rows x one of HE- / HB- / HB+ / HE+, all depths, every active cell of it
            part = max(j for j, start in enumerate(RBX_COLUMNS) if start <= col.min())
            first, last = RBX_COLUMNS[part], RBX_COLUMNS[part] + RBX_WIDTHS[part]
            assert col.min() >= 13 and col.max() < last and (row // 4).unique().numel() == 1
            box = torch.zeros(SHAPE, dtype=torch.bool)
            box[:, row.min() // 4 * 4 : row.min() // 4 * 4 + 4, first:last] = True
            assert torch.equal(cells, box.flatten() & (before[i] > 0))
        if label in (dqm.FAULTS["dead_region"], dqm.FAULTS["noisy_region"]):
            assert depth.unique().numel() == 1 and col.max() - col.min() < 10
            assert min(((row - r) % 72).max() for r in row.tolist()) < 10  # a band of <= 10 rows, wrapping
        if label in (dqm.FAULTS["dead_rbx"], dqm.FAULTS["dead_region"]):
            assert (new == 0).all()
        elif label == dqm.FAULTS["hot_channels"]:
            assert 1 <= len(new) <= 5 and (new == n).all() and (old < 0.95 * n).all()
        elif label == dqm.FAULTS["noisy_region"]:
            assert (new >= old).all() and (new <= n).all() and (old < n).all()
            extra = (new - old).sum() / (n - old).sum()
            assert extra.item() == pytest.approx(0.5, abs=4 / math.sqrt((n - old).sum().item()))
        elif label == dqm.FAULTS["degraded_gain"]:
            assert (new <= old).all() and (new == new.round()).all()
            assert (new.sum() / old.sum()).item() == pytest.approx(0.5, abs=4 / math.sqrt(old.sum().item()))


@needs_data
@pytest.mark.parametrize("fault", dqm.FAULT_TYPES)
def test_each_fault_on_the_real_maps(real, fault):
    out = dqm.inject_faults(real, faults=[fault], fault_fraction=1.0, seed=7)
    assert (out.labels == dqm.FAULTS[fault]).all()
    # the events are estimated as each map's largest count (HF fires every event), the file's per-LS maxima
    assert out.events.tolist() == [1350, 1379, 1366, 1332, 1422, 1930, 1868, 1911, 1939, 2020]
    check_faults(real, out.events, out)


@pytest.mark.parametrize("fault", dqm.FAULT_TYPES)
def test_each_fault_on_simulated_maps(sim, fault):
    out = dqm.inject_faults(sim.maps, faults=[fault], fault_fraction=1.0, seed=2, events=sim.events)
    assert (out.labels == dqm.FAULTS[fault]).all()
    check_faults(sim.maps, sim.events, out)
    # the same effect on the per-event occupancy as the simulator's own fault (in its own cells)
    own = simulate.dqm_maps(12, faults=[fault], fault_fraction=1.0, seed=5)
    assert effect(fault, out.maps, out.channel_labels, sim) == pytest.approx(
        effect(fault, own.maps / own.events[:, None] * sim.events[:, None], own.fault_mask, sim), abs=0.03)


def effect(fault, maps, cells, good):
    """What a fault does to the per-event occupancy of its cells: 0 (dead), 1 (hot), the fraction of the
    hit-less events that gain a hit (noisy), the fraction of hits kept (gain)."""
    rate, before = (maps / good.events[:, None])[cells], (good.maps / good.events[:, None])[cells]
    if fault == "noisy_region":
        return ((rate - before).sum() / (1 - before).sum()).item()
    if fault == "degraded_gain":
        return (rate.sum() / before.sum()).item()
    return rate.mean().item()


@needs_data
def test_mixed_faults_leave_good_maps_and_repeat_with_the_seed(real):
    out = dqm.inject_faults(real, seed=3)
    good = out.labels == 0
    assert 0 < good.sum() < len(real)
    assert torch.equal(out.maps[good], real[good]) and not out.channel_labels[good].any()
    check_faults(real, out.events, out)
    again = dqm.inject_faults(real, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(out, again))
    other = dqm.inject_faults(real, seed=4)
    assert not torch.equal(other.channel_labels, out.channel_labels)
    # which maps are faulty, and with what, depends on the seed alone: the same on simulated maps
    sim = simulate.dqm_maps(len(real), faults=None, seed=0)
    assert torch.equal(dqm.inject_faults(sim.maps, seed=3, events=sim.events).labels, out.labels)
    untouched = dqm.inject_faults(real, faults=None)
    assert torch.equal(untouched.maps, real) and not untouched.labels.any() and not untouched.channel_labels.any()


def test_a_dead_cell_is_not_touched_again(sim):
    maps = sim.maps.clone().view(-1, *SHAPE)
    maps[:, 0, 8:40] = 0  # depth 1, rows 8-39 already dead (several RBX)
    maps = maps.flatten(1)
    for fault in dqm.FAULT_TYPES:
        out = dqm.inject_faults(maps, faults=[fault], fault_fraction=1.0, seed=1, events=sim.events)
        assert not out.channel_labels.view(-1, *SHAPE)[:, 0, 8:40].any()
        check_faults(maps, sim.events, out)


def test_injection_errors(sim):
    with pytest.raises(ValueError, match="faults"):
        dqm.inject_faults(sim.maps, faults=["fire"])
    with pytest.raises(ValueError, match="fault_fraction"):
        dqm.inject_faults(sim.maps, fault_fraction=1.5)
    with pytest.raises(ValueError, match="maps"):
        dqm.inject_faults(sim.maps[:, :100])
    with pytest.raises(ValueError, match="maps"):
        dqm.inject_faults(torch.full((2, 42336), math.nan))
    with pytest.raises(ValueError, match="events"):
        dqm.inject_faults(sim.maps, events=sim.events - 1)
    with pytest.raises(ValueError, match=r"LS \[0\]"):
        dqm.inject_faults(torch.zeros(1, 42336), faults=["dead_rbx"], fault_fraction=1.0)


def test_normalisations_by_hand():
    maps = torch.tensor([[0.0, 2, 4, 10], [0, 1, 6, 8]])
    assert torch.equal(dqm.normalise(maps, "raw"), maps)
    assert torch.allclose(dqm.normalise(maps, "events"), maps / torch.tensor([[10.0], [8]]))
    assert torch.allclose(dqm.per_event(maps, torch.tensor([20.0, 16])), maps / torch.tensor([[20.0], [16]]))
    assert torch.allclose(dqm.normalise(maps, "median"), maps / torch.tensor([[4.0], [6]]))  # over non-zero cells
    assert torch.equal(dqm.per_median(torch.zeros(1, 3)), torch.zeros(1, 3))
    reference = dqm.build_reference(maps, torch.tensor([20.0, 10]))
    assert torch.allclose(reference.mean, torch.tensor([0.0, 0.1, 0.4, 0.65]))
    assert torch.allclose(reference.std, torch.tensor([0.0, 0.0, 0.2, 0.15]) * math.sqrt(2))
    assert reference.floor == pytest.approx(1 / 30) and reference.n_maps == 2
    assert reference.active.tolist() == [False, True, True, True]
    test = torch.tensor([[0.0, 1, 8, 10], [1, 2, 0, 10]])
    ratio = dqm.normalise(test, "reference", events=torch.tensor([10.0, 10]), reference=reference)
    # cell 0: never fired in the reference; silent -> 1, fires at 0.1 -> 0.1 / floor
    assert torch.allclose(ratio, torch.tensor([[1.0, 1, 2, 1 / 0.65], [3, 2, 0, 1 / 0.65]]))
    with pytest.raises(ValueError, match="how"):
        dqm.normalise(maps, "log")
    with pytest.raises(ValueError, match="reference"):
        dqm.normalise(maps, "reference")
    with pytest.raises(ValueError, match="events"):
        dqm.per_event(maps, torch.tensor([5.0, 8]))


def test_baselines_by_hand():
    reference = dqm.build_reference(torch.tensor([[50.0, 20, 0, 100], [40, 30, 0, 100]]), torch.tensor([100.0, 100]))
    test = torch.tensor([[45.0, 25, 0, 100], [0, 25, 0, 100], [45, 25, 3, 100]])
    ratio = dqm.ratio_scores(test, reference)
    # cell 2 never fired in the reference: 0.03 per event over the floor, 1 / 200 events
    assert torch.allclose(ratio.channels, torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 5, 0]]))
    assert torch.allclose(ratio.maps, torch.tensor([0.0, 1, 5]))
    z = dqm.zscore_scores(test, reference)
    std = 0.1 / math.sqrt(2)  # the reference LS's std beats the binomial one for cells 0 and 1
    floor = 1 / 200
    expected = [[0, 0, 0, 0], [0.45 / std, 0, 0, 0], [0, 0, (0.03 - 0) / math.sqrt(floor * (1 - floor) / 100), 0]]
    assert torch.allclose(z.channels, torch.tensor(expected), rtol=1e-5)
    top = dqm.zscore_scores(test, reference, aggregate="top", top=2)
    assert torch.allclose(top.maps, torch.tensor(expected).topk(2, 1).values.mean(1), rtol=1e-5)
    with pytest.raises(ValueError, match="aggregate"):
        dqm.ratio_scores(test, reference, aggregate="mean")


@pytest.mark.parametrize("baseline", [dqm.ratio_scores, dqm.zscore_scores])
def test_baselines_put_the_faulty_channels_on_top(sim, baseline):
    reference = dqm.build_reference(sim.maps[:6], sim.events[:6])
    out = dqm.inject_faults(sim.maps[6:], faults=["dead_rbx", "dead_region"], fault_fraction=1.0, seed=0,
                            events=sim.events[6:])
    scores = baseline(out.maps, reference, events=out.events)
    good = baseline(sim.maps[6:], reference, events=sim.events[6:])
    for channels, touched in zip(scores.channels, out.channel_labels):
        assert channels[touched].min() > channels[~touched].max()
    assert scores.maps.min() > good.maps.max()
    metrics = dqm.detection_metrics(torch.cat([scores.maps, good.maps]), torch.cat([out.labels, 0 * out.labels]),
                                    channel_scores=scores.channels, channel_labels=out.channel_labels,
                                    active=reference.active)
    assert metrics["map"] == {"auc": 1.0, "n_good": 6, "n_faulty": 6}
    assert metrics["channel"]["auc"] == 1.0 and metrics["false_alarm"]["rate"] == 0.0


def test_map_metrics_by_hand():
    scores, labels = torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 3])
    # faulty-good pairs ranked right: 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4 (0.35 < 0.4): 3 of 4
    assert dqm.map_auc(scores, labels) == {"auc": 0.75, "n_good": 2, "n_faulty": 2}
    assert dqm.fault_type_auc(scores, labels) == {
        "dead_rbx": {"auc": 0.5, "n_good": 2, "n_faulty": 1},
        "hot_channels": {"auc": 1.0, "n_good": 2, "n_faulty": 1},
    }
    # 90% of 2 faulty maps = both: threshold 0.35, one of the two good maps (0.4) is above
    far = dqm.false_alarm_rate(scores, labels)
    expected = {"rate": 0.5, "threshold": pytest.approx(0.35), "efficiency": 1.0, "n_alarms": 1, "n_good": 2, "n_faulty": 2}
    assert far == expected
    assert math.isnan(dqm.map_auc(scores, torch.zeros(4, dtype=torch.long))["auc"])
    assert math.isnan(dqm.false_alarm_rate(scores, torch.ones(4, dtype=torch.long))["rate"])


def test_false_alarm_rate_keeps_90_percent_of_the_faulty_maps():
    faulty = torch.arange(1.0, 11.0)  # 10 faulty maps, scores 1..10: 90% keeps 9, threshold 2
    good = torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 0.0, 0.2, 0.3, 0.4])
    scores, labels = torch.cat([faulty, good]), torch.cat([torch.full((10,), 2), torch.zeros(10, dtype=torch.long)])
    far = dqm.false_alarm_rate(scores, labels, efficiency=0.9)
    assert far["threshold"] == 2.0 and far["efficiency"] == 0.9
    assert far["n_alarms"] == 3 and far["rate"] == 0.3  # 2.0 (at the threshold), 2.5, 3.0
    assert dqm.false_alarm_rate(scores, labels, efficiency=0.5)["threshold"] == 6.0
    with pytest.raises(ValueError, match="efficiency"):
        dqm.false_alarm_rate(scores, labels, efficiency=0)


def test_channel_auc_counts_the_active_channels():
    scores = torch.tensor([[0.9, 0.2, 5.0, 0.1], [0.3, 0.4, 0.0, 0.6]])
    touched = torch.tensor([[True, False, False, False], [False, False, False, True]])
    active = torch.tensor([True, True, False, True])  # cell 2 reads nothing: its score does not count
    out = dqm.channel_auc(scores, touched, active)
    # positives 0.9, 0.6; negatives 0.2, 0.1, 0.3, 0.4: all below both
    assert out == {"auc": 1.0, "n_touched": 2, "n_untouched": 4, "n_maps": 2}
    # with cell 2 counted: 6 negatives, 5.0 beats both positives: 10 of 12 pairs right
    assert dqm.channel_auc(scores, touched, torch.ones(4, dtype=torch.bool))["auc"] == pytest.approx(10 / 12)
    with pytest.raises(ValueError, match="active"):
        dqm.channel_auc(scores, touched, active[:3])
    with pytest.raises(ValueError, match="channel_scores"):
        dqm.detection_metrics(scores[:, 0], torch.tensor([1, 0]), channel_scores=scores)
