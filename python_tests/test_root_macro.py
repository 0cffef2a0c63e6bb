"""examples/root_macro: classify.C, run by `root -b -q`, scores a ROOT event tree with an exported TorchScript model
through libs2r_infer.so (libtorch) and gives the Python model's probabilities; bad inputs end in one error line
naming the file. Skipped without the `root` executable, a C++ compiler or make."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

from helpers import one_thread, perturb  # noqa: F401  (one_thread: an autouse fixture)
from sim2real_fast import io, simulate
from sim2real_fast.export import export_model
from sim2real_fast.models import CaloCNN

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # torch >= 2.13

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "root_macro"
VENV_ROOT = Path(sys.executable).with_name("root")  # the ROOT wheel's launcher, found without an activated venv
ROOT_EXE = str(VENV_ROOT) if VENV_ROOT.exists() else shutil.which("root")
CXX = shutil.which((shlex.split(os.environ.get("CXX", "")) or ["c++"])[0])
if ROOT_EXE is None:
    pytest.skip("no `root` executable (pip install 'sim2real_fast[root]')", allow_module_level=True)
if CXX is None or shutil.which("make") is None:
    pytest.skip("no C++ compiler (c++ or $CXX) or no make to build libs2r_infer.so", allow_module_level=True)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """libs2r_infer.so built by the example's Makefile against this Python's torch."""
    build = tmp_path_factory.mktemp("root_macro_build")
    made = subprocess.run(["make", "-s", "-C", str(EXAMPLE), f"PYTHON={sys.executable}", f"BUILD={build}"],
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-4000:]
    return build / "libs2r_infer.so"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An untrained CaloCNN with weights perturbed enough that it predicts more than one class, and its export."""
    torch.manual_seed(0)
    network = CaloCNN()
    perturb(network, seed=3, std=0.2)
    path = export_model(network.eval(), torch.rand(4, 504) * 100, tmp_path_factory.mktemp("model"), name="calo",
                        formats=("torchscript",))["torchscript"]
    return network, path


def classify(library, model_path, events, out, *options):
    """`root -b -q classify.C(...)` with one libtorch thread; options: tree, n_cells, branches, batch size."""
    args = ", ".join(f'"{a}"' if isinstance(a, (str, Path)) else str(a) for a in (model_path, events, out, *options))
    env = {**os.environ, "S2R_INFER_LIB": str(library), "OMP_NUM_THREADS": "1"}
    return subprocess.run([ROOT_EXE, "-b", "-q", "-l", f"{EXAMPLE / 'classify.C'}({args})"], capture_output=True,
                          text=True, env=env, timeout=300)


def probabilities(network, images):
    with torch.no_grad():
        return torch.softmax(network(torch.as_tensor(images, dtype=torch.float32)), 1).numpy()


def written(out):
    with uproot.open(out) as file:
        tree = file["results"]
        return (tree["calo_score"].array(library="np"), tree["calo_pred"].array(library="np"),
                file["calo_pred"].values())


def test_scores_of_a_run_events_file_equal_the_python_model(library, model, tmp_path):
    """Events as `sim2real run` reads them (write_showers_root): per event the eager model's probabilities within
    1e-5 and its argmax, in the tree's order, and the histogram of predicted classes."""
    network, path = model
    showers = simulate.showers(48, seed=5, effects="realistic")
    io.write_showers_root(tmp_path / "real.root", showers.images, showers.labels, showers.energy)
    result = classify(library, path, tmp_path / "real.root", tmp_path / "scores.root")
    assert result.returncode == 0, result.stderr
    assert "48 events" in result.stdout
    scores, pred, histogram = written(tmp_path / "scores.root")
    expected = probabilities(network, io.read_showers(tmp_path / "real.root").images)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(scores, torch.jit.load(str(path))(showers.images).detach().numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(pred, expected.argmax(1))
    assert len(set(pred.tolist())) > 1  # the check sees the order of events and classes
    np.testing.assert_array_equal(histogram, np.bincount(expected.argmax(1), minlength=3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.root", "scores.root"]  # no temporary file left


def test_any_tree_and_branch_types_repeated_cells_and_batches(library, model, tmp_path):
    """A tree of the user's own: other names, int64 cells, float64 energies, unsorted and repeated cells (they add
    up), an event without hits, and batches of 4 with a partial last one."""
    network, path = model
    generator = np.random.default_rng(0)
    cells, energies = [], []
    for n_hits in [30, 0, 200, 7, 120, 60, 400, 3, 90, 250, 1]:
        cells.append(generator.integers(0, 504, n_hits))
        energies.append(generator.exponential(200.0, n_hits))
    with uproot.recreate(tmp_path / "own.root") as file:
        file.mktree("showers", {"cell": "var * int64", "e": "var * float64"}).extend(
            {"cell": ak.Array(cells), "e": ak.Array(energies)})
    images = np.zeros((len(cells), 504))
    for k, (c, e) in enumerate(zip(cells, energies)):
        np.add.at(images[k], c, e)
    result = classify(library, path, tmp_path / "own.root", tmp_path / "scores.root", "showers", 504, "cell", "e", 4)
    assert result.returncode == 0, result.stderr
    scores, pred, _ = written(tmp_path / "scores.root")
    expected = probabilities(network, images)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(pred, expected.argmax(1))


BAD_INPUTS = {  # case: what its error line says
    "missing model": "missing.pt: model file not found",
    "wrong n_cells": "calo.pt: does not take (N, 500) float32 cell energies",
    "missing branch": "events.root, tree 'events': no branch 'cells' (branches: nhit, hit_cell, hit_energy",
    "cell outside": "events.root, tree 'events': entry 1 has hit_cell 504 outside [0, 504)",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_error_line_naming_the_file(library, model, tmp_path, case):
    """Exit status 1, one error line, and the output file untouched (it is only replaced when complete)."""
    _, path = model
    hits = ak.zip({"cell": [[0, 3], [5, 504], [7]], "energy": [[1.0, 2.0], [3.0, 4.0], [5.0]]})
    with uproot.recreate(tmp_path / "events.root") as file:  # branches nhit, hit_cell[nhit], hit_energy[nhit]
        file.mktree("events", {"hit": hits.type.content}).extend({"hit": hits})
    (tmp_path / "scores.root").write_bytes(b"previous results")
    options = {"wrong n_cells": ("events", 500), "missing branch": ("events", 504, "cells")}.get(case, ())
    model_path = tmp_path / "missing.pt" if case == "missing model" else path
    result = classify(library, model_path, tmp_path / "events.root", tmp_path / "scores.root", *options)
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1 and errors[0].startswith("Error in <classify>: "), result.stderr
    assert BAD_INPUTS[case] in errors[0]
    assert (tmp_path / "scores.root").read_bytes() == b"previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.root", "scores.root"]
