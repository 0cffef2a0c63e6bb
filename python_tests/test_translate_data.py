"""translate.data: shower domains from files and folders, the CycleGAN trainA/trainB layout, paired data."""

import re

import h5py
import numpy as np
import pytest
import torch

from sim2real_fast import geometry, io, simulate
from sim2real_fast.translate.data import read_domain, read_layout, write_layout

torch.set_num_threads(1)

CALOGAN = geometry.get("calogan")
PHOTONS = geometry.get("calochallenge-ds1-photons")


@pytest.fixture(scope="module")
def pairs():
    return simulate.paired_showers(60, seed=7, batch_size=32)


def _sparse_images(n, n_cells, seed):
    """(n, n_cells) float32 MeV, about a fifth of the cells non-zero."""
    g = torch.Generator().manual_seed(seed)
    values = torch.empty(n, n_cells).exponential_(0.01, generator=g)
    return values * (torch.rand(n, n_cells, generator=g) < 0.2)


def test_write_and_read_a_paired_root_layout(tmp_path, pairs):
    files = write_layout(tmp_path, pairs.sim, pairs.real, geometry="calogan")
    assert files == (tmp_path / "trainA" / "showers.root", tmp_path / "trainB" / "showers.root")
    a, b = read_layout(tmp_path, geometry="calogan", paired=True)
    assert (a.name, b.name) == ("trainA", "trainB")
    for domain, member in ((a, pairs.sim), (b, pairs.real)):
        assert domain.inputs.dtype == torch.float32
        assert torch.equal(domain.inputs, member.images)
        assert torch.equal(domain.labels, member.labels)
        assert torch.equal(domain.energy, member.energy.float())
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "testA"))):
        read_layout(tmp_path, geometry="calogan", phase="test")


def test_npy_layout_has_no_labels_and_test_phase(tmp_path, pairs):
    write_layout(tmp_path, pairs.sim.images, pairs.real.images, geometry=CALOGAN, phase="test", kind="npy")
    a, b = read_layout(tmp_path, geometry="calogan", phase="test", paired=True)
    assert torch.equal(a.inputs, pairs.sim.images) and torch.equal(b.inputs, pairs.real.images)
    assert a.labels is None and a.energy is None and b.labels is None


def test_folder_files_are_read_in_sorted_name_order(tmp_path, pairs):
    folder = tmp_path / "trainA"
    folder.mkdir()
    images = pairs.sim.images
    for name, part in (("part_1.npy", images[40:]), ("part_0.npy", images[:40])):  # written out of order
        np.save(folder / name, part.numpy())
    (folder / ".DS_Store").write_bytes(b"\0")
    domain = read_domain(folder, geometry="calogan")
    assert torch.equal(domain.inputs, images)
    assert domain.name == str(folder)


def test_root_files_without_labels_or_energies(tmp_path, pairs):
    file = tmp_path / "unlabelled.root"
    io.write_showers_root(file, pairs.sim.images, pairs.sim.labels, pairs.sim.energy, geometry="calogan",
                          label_branch="particle", incident_energy_branch="e_gev")
    domain = read_domain(file, geometry="calogan", name="sim")
    assert torch.equal(domain.inputs, pairs.sim.images)
    assert domain.labels is None and domain.energy is None and domain.name == "sim"
    # a folder where one file lacks the labels: the domain has none
    folder = tmp_path / "mixed"
    folder.mkdir()
    io.write_showers_root(folder / "a.root", pairs.sim.images[:30], pairs.sim.labels[:30],
                          pairs.sim.energy[:30], geometry="calogan")
    io.write_showers_root(folder / "b.root", pairs.sim.images[30:], pairs.sim.labels[30:], pairs.sim.energy[30:],
                          geometry="calogan", label_branch="particle")
    domain = read_domain(folder, geometry="calogan")
    assert domain.labels is None
    assert torch.equal(domain.energy, pairs.sim.energy.float())


def test_hdf5_files_calogan_and_calochallenge(tmp_path, pairs):
    calogan = tmp_path / "calogan.h5"
    io.write_calogan(calogan, pairs.real.images, pairs.real.energy, labels=pairs.real.labels)
    domain = read_domain(calogan, geometry="calogan")
    assert torch.equal(domain.inputs, pairs.real.images) and torch.equal(domain.labels, pairs.real.labels)
    with pytest.raises(ValueError, match=re.escape(f"{calogan}: 504 cells per shower, geometry "
                                                   f"'calochallenge-ds1-photons' has 368")):
        read_domain(calogan, geometry=PHOTONS)

    images = _sparse_images(20, PHOTONS.n_cells, seed=1)
    energy = torch.linspace(1, 20, 20, dtype=torch.float64)
    challenge = tmp_path / "challenge.hdf5"
    io.write_calochallenge(challenge, images, energy, geometry=PHOTONS)
    domain = read_domain(challenge, geometry=PHOTONS)
    assert torch.equal(domain.inputs, images) and domain.labels is None
    torch.testing.assert_close(domain.energy, energy.float())
    with pytest.raises(ValueError, match=re.escape(str(challenge))):
        read_domain(challenge, geometry="calogan")

    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as out:
        out["images"] = np.zeros((2, 504), np.float32)
    with pytest.raises(ValueError, match=re.escape(f"{other}: neither a CaloGAN")):
        read_domain(other, geometry="calogan")


