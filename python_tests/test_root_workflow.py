"""ROOT workflows on the package's outputs (PyROOT; skipped where ROOT is not installed: the `root` extra)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real_fast import io, simulate

ROOT = pytest.importorskip("ROOT")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rdataframe_friend_selection_matches_numpy(tmp_path):
    """predictions.root as `sim2real run` writes it, friend of the events tree: RDataFrame's selection and
    histogram equal the same selection done on the arrays."""
    n = 400
    showers = simulate.showers(n, seed=3, effects="realistic")
    io.write_showers_root(tmp_path / "real.root", showers.images, showers.labels, showers.energy)
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(n, 3, generator=generator), 1)
    split = torch.randint(0, 2, (n,), generator=generator)
    io.write_results_root(tmp_path / "predictions.root", {"split": split, "dann_pred": probs.argmax(1).int(),
                                                          "dann_score": probs})
    kept = _example("rdataframe_selection").select(
        str(tmp_path / "real.root"), str(tmp_path / "predictions.root"), method="dann", label=2, threshold=0.4,
        out=str(tmp_path / "selected.root"))
    expected = (split == 1) & (probs[:, 2] > 0.4)
    assert kept == int(expected.sum()) > 0
    written = ROOT.TFile.Open(str(tmp_path / "selected.root"))  # owns the histogram: keep it open
    histogram = written.Get("energy")
    counts = np.array([histogram.GetBinContent(i) for i in range(1, 51)])
    written.Close()
    reference, _ = np.histogram(showers.energy[expected].numpy(), bins=50, range=(0.0, 100.0))
    np.testing.assert_array_equal(counts, reference)
