"""Occupancy-map writers: a tree of per-layer arrays and TH2 per lumi-section, read back identically."""

import numpy as np
import pytest
import torch

from sim2real_fast import geometry as geo
from sim2real_fast import io

from io_data import shared_file


def _maps(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 42336) HCAL-like occupancies: integer counts, mostly zeros."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.poisson(torch.full((n, geo.get("hcal").n_cells), 3.0), generator=g)
    return torch.where(torch.rand(counts.shape, generator=g) < 0.7, 0.0, counts)


def test_maps_tree_round_trip(tmp_path):
    maps = _maps(5)
    labels = torch.tensor([0, 1, 0, 3, 2])
    path = tmp_path / "dqm.root"
    io.write_maps_root(path, maps, geometry="hcal", lumi_sections=torch.arange(101, 106), labels=labels)
    back = io.read_maps(path, tree="maps", geometry="hcal", lumi_section_branch="lumi_section")
    assert back.geometry.name == "hcal" and back.names == tuple(f"depth{d}" for d in range(1, 8))
    assert torch.equal(back.maps, maps) and torch.equal(back.lumi_sections, torch.arange(101, 106))
    assert torch.equal(io.read_arrays(path, ["label"], tree="maps")["label"], labels)
    # Without a geometry: one layer per branch, named after it.
    two = io.read_maps(path, tree="maps", branch=["depth1", "depth2"])
    assert two.geometry.layer_shapes == ((72, 84), (72, 84))
    assert torch.equal(two.maps, maps[:, : 2 * 72 * 84])


def test_occupancy_maps_object_and_real_hcal_file_round_trip(tmp_path):
    hcal = io.read_hcal_dqm(shared_file("hcal", "hcal_dqm_run306138_10ls.hdf5"))
    io.write_maps_root(tmp_path / "hcal.root", hcal)
    back = io.read_maps(tmp_path / "hcal.root", tree="maps", geometry="hcal", lumi_section_branch="lumi_section")
    assert torch.equal(back.maps, hcal.maps) and torch.equal(back.lumi_sections, hcal.lumi_sections)


def test_th2_per_lumi_section_round_trip(tmp_path):
    maps = _maps(3, seed=1)
    path = tmp_path / "dqm_th2.root"
    io.write_th2(path, maps, geometry="hcal", lumi_sections=[7, 8, 9])
    layers = geo.get("hcal").split_layers(maps)
    for d in (1, 5):
        histograms = io.read_th2(path, f"ls*_depth{d}")
        assert histograms.names == (f"ls7_depth{d}", f"ls8_depth{d}", f"ls9_depth{d}")
        assert torch.equal(histograms.values, layers[d - 1])
        assert torch.equal(histograms.x_edges, torch.arange(85, dtype=torch.float64).expand(3, -1))  # per histogram
        assert torch.equal(histograms.y_edges, torch.arange(73, dtype=torch.float64).expand(3, -1))


def test_map_writers_check_their_input(tmp_path):
    with pytest.raises(TypeError, match="need geometry="):
        io.write_maps_root(tmp_path / "a.root", np.zeros((2, 10)))
    with pytest.raises(ValueError, match=r"maps must be numbers \(LS, 42336\)"):
        io.write_th2(tmp_path / "b.root", np.zeros((2, 10)), geometry="hcal")
    with pytest.raises(ValueError, match=r"labels must be \(2,\) integers"):
        io.write_maps_root(tmp_path / "c.root", _maps(2), geometry="hcal", labels=[0.5, 1.5])
    assert not any(tmp_path.iterdir())
    io.write_maps_root(tmp_path / "d.root", _maps(2), geometry="hcal")
    with pytest.raises(ValueError, match="hold maps of"):
        io.read_maps(tmp_path / "d.root", tree="maps", branch=["depth1", "depth2"], geometry="calogan")
    with pytest.raises(ValueError, match="give branch="):
        io.read_maps(tmp_path / "d.root", tree="maps")


def test_hcal_dqm_hdf5_round_trip(tmp_path):
    maps, labels = _maps(4, seed=2), torch.tensor([0, 2, 1, 0])
    io.write_hcal_dqm(tmp_path / "dqm.h5", maps, task="DigiTask", labels=labels)
    back = io.read_hcal_dqm(tmp_path / "dqm.h5", task="DigiTask")
    assert torch.equal(back.maps, maps) and back.geometry.name == "hcal"
    import h5py

    with h5py.File(tmp_path / "dqm.h5") as handle:
        assert handle["DigiTask_Occupancy_depth_depth3"].shape == (4, 72, 84)
        assert handle["label"][:].tolist() == [0, 2, 1, 0]
    with pytest.raises(ValueError, match=r"maps must be numbers \(LS, 42336\)"):
        io.write_hcal_dqm(tmp_path / "bad.h5", np.zeros((2, 5)))