def test_files_of_another_geometry_are_named(tmp_path):
    pions = geometry.get("calochallenge-ds1-pions")  # 533 cells
    images = torch.zeros(3, pions.n_cells)
    images[1, 520] = 50.0  # a cell beyond CaloGAN's 504
    images[:, 3] = 10.0
    file = tmp_path / "pions.root"
    io.write_showers_root(file, images, torch.zeros(3, dtype=torch.long), torch.ones(3), geometry=pions)
    assert torch.equal(read_domain(file, geometry=pions).inputs, images)
    with pytest.raises(ValueError, match=re.escape(str(file)) + r".*cell index 520 .* out of range \[0, 504\).*'calogan'"):
        read_domain(file, geometry="calogan")
    npy = tmp_path / "pions.npy"
    np.save(npy, images.numpy())
    with pytest.raises(ValueError, match=re.escape(str(npy)) + r".*533 cells.*'calogan' \(504 cells\)"):
        read_domain(npy, geometry="calogan")


def test_folder_errors_name_the_path(tmp_path, pairs):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_domain(missing, geometry="calogan")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sub").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"{empty}: the folder holds no shower files")):
        read_domain(empty, geometry="calogan")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    np.save(mixed / "a.npy", pairs.sim.images.numpy())
    io.write_showers_root(mixed / "b.root", pairs.sim.images, pairs.sim.labels, pairs.sim.energy, geometry="calogan")
    with pytest.raises(ValueError, match=re.escape(f"{mixed}: mixed file kinds") + r".*npy: a\.npy.*root: b\.root"):
        read_domain(mixed, geometry="calogan")
    pictures = tmp_path / "trainA"
    pictures.mkdir()
    (pictures / "0001.png").write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=re.escape(str(pictures / "0001.png")) + ": 8-bit image files are not read"):
        read_domain(pictures, geometry="calogan")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown file kind '.txt'"):
        read_domain(tmp_path / "notes.txt", geometry="calogan")
    bad = tmp_path / "nan.npy"
    np.save(bad, np.where(np.arange(504) == 7, np.nan, 0.0)[None].astype(np.float32))
    with pytest.raises(io.BadEnergyError, match=re.escape(f"{bad}: event 0 cell 7 is nan MeV")):
        read_domain(bad, geometry="calogan")


def test_paired_checks_counts_and_order(tmp_path, pairs):
    write_layout(tmp_path / "short", pairs.sim, _drop_last(pairs.real), geometry="calogan")
    a_folder, b_folder = tmp_path / "short" / "trainA", tmp_path / "short" / "trainB"
    read_layout(tmp_path / "short", geometry="calogan")  # unpaired: any sizes
    with pytest.raises(ValueError, match=re.escape(f"paired: {a_folder} holds 60 events and {b_folder} 59")):
        read_layout(tmp_path / "short", geometry="calogan", paired=True)

    reverse = torch.arange(59, -1, -1)
    shuffled = pairs.real._replace(images=pairs.real.images[reverse], labels=pairs.real.labels[reverse],
                                   energy=pairs.real.energy[reverse])
    write_layout(tmp_path / "order", pairs.sim, shuffled, geometry="calogan")
    expected = (f"paired: event 0 has labels {pairs.sim.labels[0]}, energy {pairs.sim.energy[0].float().item():g} GeV in "
                f"{tmp_path / 'order' / 'trainA'} and labels {pairs.sim.labels[59]}, energy "
                f"{pairs.sim.energy[59].float().item():g} GeV in {tmp_path / 'order' / 'trainB'}")
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_layout(tmp_path / "order", geometry="calogan", paired=True)


def _drop_last(showers):
    return showers._replace(images=showers.images[:-1], labels=showers.labels[:-1], energy=showers.energy[:-1],
                            overflow=showers.overflow[:-1])


def test_write_layout_refusals(tmp_path, pairs):
    with pytest.raises(TypeError, match="images alone have no labels"):
        write_layout(tmp_path, pairs.sim.images, pairs.real, geometry="calogan")
    with pytest.raises(ValueError, match="kind: expected one of"):
        write_layout(tmp_path, pairs.sim, pairs.real, geometry="calogan", kind="png")
    with pytest.raises(ValueError, match=r"b: images must be \(N, 368\)"):
        write_layout(tmp_path, pairs.sim.images[:, :368], pairs.real.images, geometry=PHOTONS, kind="npy")
    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "old.root").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'trainB'} already holds old.root")):
        write_layout(tmp_path, pairs.sim, pairs.real, geometry="calogan")
    assert not (tmp_path / "trainA").exists()  # nothing written when one side is refused
