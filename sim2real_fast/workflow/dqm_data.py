"""The maps of ``sim2real dqm``: a user's real maps read and checked, and the data of its two tasks.

Fault detection (:func:`fault_data`): the labelled simulation is one simulated run with a fault in
half of its LS, z-scored against a reference of good simulated LS; the real domain is split by LS into
a reference, unlabelled adaptation maps and test maps, the test maps scored untouched (the
false-alarm set) and with faults. Every fault, simulated or real, is injected by
:func:`~sim2real_fast.dqm.inject_faults` (the same code, so its labels are exact: a fault touches only
cells it can change). The adaptation maps carry faults in about half of them, from other seeds than
the test maps. Without a real file, one simulated "real" run is split every fifth LS: LS 5k is the
reference, 5k + 1 and 5k + 2 adaptation, 5k + 3 and 5k + 4 test. A user's file has few LS (run
306138 has 10): its LS are split in two interleaved folds, each half the other's reference, and the
adaptation maps are the test half's LS with faults from other seeds (so the untouched test maps are
among the unlabelled adaptation maps, as a DQM shifter's own run would be: transductive, never labelled).

Run classification (:func:`run_data`): two runs whose LS a classifier must tell apart; training on
the first half of each run's LS, testing on the second half.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import dqm, io, simulate
from .. import geometry as _geometry
from ..adapt import Domain
from ..simulate.dqm import N_DEPTHS, N_IETA, N_IPHI

__all__ = ["FaultData", "RunData", "fault_data", "read_real_maps", "run_data"]

N_CELLS = N_DEPTHS * N_IPHI * N_IETA


def _check_finite(maps: io.OccupancyMaps, file: str) -> torch.Tensor:
    values = maps.maps
    for name, part in zip(maps.names if len(maps.names) == N_DEPTHS else ["maps"] * N_DEPTHS,
                          values.view(len(values), N_DEPTHS, -1).unbind(1)):
        bad = ~torch.isfinite(part) | (part < 0)
        if bad.any():
            ls = bad.any(1).nonzero()[:, 0].tolist()
            raise ValueError(f"{file}: dataset {name!r}: NaN, infinite or negative counts in LS {ls[:5]}"
                             f"{' ...' if len(ls) > 5 else ''}; expected hit counts >= 0")
    if len(values) < 2:
        raise ValueError(f"{file}: {len(values)} lumi-section(s); the reference and the test need at least 2")
    return values


def _read_root(file: str) -> io.OccupancyMaps:
    objects = io.list_objects(file)
    if objects.get("maps") in ("TTree", "TNtuple"):
        return io.read_maps(file, tree="maps", geometry="hcal", lumi_section_branch="lumi_section")
    layers = []
    for depth in range(1, N_DEPTHS + 1):
        histograms = io.read_th2(file, f"*depth{depth}")
        shape = tuple(histograms.values.shape[1:])
        if shape != (N_IPHI, N_IETA):
            raise ValueError(f"{file}: TH2 {histograms.names[0]!r} has {shape[1]} x {shape[0]} (x, y) bins; "
                             f"expected {N_IETA} ieta x {N_IPHI} iphi per depth")
        bad = (~torch.isfinite(histograms.values) | (histograms.values < 0)).flatten(1).any(1)
        if bad.any():
            raise ValueError(f"{file}: TH2 {histograms.names[int(bad.nonzero()[0, 0])]!r}: NaN, infinite or negative "
                             "counts; expected hit counts >= 0")
        layers.append(histograms)
    if len({len(h.names) for h in layers}) > 1:
        raise ValueError(f"{file}: the depths have different numbers of TH2 "
                         f"({[len(h.names) for h in layers]}); expected one per LS and depth")
    values = torch.cat([h.values.flatten(1) for h in layers], 1)
    return io.OccupancyMaps(values, torch.arange(len(values)), _geometry.get("hcal"),
                            tuple(f"*depth{d}" for d in range(1, N_DEPTHS + 1)), (file,))


def read_real_maps(path: str | os.PathLike) -> io.OccupancyMaps:
    """A user's HCAL occupancy maps -> :class:`~sim2real_fast.io.OccupancyMaps` (LS, 42336) in the ``hcal`` geometry.

    ``.h5`` / ``.hdf5``: the HCALDQM/ML4DQM layout (:func:`~sim2real_fast.io.read_hcal_dqm`, RecHitTask);
    ``.npy``: (LS, 7 * 72, 84), (LS, 7, 72, 84) or (LS, 42336); ``.root``: a ``maps`` tree as
    :func:`~sim2real_fast.io.write_maps_root` writes it (branches depth1 .. depth7 and lumi_section), else TH2 per LS and depth named ``*depth1`` ..
    ``*depth7`` (:func:`~sim2real_fast.io.write_th2`), 84 ieta x 72 iphi bins. ValueError naming the
    file (and the dataset) for another layout, binning, or NaN / negative counts.
    """
    file = os.fspath(path)
    if not Path(file).is_file():
        raise FileNotFoundError(f"{file}: no such file (expected HCAL occupancy maps: .h5, .npy or .root)")
    suffix = Path(file).suffix.lower()
    if suffix in (".h5", ".hdf5"):
        maps = io.read_hcal_dqm(file)
    elif suffix == ".npy":
        import numpy as np

        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise io.CorruptFileError(f"{file}: cannot be read as a .npy array ({error})") from error
        if array.ndim == 4:
            if tuple(array.shape[1:]) != (N_DEPTHS, N_IPHI, N_IETA) or array.dtype.kind not in "biuf":
                raise ValueError(f"{file}: maps of {array.dtype} {array.shape}; expected numbers (LS, {N_DEPTHS}, "
                                 f"{N_IPHI}, {N_IETA})")
            maps = io.OccupancyMaps(torch.from_numpy(np.array(array, dtype=np.float32).reshape(len(array), -1)),
                                    torch.arange(len(array)), _geometry.get("hcal"), ("map",), (file,))
        else:
            maps = io.read_npy_maps(file, geometry="hcal")
    elif suffix == ".root":
        maps = _read_root(file)
    else:
        raise ValueError(f"{file}: unknown suffix {suffix!r}; expected HCAL maps as .h5/.hdf5, .npy or .root")
    _check_finite(maps, file)
    return maps


@dataclass
class FaultData:
    """The fault-detection task's data; ``inputs`` are :func:`~sim2real_fast.dqm.detect.model_inputs`.

    Attributes:
        sim_train, sim_val: labelled simulated maps (FAULTS labels), 80 / 20 %.
        sim_test: held-out labelled simulated maps (the in-domain reference figure).
        real_adapt: unlabelled real maps (the adaptation methods' target).
        real_test: real test maps, labels 0 for the untouched LS, the injected fault's otherwise.
        channel_labels: (N_test, 42336) bool, the cells a fault touched.
        active: (N_test, 42336) bool, the cells active in each test map's reference (the channel AUC's
            negatives).
        baselines: {"ratio", "zscore"}: their :class:`~sim2real_fast.dqm.Scores` of the real test maps.
        test_maps: (N_test, 42336) the test counts, and ``mean_sim`` / ``mean_real`` (42336,) the
            per-event occupancy of good simulated and real maps (the report's figure).
        description: how the real domain was made, with the counts behind it.
    """

    sim_train: Domain
    sim_val: Domain
    sim_test: Domain
    real_adapt: Domain
    real_test: Domain
    channel_labels: torch.Tensor
    active: torch.Tensor
    baselines: dict
    test_maps: torch.Tensor
    mean_sim: torch.Tensor
    mean_real: torch.Tensor
    description: dict = field(default_factory=dict)


def _split_real(good: torch.Tensor, events: torch.Tensor | None, folds, *, how: str, adapt_seeds, test_seeds,
                seed: int) -> dict:
    """Adaptation and test maps of every (reference LS, adaptation LS, test LS) fold, concatenated."""
    parts: dict[str, list] = {k: [] for k in ("adapt", "inputs", "labels", "touched", "active", "counts",
                                              "ratio_maps", "ratio_channels", "z_maps", "z_channels")}
    for k, (reference_ls, adapt_ls, test_ls) in enumerate(folds):
        pick = (lambda ls: None) if events is None else (lambda ls: events[ls])
        reference = dqm.build_reference(good[reference_ls], pick(reference_ls))
        for s in adapt_seeds:
            faulted = dqm.inject_faults(good[adapt_ls], fault_fraction=0.5, seed=seed + 1000 * (k + 1) + s,
                                        events=pick(adapt_ls))
            parts["adapt"].append(dqm.detect.model_inputs(faulted.maps, how, reference=reference, events=faulted.events))
        sets = [dqm.inject_faults(good[test_ls], faults=None, events=pick(test_ls))]
        sets += [dqm.inject_faults(good[test_ls], fault_fraction=1.0, seed=seed + s, events=pick(test_ls))
                 for s in test_seeds]
        for out in sets:
            parts["inputs"].append(dqm.detect.model_inputs(out.maps, how, reference=reference, events=out.events))
            parts["labels"].append(out.labels), parts["touched"].append(out.channel_labels)
            parts["active"].append(reference.active.expand(len(out.maps), -1))
            parts["counts"].append(out.maps)
            ratio = dqm.ratio_scores(out.maps, reference, events=out.events)
            z = dqm.zscore_scores(out.maps, reference, events=out.events)
            parts["ratio_maps"].append(ratio.maps), parts["ratio_channels"].append(ratio.channels)
            parts["z_maps"].append(z.maps), parts["z_channels"].append(z.channels)
    return {k: torch.cat(v) for k, v in parts.items()}


def fault_data(*, sim_maps: int, reference_maps: int, real_maps: int, real: io.OccupancyMaps | None,
               how: str = "zscore", test_seeds: int = 1, seed: int = 0) -> FaultData:
    """The fault task's data (module docstring): ``sim_maps`` labelled simulated LS (+ a quarter as
    many held out), ``reference_maps`` good simulated LS as their reference, and ``real_maps``
    simulated real LS (ignored when ``real`` is given); ``test_seeds`` fault draws per real test LS."""
    good_sim = simulate.dqm_maps(sim_maps + sim_maps // 4, domain="sim", faults=None, seed=seed)
    sim = dqm.inject_faults(good_sim.maps, fault_fraction=0.5, seed=seed + 500, events=good_sim.events)
    sim_reference = simulate.dqm_maps(reference_maps, domain="sim", faults=None, seed=seed + 1)
    reference = dqm.build_reference(sim_reference.maps, sim_reference.events)
    inputs = dqm.detect.model_inputs(sim.maps, how, reference=reference, events=sim.events)
    labelled = Domain(inputs[:sim_maps], sim.labels[:sim_maps], name="sim")
    sim_train, sim_val = labelled.split(0.8, seed=seed)
    sim_test = Domain(inputs[sim_maps:], sim.labels[sim_maps:], name="sim")
    if real is None:
        run = simulate.dqm_maps(real_maps, domain="real", faults=None, seed=seed + 2)
        good, events = run.maps, run.events
        ls = torch.arange(real_maps)
        folds = [((ls % 5 == 0).nonzero()[:, 0], ((ls % 5 == 1) | (ls % 5 == 2)).nonzero()[:, 0],
                  (ls % 5 >= 3).nonzero()[:, 0])]
        adapt_seeds, source = [0], f"simulated real run ({real_maps} LS, seed {seed + 2})"
    else:
        good, events = real.maps, None
        even, odd = torch.arange(0, len(good), 2), torch.arange(1, len(good), 2)
        folds = [(even, odd, odd), (odd, even, even)]
        adapt_seeds, source = range(20), str(real.sources[0] if real.sources else "real maps")
    parts = _split_real(good, events, folds, how=how, adapt_seeds=adapt_seeds, test_seeds=range(test_seeds),
                        seed=seed)
    n_good = int((parts["labels"] == 0).sum())
    description = {
        "real": source, "input": how, "folds": len(folds),
        "sim_train": len(sim_train), "sim_val": len(sim_val), "sim_test": len(sim_test),
        "sim_reference_ls": reference_maps, "real_reference_ls": [len(f[0]) for f in folds],
        "real_adapt": len(parts["adapt"]), "real_test_good": n_good,
        "real_test_faulty": len(parts["labels"]) - n_good, "fault_draws_per_test_ls": test_seeds,
    }
    good_sim = sim_reference.maps / sim_reference.events[:, None]
    good_real = dqm.per_event(good, events)
    return FaultData(
        sim_train, sim_val, sim_test, Domain(parts["adapt"], name="real"),
        Domain(parts["inputs"], parts["labels"], name="real"), parts["touched"], parts["active"],
        {"ratio": dqm.Scores(parts["ratio_maps"], parts["ratio_channels"]),
         "zscore": dqm.Scores(parts["z_maps"], parts["z_channels"])},
        parts["counts"], good_sim.mean(0), good_real.mean(0), description)


@dataclass
class RunData:
    """The run-classification task's data for one normalisation: label 0 run A, 1 run B.

    ``train`` / ``test``: the first / second half of each run's LS; ``test_ls``: (N_test,) each test
    map's LS number within its run (the robustness curve bins them); ``description``: the runs and counts.
    """

    train: Domain
    test: Domain
    test_ls: torch.Tensor
    description: dict


def run_data(*, lumisections: int, how: str, real: io.OccupancyMaps | None = None, seed: int = 0) -> RunData:
    """Two runs of ``lumisections`` LS with the conditions of :data:`simulate.dqm.RUNS` ("A" and "B"),
    normalised as ``how`` ("raw", "events" or "median": no reference). With ``real``, run B is the
    user's run and run A a simulated run of as many LS (sim domain, conditions "A")."""
    if how not in ("raw", "events", "median"):
        raise ValueError(f"how: run classification compares 'raw', 'events' or 'median' maps, got {how!r}")
    runs = simulate.dqm.RUNS
    a = simulate.dqm_maps(lumisections if real is None else len(real), domain="sim", faults=None,
                          conditions=runs["A"], seed=seed)
    if real is None:
        b = simulate.dqm_maps(lumisections, domain="sim", faults=None, conditions=runs["B"], seed=seed + 1)
        maps_b, events_b, name_b = b.maps, b.events, "B"
    else:
        maps_b, events_b, name_b = real.maps, None, str(real.sources[0] if real.sources else "real")
    parts = []
    for label, (maps, events) in enumerate(((a.maps, a.events), (maps_b, events_b))):
        x = dqm.detect.model_inputs(maps, how, events=events)
        half = math.ceil(len(x) / 2)
        ls = torch.arange(len(x))
        parts.append((x[:half], x[half:], torch.full((len(x),), label, dtype=torch.long), half, ls[half:]))
    train = Domain(torch.cat([p[0] for p in parts]), torch.cat([p[2][:p[3]] for p in parts]), name="runs")
    test = Domain(torch.cat([p[1] for p in parts]), torch.cat([p[2][p[3]:] for p in parts]), name="runs")
    description = {"runs": ["A", name_b], "normalisation": how, "train": len(train), "test": len(test),
                   "lumisections": [len(a.maps), len(maps_b)]}
    return RunData(train, test, torch.cat([p[4] for p in parts]), description)
