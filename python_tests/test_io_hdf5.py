"""sim2real_fast.io, HDF5 and npy: CaloGAN and CaloChallenge round trips and units, HCAL DQM maps, npy maps."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from io_data import random_showers, shared_file
from sim2real_fast import geometry as geometries
from sim2real_fast import io as sio


def test_calogan_round_trip_and_layout(tmp_path):
    images, labels, energy = random_showers(12)
    path = tmp_path / "calogan.h5"
    sio.write_calogan(path, images, energy, labels=labels)
    with h5py.File(path) as f:
        assert {k: f[k].shape for k in f} == {
            "layer_0": (12, 3, 96), "layer_1": (12, 12, 12), "layer_2": (12, 12, 6),
            "energy": (12, 1), "overflow": (12, 3), "label": (12,),
        }
        assert np.array_equal(f["layer_1"][:], images[:, 288:432].reshape(12, 12, 12).numpy())
        assert np.array_equal(f["energy"][:, 0], energy.numpy())  # GeV on disk, as CaloGAN
    showers = sio.read_calogan(path)
    assert showers.geometry.name == "calogan"
    assert torch.equal(showers.images, images) and torch.equal(showers.labels, labels) and torch.equal(showers.energy, energy)
    sio.write_calogan(tmp_path / "again.h5", showers)
    assert torch.equal(sio.read_calogan(tmp_path / "again.h5").images, images)
    incident = sio.read_calogan(path, normalize="incident")
    torch.testing.assert_close(incident.images, images / (1000 * energy[:, None]).float())


def test_calogan_without_labels_and_with_flat_energy(tmp_path):
    images, _, energy = random_showers(3)
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:  # as some derived CaloGAN files: energy (N,), no label
        for name, layer in zip(("layer_0", "layer_1", "layer_2"), geometries.get("calogan").split_layers(images)):
            f[name] = layer.numpy()
        f["energy"] = energy.numpy()
    showers = sio.read_calogan(path)
    assert torch.equal(showers.images, images) and showers.labels.tolist() == [-1, -1, -1]


@pytest.mark.parametrize(("voxels", "name"), [(368, "ds1-photons"), (533, "ds1-pions"), (6480, "ds2")])
def test_calochallenge_round_trip_units_and_geometry_inference(tmp_path, voxels, name):
    images, labels, energy = random_showers(4, voxels, density=0.05)
    path = tmp_path / "cc.h5"
    sio.write_calochallenge(path, images, energy)
    with h5py.File(path) as f:
        assert f["showers"].shape == (4, voxels) and f["incident_energies"].shape == (4, 1)
        np.testing.assert_allclose(f["incident_energies"][:, 0], 1000 * energy.numpy())  # MeV on disk
        assert "label" not in f
    showers = sio.read_calochallenge(path)
    assert showers.geometry.name == f"calochallenge-{name}"
    assert torch.equal(showers.images, images)
    torch.testing.assert_close(showers.energy, energy, rtol=1e-15, atol=0)  # GeV in memory
    assert showers.labels.tolist() == [-1] * 4


def test_calochallenge_errors_and_explicit_geometry(tmp_path):
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["showers"] = np.zeros((2, 100), np.float32)
        f["incident_energies"] = np.ones((2, 1))
    with pytest.raises(ValueError, match="cannot infer the CaloChallenge geometry from 100 voxels"):
        sio.read_calochallenge(path)
    with pytest.raises(ValueError, match="100 voxels, geometry 'calochallenge-ds2' has 6480"):
        sio.read_calochallenge(path, geometry="calochallenge-ds2")
    with pytest.raises(KeyError, match="no dataset 'showers'; did you mean 'shower'"):
        sio.read_calochallenge(_renamed(tmp_path, "shower"))
    images, labels, energy = random_showers(2, 368)
    sio.write_calochallenge(tmp_path / "ok.h5", sio.Showers(images, labels, energy, geometries.get("calochallenge-ds1-photons")))
    assert torch.equal(sio.read_calochallenge(tmp_path / "ok.h5").labels, labels)


def _renamed(folder, showers_key):
    path = folder / "renamed.h5"
    with h5py.File(path, "w") as f:
        f[showers_key] = np.zeros((2, 368), np.float32)
        f["incident_energies"] = np.ones((2, 1))
    return path


def test_hdf5_bad_energy_policy(tmp_path):
    images, _, energy = random_showers(3, 368)
    images[1, 5], images[2, 7] = float("nan"), -1.0
    path = tmp_path / "bad.h5"
    sio.write_calochallenge(path, images, energy)
    with pytest.raises(sio.BadEnergyError, match=r"bad\.h5: dataset 'showers': entry 1 has hit energy nan"):
        sio.read_calochallenge(path)
    with pytest.warns(UserWarning, match="2 NaN"):
        dropped = sio.read_calochallenge(path, bad_energy="drop")
    expected = images.clone()
    expected[1, 5] = expected[2, 7] = 0
    assert torch.equal(dropped.images, expected) and dropped.n_dropped == 2


def test_hdf5_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        sio.read_calogan(tmp_path / "missing.h5")
    images, labels, energy = random_showers(20)
    good = tmp_path / "good.h5"
    sio.write_calogan(good, images, energy)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(sio.CorruptFileError, match=r"truncated\.h5"):
        sio.read_calogan(truncated)
    with h5py.File(tmp_path / "wrong.h5", "w") as f:
        f["layer_0"] = np.zeros((2, 3, 95))
    with pytest.raises(ValueError, match=r"'layer_0' must be layer_0 energies \(MeV\) of shape \(N, 3, 96\), got float64 \(2, 3, 95\)"):
        sio.read_calogan(tmp_path / "wrong.h5")


def test_failed_hdf5_write_leaves_nothing(tmp_path, monkeypatch):
    images, labels, energy = random_showers(2)

    def fail(*args, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(OSError, match="no space"):
        sio.write_calogan(tmp_path / "x.h5", images, energy)
    assert list(tmp_path.iterdir()) == []


# ---- occupancy maps -------------------------------------------------------------------------
def test_npy_maps_round_trip(tmp_path):
    maps = torch.rand(5, 64, 72, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "ml4dqm.npy"
    sio.write_npy_maps(path, maps)
    read = sio.read_npy_maps(path)
    assert read.maps.shape == (5, 64 * 72) and read.geometry.layer_shapes == ((64, 72),)
    assert torch.equal(read.layers()[0], maps) and read.lumi_sections.tolist() == list(range(5))
    sio.write_npy_maps(tmp_path / "again.npy", read)
    assert torch.equal(sio.read_npy_maps(tmp_path / "again.npy").maps, read.maps)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((2, 42336), np.float32))
    with pytest.raises(ValueError, match="need geometry="):
        sio.read_npy_maps(flat)
    assert sio.read_npy_maps(flat, geometry="hcal").geometry.name == "hcal"
    (tmp_path / "broken.npy").write_bytes(path.read_bytes()[:100])
    with pytest.raises(sio.CorruptFileError, match=r"broken\.npy"):
        sio.read_npy_maps(tmp_path / "broken.npy")


def test_hcal_dqm_real_file():
    path = shared_file("hcal", "hcal_dqm_run306138_10ls.hdf5")
    rechit = sio.read_hcal_dqm(path)
    assert rechit.maps.shape == (10, 7 * 72 * 84) and rechit.maps.dtype == torch.float32
    assert rechit.geometry.name == "hcal" and rechit.lumi_sections.tolist() == list(range(10))
    with h5py.File(path) as f:
        for depth, layer in enumerate(rechit.layers(), 1):
            assert np.array_equal(layer.numpy(), f[f"RecHitTask_Occupancy_depth_depth{depth}"][:])
    digi = sio.read_hcal_dqm(path, task="DigiTask")
    assert not torch.equal(digi.maps, rechit.maps)
    depth5 = digi.layers()[4]
    assert (depth5[:, :, :59] == 0).all() and (depth5[:, :, 70:] == 0).all()  # depths 5-7: ieta columns 59-69 only
    with pytest.raises(ValueError, match="task must be one of"):
        sio.read_hcal_dqm(path, task="RecHit")


def test_missing_backend_gives_an_install_hint(monkeypatch, tmp_path):
    import importlib

    real_import = importlib.import_module

    def without_h5py(name, *args):
        if name == "h5py":
            raise ImportError("No module named 'h5py'")
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_h5py)
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(ImportError, match=r"pip install 'h5py>=3'"):
        sio.read_calogan(tmp_path / "x.h5")
