"""sim2real_fast.io on real ROOT files (../shared/data/root, from scikit-hep-testdata; skipped when absent) and on the TTree/RNTuple layouts uproot writes."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

import sim2real_fast as s2r
from io_data import shared_file, write_tree
from sim2real_fast import io as sio
from sim2real_fast.geometry import Geometry, Layer


def test_th2_hepdata_example():
    path = shared_file("root", "uproot-hepdata-example.root")
    histograms = sio.read_th2(path)
    assert histograms.names == ("hpxpy",) and histograms.values.shape == (1, 40, 40)
    expected = uproot.open(path)["hpxpy"].values(flow=False)  # [x, y]
    assert torch.equal(histograms.values[0], torch.from_numpy(expected.T.copy()))  # rows = y bins
    assert histograms.x_edges.shape == (1, 41) and histograms.x_edges[0, 0].item() == pytest.approx(-4.0)
    with pytest.raises(TypeError, match="'hpx' is a TH1F, not a TH2"):
        sio.read_th2(path, ["hpx"])


def test_th2_names_lists_and_patterns():
    path = shared_file("root", "uproot-issue213.root")
    chosen = sio.read_th2(path, ["gen_hits_xy_pos", "gen_XY", "gen_XZ", "gen_YZ"])
    assert chosen.names == ("gen_hits_xy_pos", "gen_XY", "gen_XZ", "gen_YZ") and chosen.values.shape == (4, 121, 121)
    pattern = sio.read_th2(path, "gen_prompt_*")
    assert pattern.names == ("gen_prompt_XY", "gen_prompt_XZ", "gen_prompt_YZ")
    assert len(sio.read_th2(path).names) == 7
    single = sio.read_th2(path, "gen_hits_xy_pos")
    assert torch.equal(single.values[0], chosen.values[0]) and single.values.sum() > 0
    with pytest.raises(KeyError, match="no TH2 histogram 'gen_xy'; did you mean 'gen_XY'"):
        sio.read_th2(path, ["gen_xy"])
    with pytest.raises(KeyError, match="no TH2 histogram matching 'reco_\\*'"):
        sio.read_th2(path, "reco_*")


def test_tree_of_th2_branch_as_maps():
    path = shared_file("root", "uproot-issue-tbranch-of-th2.root")
    maps = sio.read_maps(path, tree="g4SimHits/tree", branch="histogram")
    direct = sio.read_th2(path, "g4SimHits/h")
    assert maps.maps.shape == (1, 100 * 100) and maps.geometry.layer_shapes == ((100, 100),)
    assert torch.equal(maps.layers()[0], direct.values)
    assert maps.maps.sum().item() == pytest.approx(39210.28, rel=1e-6)


def test_rntuple_event_data(tmp_path):
    """uproot writes an RNTuple for `file[name] = {...}`; it reads like a TTree."""
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as out:
        out["events"] = {"hit_cell": ak.Array([[1, 2], [3]]), "hit_energy": ak.Array([[1.0, 2.0], [3.0]]),
                         "label": np.array([0, 1]), "energy": np.array([1.0, 2.0])}
    assert uproot.open(path).classnames()["events;1"] == "ROOT::RNTuple"
    showers = sio.read_showers(path, step_size=1)
    assert showers.images[:, :4].tolist() == [[0, 1, 2, 0], [0, 0, 0, 3]] and showers.labels.tolist() == [0, 1]


def test_tree_of_fixed_size_arrays_as_maps(tmp_path):
    occupancy = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    path = tmp_path / "dqm.root"
    write_tree(path, {"occupancy": occupancy, "ls": np.array([11, 12, 13], np.int32)}, tree="lumi")
    maps = sio.read_maps(path, tree="lumi", branch="occupancy", lumi_section_branch="ls")
    assert torch.equal(maps.layers()[0], torch.from_numpy(occupancy)) and maps.lumi_sections.tolist() == [11, 12, 13]
    with pytest.raises(ValueError, match="do not fit geometry 'hcal'"):
        sio.read_maps(path, tree="lumi", branch="occupancy", geometry="hcal")
    with pytest.raises(TypeError, match="expected a fixed-size array"):
        sio.read_maps(path, tree="lumi", branch="ls")


@pytest.fixture(scope="module")
def hzz_arrays():
    names = ["Jet_Px", "Muon_E", "Muon_Charge", "NMuon", "MET_px"]
    return {
        compression: sio.read_arrays(shared_file("root", f"uproot-HZZ{compression}.root"), names)
        for compression in ("", "-zstd", "-lz4")
    }


def test_jagged_reader_on_compressed_files(hzz_arrays):
    plain = hzz_arrays[""]
    assert isinstance(plain["Jet_Px"], sio.Jagged) and plain["MET_px"].shape == (2421,)
    for compression in ("-zstd", "-lz4"):
        for name, value in hzz_arrays[compression].items():
            if isinstance(value, sio.Jagged):
                assert torch.equal(value.offsets, plain[name].offsets) and torch.equal(value.values, plain[name].values), (compression, name)
            else:
                assert torch.equal(value, plain[name]), (compression, name)
    muons = plain["Muon_E"]
    assert torch.equal(muons.offsets.diff(), plain["NMuon"].long())
    # jagged branches straight into the kernel: muon energy per charge (cell 0: mu-, cell 2: mu+)
    charge = plain["Muon_Charge"]
    images = s2r.hits_to_image(charge.offsets, charge.values + 1, muons.values, n_cells=3)
    assert images.shape == (2421, 3) and (images[:, 1] == 0).all()
    total = torch.zeros(2421).index_add_(0, torch.repeat_interleave(torch.arange(2421), muons.offsets.diff()), muons.values)
    torch.testing.assert_close(images.sum(1), total)


def test_read_showers_on_real_jagged_branches_and_out_of_range_cells():
    """NanoAOD: jets binned by their integer jetId (cells 0-7), jet pT as 'energy'."""
    path = shared_file("root", "nanoAOD_2015_CMS_Open_Data_ttbar.root")
    jet_id = Geometry("jet-id", (Layer("jetId", 1, 8),))
    options = dict(tree="Events", geometry=jet_id, cell_branch="Jet_jetId", energy_branch="Jet_pt",
                   label_branch=None, incident_energy_branch=None)
    showers = sio.read_showers(path, **options)
    jets = uproot.open(path)["Events"].arrays(["Jet_jetId", "Jet_pt"])
    assert showers.images.shape == (200, 8)
    torch.testing.assert_close(showers.images.sum(1), torch.from_numpy(ak.to_numpy(ak.sum(jets.Jet_pt, axis=1))).float())
    torch.testing.assert_close(showers.images[:, 6].sum(), torch.tensor(float(ak.sum(jets.Jet_pt[jets.Jet_jetId == 6]))))
    streamed = sio.Showers.cat(list(sio.iterate_showers(path, step_size=37, **options)))
    assert torch.equal(streamed.images, showers.images)
    with pytest.raises(IndexError, match=r"nanoAOD.*out of range"):
        sio.read_showers(path, **{**options, "geometry": Geometry("small", (Layer("jetId", 1, 3),))})


def test_hzz_branch_errors():
    path = shared_file("root", "uproot-HZZ.root")
    with pytest.raises(TypeError, match="'Jet_Px': expected integer cell indices.*float32"):
        sio.read_showers(path, cell_branch="Jet_Px", energy_branch="Jet_E", label_branch=None, incident_energy_branch=None)
    with pytest.raises(KeyError, match="no branch 'Jet_px'; did you mean 'Jet_Px'"):
        sio.read_arrays(path, ["Jet_px"])


def test_empty_tree():
    """An empty tree reads as empty tensors; asking it for shower branches names the ones it has."""
    path = shared_file("root", "uproot-empty.root")
    arrays = sio.read_arrays(path, ["x", "y"], tree="tree")
    assert arrays["x"].shape == (0,) and arrays["x"].dtype == torch.int32 and arrays["y"].dtype == torch.float64
    with pytest.raises(KeyError, match=r"tree 'tree': no branch 'hit_cell'.*available: 'x', 'y', 'z'"):
        sio.read_showers(path, tree="tree")
    with pytest.raises(TypeError, match="branch 'z': expected numeric values"):
        sio.read_arrays(path, ["z"], tree="tree")


def test_truncated_real_file(tmp_path):
    data = shared_file("root", "uproot-HZZ-zstd.root").read_bytes()
    truncated = tmp_path / "HZZ-truncated.root"
    truncated.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(sio.CorruptFileError, match=r"HZZ-truncated\.root"):
        sio.read_arrays(truncated, ["Jet_Px"])
