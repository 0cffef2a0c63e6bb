"""Bad files: every reader names the file and says what it expected; failed writes leave nothing; streaming stays in memory.

Each reader meets empty, truncated, foreign, random, missing and directory paths, then the malformed contents
of its format (hit counts that differ, wrong branch types, other binnings, missing or mis-shaped datasets).
Every error must be a ValueError, OSError, KeyError or TypeError (no bare uproot/h5py/numpy exception),
name the file and carry a phrase saying what was expected. ``pytest --collect-only -q`` counts the cases.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap

import awkward as ak
import h5py
import numpy as np
import pytest
import torch
import uproot

from helpers import one_thread  # noqa: F401  (an autouse fixture)
from io_data import random_showers, shared_file, write_tree
from sim2real_fast import geometry as sgeometry
from sim2real_fast import io as sio
from sim2real_fast.geometry import Geometry, Layer
from sim2real_fast.io import root as root_module

ALLOWED = (ValueError, OSError, KeyError, TypeError)
FOREIGN_MODULES = ("uproot", "h5py", "awkward", "numpy", "torch")
GRID = Geometry("grid", (Layer("a", 4, 5), Layer("b", 2, 3)))  # two layers of different binning
STEP = 2


def _check(excinfo, path, phrase: str) -> None:
    """The error is ours or a builtin, names ``path`` and matches ``phrase``."""
    error = excinfo.value
    assert type(error).__module__.split(".")[0] not in FOREIGN_MODULES, f"{type(error).__module__}.{type(error).__name__}: {error}"
    message = str(error)
    assert os.fspath(path) in message, message
    assert re.search(phrase, message), message


# ---- valid files, written by the package's own writers ---------------------------------------
READERS = {
    "read_showers": ("showers.root", lambda p: sio.read_showers(p, step_size=STEP)),
    "iterate_showers": ("showers.root", lambda p: list(sio.iterate_showers(p, step_size=STEP))),
    "ShowersIterableDataset": ("showers.root", lambda p: list(sio.ShowersIterableDataset(p, step_size=STEP))),
    "read_arrays": ("showers.root", lambda p: sio.read_arrays(p)),
    "read_maps": ("maps.root", lambda p: sio.read_maps(p, tree="maps", geometry=GRID, lumi_section_branch="lumi_section")),
    "read_th2": ("th2.root", lambda p: sio.read_th2(p, "ls*_a")),
    "read_calogan": ("calogan.h5", sio.read_calogan),
    "read_calochallenge": ("calochallenge.h5", sio.read_calochallenge),
    "read_hcal_dqm": ("hcal.h5", sio.read_hcal_dqm),
    "read_npy_maps": ("maps.npy", sio.read_npy_maps),
}
FORMAT = {"root": "a ROOT file", "h5": "an HDF5 file", "npy": "a .npy array"}
TRUNCATED = {"root": "truncated ROOT file", "h5": "truncated file", "npy": "not fully written"}


def _maps(n: int, n_cells: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, n_cells, generator=torch.Generator().manual_seed(seed))


VIEW = {  # a reader's result -> the tensor compared with what was written
    "read_showers": lambda result: result.images,
    "iterate_showers": lambda result: sio.Showers.cat(result).images,
    "ShowersIterableDataset": lambda result: torch.stack([image for image, _, _ in result]),
    "read_arrays": lambda result: result["label"],
    "read_maps": lambda result: result.maps,
    "read_th2": lambda result: result.values,
    "read_calogan": lambda result: result.images,
    "read_calochallenge": lambda result: result.images,
    "read_hcal_dqm": lambda result: result.maps,
    "read_npy_maps": lambda result: result.maps,
}


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """{file name: path} of one small valid file per reader, and {reader: what it should read}."""
    folder = tmp_path_factory.mktemp("valid")
    images, labels, energy = random_showers(30)
    sio.write_showers_root(folder / "showers.root", images, labels, energy)
    sio.write_calogan(folder / "calogan.h5", images, energy, labels=labels)
    voxels, _, voxel_energy = random_showers(20, 368)
    sio.write_calochallenge(folder / "calochallenge.h5", voxels, voxel_energy)
    maps, hcal, npy = _maps(6, GRID.n_cells), _maps(1, 7 * 72 * 84), _maps(5, 8 * 9)
    sio.write_maps_root(folder / "maps.root", maps, geometry=GRID)
    sio.write_th2(folder / "th2.root", maps, geometry=GRID)
    sio.write_hcal_dqm(folder / "hcal.h5", hcal)
    sio.write_npy_maps(folder / "maps.npy", npy.reshape(5, 8, 9))
    expected = {
        "read_showers": images, "iterate_showers": images, "ShowersIterableDataset": images, "read_arrays": labels,
        "read_maps": maps, "read_th2": GRID.split_layers(maps)[0], "read_calogan": images, "read_calochallenge": voxels,
        "read_hcal_dqm": hcal, "read_npy_maps": npy,
    }
    return {path.name: path for path in folder.iterdir()}, expected


@pytest.mark.parametrize("reader", READERS)
def test_the_valid_files_read(valid, reader):
    """The faults below start from these files: each reads back what was written."""
    files, expected = valid
    name, read = READERS[reader]
    assert torch.equal(VIEW[reader](read(files[name])), expected[reader])


# ---- any reader: empty, truncated, foreign, random, missing, a directory ---------------------
def _truncated(fraction):
    return lambda data, other: data[: int(len(data) * fraction)]


GENERIC = {
    "zero-length": (lambda data, other: b"", "corrupt"),
    "truncated-10%": (_truncated(0.1), "truncated"),
    "truncated-50%": (_truncated(0.5), "truncated"),
    "truncated-90%": (_truncated(0.9), "truncated"),
    "last-byte-cut": (lambda data, other: data[:-1], "truncated"),
    "random-bytes": (lambda data, other: np.random.default_rng(7).bytes(len(data)), "corrupt"),
    "other-format": (lambda data, other: other, "corrupt"),
    "directory": (None, "Is a directory"),
    "missing": (None, "No such file or directory"),
}


@pytest.mark.parametrize("fault", GENERIC)
@pytest.mark.parametrize("reader", READERS)
def test_broken_file(valid, tmp_path, reader, fault):
    files = valid[0]
    name, read = READERS[reader]
    suffix = name.rsplit(".", 1)[1]
    make, expected = GENERIC[fault]
    path = tmp_path / f"{fault}.{name}"
    if fault == "directory":
        path.mkdir()
    elif make is not None:
        other = files["showers.root" if suffix != "root" else "calogan.h5"].read_bytes()
        path.write_bytes(make(files[name].read_bytes(), other))
    if expected == "corrupt":
        expected = f"cannot be read as {re.escape(FORMAT[suffix])}"
    elif expected == "truncated":
        expected = TRUNCATED[suffix]
    with pytest.raises(ALLOWED) as excinfo:
        read(path)
    _check(excinfo, path, expected)
    if fault in ("directory", "missing"):
        assert isinstance(excinfo.value, IsADirectoryError if fault == "directory" else FileNotFoundError)
    else:
        assert isinstance(excinfo.value, sio.CorruptFileError)


# ---- ROOT event trees ------------------------------------------------------------------------
def _events(**changes) -> dict:
    """Six valid events (an empty one included); ``changes`` replace branches (None removes one)."""
    branches = {
        "hit_cell": ak.Array([[0, 1], [2], [3, 4, 5], [], [6, 7], [8]]),
        "hit_energy": ak.Array([[1.0, 2.0], [3.0], [4.0, 5.0, 6.0], [], [7.0, 8.0], [9.0]]),
        "label": np.arange(6) % 3,
        "energy": np.linspace(1.0, 6.0, 6),
    }
    branches.update(changes)
    return {name: value for name, value in branches.items() if value is not None}


def _tree(**changes):
    return lambda path: write_tree(path, _events(**changes))


def _rntuple(**changes):
    """An RNTuple (uproot's `file[name] = {...}`): it holds types a TTree written by uproot cannot."""
    def make(path):
        with uproot.recreate(path) as out:
            out["events"] = _events(**changes)
    return make


def _objects(**objects):
    def make(path):
        with uproot.recreate(path) as out:
            for name, value in objects.items():
                out[name] = value
    return make


ONES = [[1.0, 1.0], [1.0], [1.0, 1.0, 1.0], [], [1.0, 1.0], [1.0]]
SHOWER_FAULTS = {
    "hit-counts-differ-in-entry-4": (
        _tree(hit_energy=ak.Array(ONES[:4] + [[1.0], [1.0]])), ValueError,
        r"entry 4 has 2 'hit_cell' and 1 'hit_energy' values; expected one cell per hit energy"),
    "hit-counts-differ-equal-totals": (
        _tree(hit_energy=ak.Array([[1.0], [1.0, 1.0]] + ONES[2:])), ValueError, r"entry 0 has 2 'hit_cell' and 1 'hit_energy'"),
    "float-hit_cell": (_tree(hit_cell=ak.Array(ONES)), TypeError, r"'hit_cell': expected integer cell indices"),
    "string-hit_cell": (_tree(hit_cell=ak.Array(["ab", "c", "def", "", "gh", "i"])), TypeError,
                        r"'hit_cell': expected a jagged array of numbers .*string"),
    "scalar-hit_cell": (_tree(hit_cell=np.arange(6)), TypeError, r"'hit_cell': expected a jagged array of numbers"),
    "fixed-size-hit_cell": (_tree(hit_cell=np.zeros((6, 2), np.int32)), TypeError, r"'hit_cell': expected a jagged array of numbers"),
    "nested-hit_cell": (_rntuple(hit_cell=ak.Array([[[0], [1]], [[2]], [[3], [4], [5]], [], [[6], [7]], [[8]]])), TypeError,
                        r"'hit_cell': expected a jagged array of numbers \(var \* number\), got type \d+ \* var \* var"),
    "bool-hit_energy": (_tree(hit_energy=ak.Array([[v > 0 for v in row] for row in ONES])), TypeError,
                        r"'hit_energy': expected numeric hit energies"),
    "string-hit_energy": (_tree(hit_energy=ak.Array(["1.", "2", "3.0", "", "4.", "5"])), TypeError,
                          r"'hit_energy': expected a jagged array of numbers"),
    "jagged-incident-energy": (_tree(energy=ak.Array([[1.0]] * 6)), TypeError, r"'energy': expected one number per entry"),
    "fixed-size-incident-energy": (_tree(energy=np.ones((6, 2))), TypeError, r"'energy': expected one number per entry"),
    "string-label": (_tree(label=ak.Array(["e", "pi", "gamma", "e", "pi", "gamma"])), TypeError, r"'label': expected one number per entry"),
    "jagged-label": (_tree(label=ak.Array([[0], [1], [2], [0], [1], [2]])), TypeError, r"'label': expected one number per entry"),
    "non-integral-label": (_tree(label=np.linspace(0.5, 3.0, 6)), TypeError, r"'label': expected integer labels"),
    "no-hit_energy-branch": (_tree(hit_energy=None), KeyError, r"no branch 'hit_energy'"),
    "events-is-a-TH1": (_objects(events=np.histogram([1.0, 2.0, 3.0])), TypeError, r"'events' is a TH1D, not a TTree"),
    "no-events-tree": (lambda path: write_tree(path, _events(), tree="showers"), KeyError, r"no tree 'events'.*'showers'"),
}
SHOWER_READERS = ("read_showers", "iterate_showers", "ShowersIterableDataset")


@pytest.mark.parametrize("fault", SHOWER_FAULTS)
@pytest.mark.parametrize("reader", SHOWER_READERS)
def test_bad_event_tree(tmp_path, reader, fault):
    make, error, phrase = SHOWER_FAULTS[fault]
    path = tmp_path / f"{fault}.root"
    make(path)
    with pytest.raises(error) as excinfo:
        READERS[reader][1](path)
    _check(excinfo, path, phrase)


ARRAY_FAULTS = {
    "string-branch": ("string-hit_cell", TypeError, r"branch 'hit_cell': expected numeric values"),
    "nested-branch": ("nested-hit_cell", TypeError, r"branch 'hit_cell': expected numbers, fixed-size arrays or jagged numbers"),
    "events-is-a-TH1": ("events-is-a-TH1", TypeError, r"'events' is a TH1D, not a TTree"),
    "no-events-tree": ("no-events-tree", KeyError, r"no tree 'events'"),
}


@pytest.mark.parametrize("fault", ARRAY_FAULTS)
def test_bad_tree_for_read_arrays(tmp_path, fault):
    shower_fault, error, phrase = ARRAY_FAULTS[fault]
    path = tmp_path / f"{fault}.root"
    SHOWER_FAULTS[shower_fault][0](path)
    with pytest.raises(error) as excinfo:
        sio.read_arrays(path)
    _check(excinfo, path, phrase)


# ---- ROOT occupancy maps and TH2 ---------------------------------------------------------------
def _maps_tree(**changes):
    """Three lumi-sections of the GRID layout as write_maps_root writes it; ``changes`` replace branches."""
    branches = {"a": np.ones((3, 4, 5), np.float32), "b": np.ones((3, 2, 3), np.float32), "lumi_section": np.arange(3)}
    branches.update(changes)
    return lambda path: write_tree(path, {k: v for k, v in branches.items() if v is not None}, tree="maps")


MAPS_FAULTS = {
    "layer-of-other-binning": (_maps_tree(a=np.ones((3, 4, 6), np.float32)), ValueError,
                               r"branches \['a', 'b'\] hold maps of \[\(4, 6\), \(2, 3\)\]; geometry 'grid' has layers \[\(4, 5\), \(2, 3\)\]"),
    "layer-transposed": (_maps_tree(b=np.ones((3, 3, 2), np.float32)), ValueError, r"hold maps of \[\(4, 5\), \(3, 2\)\]"),
    "jagged-layer": (_maps_tree(a=ak.Array([[1.0] * 20, [1.0] * 19, [1.0] * 20])), TypeError, r"branch 'a': expected a fixed-size array"),
    "one-number-per-entry": (_maps_tree(a=np.ones(3, np.float32)), TypeError, r"branch 'a': expected a fixed-size array"),
    "string-layer": (_maps_tree(b=ak.Array(["x", "y", "z"])), TypeError, r"branch 'b': expected a fixed-size array"),
    "float-lumi-sections": (_maps_tree(lumi_section=np.array([1.0, 2.0, 3.5])), TypeError,
                            r"branch 'lumi_section': expected one integer per entry"),
    "missing-layer": (_maps_tree(b=None), KeyError, r"no branch 'b'"),
    "no-maps-tree": (_tree(), KeyError, r"no tree 'maps'"),
}


@pytest.mark.parametrize("fault", MAPS_FAULTS)
def test_bad_maps_tree(tmp_path, fault):
    make, error, phrase = MAPS_FAULTS[fault]
    path = tmp_path / f"{fault}.root"
    make(path)
    with pytest.raises(error) as excinfo:
        READERS["read_maps"][1](path)
    _check(excinfo, path, phrase)


def _th2_grid(path):
    sio.write_th2(path, _maps(2, GRID.n_cells), geometry=GRID)


HISTOGRAMS = {"h1": np.histogram([1.0, 2.0]), "h3": (np.ones((2, 3, 4)), np.arange(3.0), np.arange(4.0), np.arange(5.0))}
TH2_FAULTS = {
    "mixed-binnings-all": (_th2_grid, None, ValueError, r"histograms of different binning cannot be stacked.*\(4, 5\).*\(2, 3\)"),
    "mixed-binnings-named": (_th2_grid, ["ls0_a", "ls1_b"], ValueError, r"'ls0_a': \(4, 5\), 'ls1_b': \(2, 3\)"),
    "pattern-matches-nothing": (_th2_grid, "ls*_c", KeyError, r"no TH2 histogram matching 'ls\*_c'"),
    "a-TH1": (_objects(**HISTOGRAMS), "h1", TypeError, r"'h1' is a TH1D, not a TH2"),
    "a-TH3": (_objects(**HISTOGRAMS), "h3", TypeError, r"'h3' is a TH3D, not a TH2"),
    "no-TH2-in-the-file": (_objects(**HISTOGRAMS), None, KeyError, r"no TH2 histogram '\*'"),
    "a-tree": (_tree(), "events", TypeError, r"'events' is a TTree, not a TH2"),
}


@pytest.mark.parametrize("fault", TH2_FAULTS)
def test_bad_th2(tmp_path, fault):
    make, names, error, phrase = TH2_FAULTS[fault]
    path = tmp_path / f"{fault}.root"
    make(path)
    with pytest.raises(error) as excinfo:
        sio.read_th2(path, names)
    _check(excinfo, path, phrase)


def test_tree_of_th2_of_other_binning_than_the_geometry():
    path = shared_file("root", "uproot-issue-tbranch-of-th2.root")  # one 100 x 100 TH2 per entry
    with pytest.raises(ValueError) as excinfo:
        sio.read_maps(path, tree="g4SimHits/tree", branch="histogram", geometry="calogan")
    _check(excinfo, path, r"maps of \[\(100, 100\)\] = 10000 cells do not fit geometry 'calogan' \(504 cells\)")


# ---- HDF5 and npy ----------------------------------------------------------------------------
N = 4


def _h5(base: dict, **changes):
    """An HDF5 file of ``base`` datasets; ``changes`` replace them (None removes one, "group" makes a group,
    "dangling" a soft link to nothing)."""
    def make(path):
        with h5py.File(path, "w") as out:
            for name, value in {**base, **changes}.items():
                if isinstance(value, str) and value == "group":
                    out.create_group(name)
                elif isinstance(value, str) and value == "dangling":
                    out[name] = h5py.SoftLink("/nowhere")
                elif value is not None:
                    out[name] = value
    return make


CALOGAN = {"layer_0": np.ones((N, 3, 96), np.float32), "layer_1": np.ones((N, 12, 12), np.float32),
           "layer_2": np.ones((N, 12, 6), np.float32), "energy": np.ones((N, 1))}
CALOCHALLENGE = {"showers": np.ones((N, 368), np.float32), "incident_energies": np.full((N, 1), 1000.0)}
HCAL = {f"RecHitTask_Occupancy_depth_depth{d}": np.ones((1, 72, 84), np.float32) for d in range(1, 8)}
HDF5_FAULTS = {
    "calogan-missing-layer_1": (sio.read_calogan, _h5(CALOGAN, layer_1=None), KeyError, r"no dataset 'layer_1'"),
    "calogan-missing-energy": (sio.read_calogan, _h5(CALOGAN, energy=None), KeyError, r"no dataset 'energy'"),
    "calogan-layer_2-mis-shaped": (sio.read_calogan, _h5(CALOGAN, layer_2=np.ones((N, 12, 7))), ValueError,
                                   r"dataset 'layer_2' must be layer_2 energies \(MeV\) of shape \(4, 12, 6\), got float64 \(4, 12, 7\)"),
    "calogan-layer_1-fewer-events": (sio.read_calogan, _h5(CALOGAN, layer_1=np.ones((N - 1, 12, 12))), ValueError,
                                     r"'layer_1' must be .* of shape \(4, 12, 12\), got float64 \(3, 12, 12\)"),
    "calogan-layer_0-flat": (sio.read_calogan, _h5(CALOGAN, layer_0=np.ones((N, 288))), ValueError, r"'layer_0' must be .* of shape \(N, 3, 96\)"),
    "calogan-layer_0-strings": (sio.read_calogan, _h5(CALOGAN, layer_0=np.full((N, 3, 96), b"1.0")), ValueError,
                                r"'layer_0' must be layer_0 energies \(MeV\) of shape \(N, 3, 96\), got \|S3"),
    "calogan-layer_0-a-group": (sio.read_calogan, _h5(CALOGAN, layer_0="group"), TypeError, r"'layer_0' is a Group, expected a dataset"),
    "calogan-layer_0-dangling-link": (sio.read_calogan, _h5(CALOGAN, layer_0="dangling"), OSError, r"cannot open dataset 'layer_0'"),
    "calogan-energy-too-short": (sio.read_calogan, _h5(CALOGAN, energy=np.ones((N - 1, 1))), ValueError,
                                 r"'energy' must be incident energies \(GeV\) of shape \(4, 1\), got float64 \(3, 1\)"),
    "calogan-flat-energy-too-long": (sio.read_calogan, _h5(CALOGAN, energy=np.ones(N + 1)), ValueError,
                                     r"'energy' must be .* of shape \(4, 1\), got float64 \(5,\)"),
    "calogan-label-too-short": (sio.read_calogan, _h5(CALOGAN, label=np.zeros(N - 1, np.int64)), ValueError,
                                r"'label' must be integer labels of shape \(4,\)"),
    "calochallenge-missing-showers": (sio.read_calochallenge, _h5(CALOCHALLENGE, showers=None), KeyError, r"no dataset 'showers'"),
    "calochallenge-missing-incident_energies": (sio.read_calochallenge, _h5(CALOCHALLENGE, incident_energies=None), KeyError,
                                                r"no dataset 'incident_energies'"),
    "calochallenge-unknown-voxel-count": (sio.read_calochallenge, _h5(CALOCHALLENGE, showers=np.ones((N, 367))), ValueError,
                                          r"cannot infer the CaloChallenge geometry from 367 voxels"),
    "calochallenge-voxels-not-the-geometry": (
        lambda p: sio.read_calochallenge(p, geometry="calochallenge-ds1-pions"), _h5(CALOCHALLENGE), ValueError,
        r"'showers' has 368 voxels, geometry 'calochallenge-ds1-pions' has 533"),
    "calochallenge-showers-3d": (sio.read_calochallenge, _h5(CALOCHALLENGE, showers=np.ones((N, 8, 46))), ValueError,
                                 r"'showers' must be voxel energies \(MeV\) of shape \(N, voxels\), got float64 \(4, 8, 46\)"),
    "calochallenge-incident-too-short": (sio.read_calochallenge, _h5(CALOCHALLENGE, incident_energies=np.ones((N - 1, 1))), ValueError,
                                         r"'incident_energies' must be incident energies \(MeV\) of shape \(4, 1\)"),
    "calochallenge-showers-a-group": (sio.read_calochallenge, _h5(CALOCHALLENGE, showers="group"), TypeError, r"'showers' is a Group"),
    "hcal-missing-depth3": (sio.read_hcal_dqm, _h5(HCAL, RecHitTask_Occupancy_depth_depth3=None), KeyError,
                            r"no dataset 'RecHitTask_Occupancy_depth_depth3'"),
    "hcal-depth2-mis-shaped": (sio.read_hcal_dqm, _h5(HCAL, RecHitTask_Occupancy_depth_depth2=np.ones((1, 72, 83))), ValueError,
                               r"'RecHitTask_Occupancy_depth_depth2' must be occupancies .* of shape \(1, 72, 84\)"),
    "hcal-depth5-other-lumi-sections": (sio.read_hcal_dqm, _h5(HCAL, RecHitTask_Occupancy_depth_depth5=np.ones((2, 72, 84))), ValueError,
                                        r"'RecHitTask_Occupancy_depth_depth5' must be .* of shape \(1, 72, 84\), got float64 \(2, 72, 84\)"),
    "hcal-only-the-other-task": (sio.read_hcal_dqm, _h5({k.replace("RecHit", "Digi"): v for k, v in HCAL.items()}), KeyError,
                                 r"no dataset 'RecHitTask_Occupancy_depth_depth1'; did you mean 'DigiTask_Occupancy_depth_depth1'"),
}


@pytest.mark.parametrize("fault", HDF5_FAULTS)
def test_bad_hdf5(tmp_path, fault):
    read, make, error, phrase = HDF5_FAULTS[fault]
    path = tmp_path / f"{fault}.h5"
    make(path)
    with pytest.raises(error) as excinfo:
        read(path)
    _check(excinfo, path, phrase)


def _npy(array, **kwargs):
    return lambda path: path.write_bytes(_npy_bytes(array, **kwargs))


def _npy_bytes(array, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=allow_pickle)  # np.save, unpatched
    return buffer.getvalue()


def _npz(path):
    buffer = io.BytesIO()
    np.savez(buffer, maps=np.ones((2, 8, 9)))
    path.write_bytes(buffer.getvalue())


NPY_FAULTS = {
    "one-dimensional": (_npy(np.ones(10)), ValueError, r"expected numeric maps of shape \(LS, rows, cols\) or \(LS, n_cells\), got float64 \(10,\)"),
    "four-dimensional": (_npy(np.ones((2, 3, 4, 5))), ValueError, r"expected numeric maps of shape .* \(2, 3, 4, 5\)"),
    "strings": (_npy(np.full((2, 3, 4), "x")), ValueError, r"expected numeric maps .* got <U1"),
    "objects": (_npy(np.array([[None]] * 2, dtype=object), allow_pickle=True), OSError, r"cannot be read as a \.npy array .*allow_pickle"),
    "flat-without-geometry": (_npy(np.ones((2, 72))), ValueError, r"\(LS, n_cells\) = \(2, 72\) maps need geometry="),
    "an-npz-archive": (_npz, OSError, r"is a \.npz archive \(arrays \['maps'\]\), expected one \.npy array"),
}


@pytest.mark.parametrize("fault", NPY_FAULTS)
def test_bad_npy(tmp_path, fault):
    make, error, phrase = NPY_FAULTS[fault]
    path = tmp_path / f"{fault}.npy"
    make(path)
    with pytest.raises(error) as excinfo:
        sio.read_npy_maps(path)
    _check(excinfo, path, phrase)


# ---- writers: a failure midway leaves neither the destination nor a temporary file ------------
SHOWERS = random_showers(10)
MAPS = _maps(10, GRID.n_cells)
WRITERS = {
    "write_showers_root": ("x.root", lambda p: sio.write_showers_root(p, *SHOWERS)),
    "write_results_root": ("x.root", lambda p: sio.write_results_root(p, {"score": torch.linspace(0, 1, 10)})),
    "write_maps_root": ("x.root", lambda p: sio.write_maps_root(p, MAPS, geometry=GRID)),
    "write_th2": ("x.root", lambda p: sio.write_th2(p, MAPS, geometry=GRID)),
    "write_calogan": ("x.h5", lambda p: sio.write_calogan(p, SHOWERS[0], SHOWERS[2], labels=SHOWERS[1])),
    "write_calochallenge": ("x.h5", lambda p: sio.write_calochallenge(p, random_showers(10, 368)[0], SHOWERS[2])),
    "write_hcal_dqm": ("x.h5", lambda p: sio.write_hcal_dqm(p, _maps(2, 7 * 72 * 84))),
    "write_npy_maps": ("x.npy", lambda p: sio.write_npy_maps(p, MAPS)),
}
OLD = b"the previous, complete file\n"


def _fail_midway(monkeypatch, writer: str, folder, error: BaseException) -> list:
    """Make the writer's second write call raise ``error`` after the first wrote its part (np.save: after 100
    bytes); returns the calls seen, each the folder's files at that moment."""
    calls = []
    if writer == "write_npy_maps":
        def fake(out, array, **kwargs):
            out.write(_npy_bytes(array)[:100])
            out.flush()
            calls.append(sorted(p.name for p in folder.iterdir()))
            raise error
        monkeypatch.setattr(np, "save", fake)
        return calls
    if writer in ("write_showers_root", "write_results_root", "write_maps_root"):
        monkeypatch.setattr(root_module, "_BASKET_ENTRIES", 4)  # 10 entries: three baskets
        owner, name = uproot.writing.writable.WritableTree, "extend"
    elif writer == "write_th2":
        owner, name = uproot.writing.writable.WritableDirectory, "__setitem__"
    else:
        owner, name = h5py.Group, "create_dataset"
    original = getattr(owner, name)

    def fake(*args, **kwargs):
        calls.append(sorted(p.name for p in folder.iterdir()))
        if len(calls) == 2:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, fake)
    return calls


