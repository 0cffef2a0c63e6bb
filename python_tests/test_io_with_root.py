"""Files written by sim2real_fast.io opened by ROOT itself (PyROOT): skipped where ROOT is not installed.

Install ROOT into the test environment to run them, e.g. ``pip install --pre ROOT`` (PyPI) or conda-forge.
"""

import pytest
import torch

from sim2real_fast import io

from io_data import random_showers

ROOT = pytest.importorskip("ROOT")


def test_event_tree_and_friend_results_tree_in_root(tmp_path):
    images, labels, energy = random_showers(7, seed=3)
    io.write_showers_root(tmp_path / "events.root", images, labels, energy)
    score = torch.linspace(0.0, 1.0, 7)
    io.write_results_root(tmp_path / "results.root", {"score": score, "prediction": labels.flip(0)})

    events_file = ROOT.TFile.Open(str(tmp_path / "events.root"))
    events = events_file.Get("events")
    assert events.ClassName() == "TTree" and events.GetEntries() == 7
    events.AddFriend("results", str(tmp_path / "results.root"))
    for i, entry in enumerate(events):
        cells, hits = list(entry.hit_cell), list(entry.hit_energy)
        assert entry.nhit == len(cells) == int((images[i] != 0).sum())
        dense = torch.zeros(504)
        dense[torch.tensor(cells, dtype=torch.long)] = torch.tensor(hits, dtype=torch.float32)
        torch.testing.assert_close(dense, images[i])
        assert entry.label == labels[i] and entry.energy == pytest.approx(float(energy[i]))
        assert entry.score == pytest.approx(float(score[i])) and entry.prediction == labels[6 - i]