@pytest.mark.parametrize("error", [OSError("No space left on device"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_failing_midway_leaves_nothing(tmp_path, monkeypatch, writer, existing, error):
    name, write = WRITERS[writer]
    destination = tmp_path / name
    if existing:
        destination.write_bytes(OLD)
    calls = _fail_midway(monkeypatch, writer, tmp_path, error)
    with pytest.raises(type(error)):
        write(destination)
    assert len(calls) == (1 if writer == "write_npy_maps" else 2)
    during = [f for f in calls[-1] if f != name]
    assert len(during) == 1 and re.fullmatch(rf"\.{re.escape(name)}\..+\.tmp", during[0])  # the half-written file
    assert sorted(p.name for p in tmp_path.iterdir()) == ([name] if existing else [])
    if existing:
        assert destination.read_bytes() == OLD


BAD_ARGUMENTS = {
    "showers-labels-too-short": ("x.root", lambda p: sio.write_showers_root(p, SHOWERS[0], SHOWERS[1][:9], SHOWERS[2]),
                                 r"labels must be \(10,\) integers"),
    "showers-energy-too-long": ("x.root", lambda p: sio.write_showers_root(p, SHOWERS[0], SHOWERS[1], torch.ones(11)),
                                r"energy must be \(10,\) numbers"),
    "results-lengths-differ": ("x.root", lambda p: sio.write_results_root(p, {"a": torch.zeros(3), "b": torch.zeros(4)}),
                               r"same number of entries"),
    "maps-labels-float": ("x.root", lambda p: sio.write_maps_root(p, MAPS, geometry=GRID, labels=torch.ones(10)),
                          r"labels must be \(10,\) integers"),
    "th2-other-cell-count": ("x.root", lambda p: sio.write_th2(p, MAPS[:, :-1], geometry=GRID), r"maps must be numbers \(LS, 26\)"),
    "calogan-overflow-mis-shaped": ("x.h5", lambda p: sio.write_calogan(p, SHOWERS[0], SHOWERS[2], overflow=np.zeros((10, 2))),
                                    r"overflow must be \(10, 3\)"),
    "calochallenge-unknown-voxels": ("x.h5", lambda p: sio.write_calochallenge(p, torch.ones(2, 367), torch.ones(2)),
                                     r"367 voxels is no CaloChallenge dataset"),
    "hcal-other-cell-count": ("x.h5", lambda p: sio.write_hcal_dqm(p, np.zeros((2, 5))), r"maps must be numbers \(LS, 42336\)"),
    "npy-one-dimensional": ("x.npy", lambda p: sio.write_npy_maps(p, np.zeros(5)), r"expected numeric \(LS, rows, cols\)"),
}


@pytest.mark.parametrize("case", BAD_ARGUMENTS)
def test_a_writer_refusing_its_input_keeps_the_old_file(tmp_path, case):
    name, write, phrase = BAD_ARGUMENTS[case]
    destination = tmp_path / name
    destination.write_bytes(OLD)
    with pytest.raises(ValueError, match=phrase):
        write(destination)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name] and destination.read_bytes() == OLD


# ---- streaming a file larger than the memory budget ----------------------------------------
BUDGET_MB = 64
EVENTS, HITS, STEP_EVENTS = 130_000, 40, 500  # images alone: 130,000 x 504 x 4 B = 262 MB, > 4 x the budget

PEAK_SCRIPT = textwrap.dedent("""
    import sys
    import sim2real_fast.io as sio

    def status_mb(key):  # VmHWM: this process's peak RSS (ru_maxrss keeps the parent's RSS at fork across exec)
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(key + ":")) / 1024

    path, warm, mode, step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    list(sio.iterate_showers(warm, step_size=step))  # imports uproot/awkward, loads the kernel
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # peak RSS := RSS now; where refused, the import peak counts too (an overestimate)
    except OSError:
        pass
    base = status_mb("VmRSS")
    if mode == "iterate":
        n, total = 0, 0.0
        for batch in sio.iterate_showers(path, step_size=step):
            n, total = n + len(batch), total + batch.images.sum().item()
    else:
        showers = sio.read_showers(path, step_size=step)
        n, total = len(showers), 0.0
    print(n, total, status_mb("VmHWM") - base)
""")


def _write_big_file(path, n: int, hits: int) -> float:
    """``n`` events of ``hits`` hits each (uncompressed, written in chunks with uproot); returns the total MeV."""
    rng = np.random.default_rng(0)
    total = 0.0
    with uproot.recreate(path, compression=None) as out:
        tree = out.mktree("events", {"hit_cell": "var * int32", "hit_energy": "var * float32", "label": np.int64, "energy": np.float64})
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            energies = rng.random(m * hits, dtype=np.float32) * 100
            total += energies.sum(dtype=np.float64)
            counts = np.full(m, hits)
            tree.extend({"hit_cell": ak.unflatten(rng.integers(0, 504, m * hits, dtype=np.int32), counts),
                         "hit_energy": ak.unflatten(energies, counts), "label": np.zeros(m, np.int64), "energy": np.ones(m)})
    return total


def _peak_growth(path, warm, mode: str) -> tuple[int, float, float]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), str(warm), mode, str(STEP_EVENTS)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    n, total, growth = run.stdout.split()
    return int(n), float(total), float(growth)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_a_file_four_times_the_budget_stays_within_it(tmp_path):
    """Peak RSS growth in a fresh process. Much of it is glibc's heap fragmentation (torch's images interleave with
    uproot's buffers): ~27 MB at 500 events a step, 120-150 MB at 5000 (10 and 36 MB with MALLOC_MMAP_THRESHOLD_=131072)."""
    big, warm = tmp_path / "big.root", tmp_path / "warm.root"
    total = _write_big_file(big, EVENTS, HITS)
    _write_big_file(warm, 10, HITS)
    n, streamed_total, growth = _peak_growth(big, warm, "iterate")
    n_all, _, whole = _peak_growth(big, warm, "read")
    print(f"budget {BUDGET_MB} MB; file {big.stat().st_size / 2**20:.0f} MB on disk, {EVENTS * 504 * 4 / 2**20:.0f} MB of images; "
          f"peak growth: iterate_showers(step_size={STEP_EVENTS}) {growth:.0f} MB, read_showers {whole:.0f} MB")
    assert n == n_all == EVENTS and streamed_total == pytest.approx(total, rel=1e-5)
    assert whole > 4 * BUDGET_MB  # the file does not fit the budget when read at once
    assert growth < BUDGET_MB


def test_a_memory_step_bounds_the_decoded_images(tmp_path):
    """step_size="1 MB" counts each event's dense image (calogan: 504 cells x 4 B, twice) with its hits."""
    n, geometry = 3000, sgeometry.get("calogan")
    torch.manual_seed(0)
    images = torch.zeros(n, geometry.n_cells)
    images[:, :20] = torch.rand(n, 20) * 100
    path = tmp_path / "showers.root"
    sio.write_showers_root(path, images, torch.zeros(n, dtype=torch.long), torch.full((n,), 10.0), geometry=geometry)
    batches = list(sio.iterate_showers(path, step_size="1 MB"))
    largest = 1024**2 // (2 * 4 * geometry.n_cells)
    assert sum(len(b.images) for b in batches) == n and len(batches) > 1
    assert max(len(b.images) for b in batches) <= largest
    torch.testing.assert_close(torch.cat([b.images for b in batches]), images)
    with pytest.raises(ValueError, match="step_size"):
        list(sio.iterate_showers(path, step_size="lots"))
