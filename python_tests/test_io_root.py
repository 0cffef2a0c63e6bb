"""sim2real_fast.io, ROOT: event-tree round trips, streaming, globs, result friend trees, bad energies, errors."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from hypothesis import given, settings
from hypothesis import strategies as st

import sim2real_fast as s2r
from io_data import random_showers, write_tree
from sim2real_fast import io as sio
from sim2real_fast.geometry import Geometry, Layer


@pytest.fixture
def showers_file(tmp_path):
    images, labels, energy = random_showers(40)
    path = tmp_path / "showers.root"
    sio.write_showers_root(path, images, labels, energy)
    return path, images, labels, energy


def test_round_trip_is_exact_and_sparse(showers_file):
    path, images, labels, energy = showers_file
    showers = sio.read_showers(path)
    assert showers.images.dtype == torch.float32 and showers.images.shape == (40, 504)
    assert torch.equal(showers.images, images)
    assert torch.equal(showers.labels, labels) and showers.labels.dtype == torch.int64
    assert torch.equal(showers.energy, energy) and showers.energy.dtype == torch.float64
    assert showers.geometry.name == "calogan" and showers.normalize is None
    assert showers.sources == (str(path),) and (showers.n_dropped, showers.n_clipped) == (0, 0)
    assert set(showers.timings) == {"read", "convert", "hits_to_image"}
    tree = uproot.open(path)["events"]
    assert set(tree.keys()) == {"nhit", "hit_cell", "hit_energy", "label", "energy"}
    assert tree["nhit"].array(library="np").tolist() == (images != 0).sum(1).tolist()  # only non-zero cells


def test_showers_round_trip_through_a_showers_object(showers_file, tmp_path):
    path, images, *_ = showers_file
    showers = sio.read_showers(path)
    sio.write_showers_root(tmp_path / "again.root", showers[5:15])
    again = sio.read_showers(tmp_path / "again.root")
    assert torch.equal(again.images, images[5:15]) and torch.equal(again.energy, showers.energy[5:15])
    with pytest.raises(ValueError, match="normalised"):
        sio.write_showers_root(tmp_path / "x.root", sio.read_showers(path, normalize="log1p"))
    assert not (tmp_path / "x.root").exists()


@settings(max_examples=10, deadline=None)
@given(
    n=st.integers(0, 6),
    seed=st.integers(0, 2**16),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_round_trip_property(tmp_path_factory, n, seed, density, dtype):
    geometry = Geometry("tiny", (Layer("a", 2, 3), Layer("b", 1, 4)))
    images, labels, energy = random_showers(n, geometry.n_cells, seed=seed, density=density)
    path = tmp_path_factory.mktemp("prop") / "p.root"
    sio.write_showers_root(path, images.to(dtype), labels, energy, geometry=geometry)
    showers = sio.read_showers(path, geometry=geometry)
    assert torch.equal(showers.images, images.to(dtype).float())
    assert torch.equal(showers.labels, labels) and torch.equal(showers.energy, energy)


@pytest.mark.parametrize("normalize", ["log1p", "sum", "incident"])
def test_normalisations(showers_file, normalize):
    path, images, _, energy = showers_file
    showers = sio.read_showers(path, normalize=normalize)
    expected = {
        "log1p": torch.log1p(images),
        "sum": images / images.sum(1, keepdim=True),
        "incident": images / (1000 * energy[:, None]).float(),  # MeV / (1000 MeV/GeV * GeV): fraction of E_inc
    }[normalize]
    torch.testing.assert_close(showers.images, expected, rtol=1e-6, atol=1e-7)
    assert showers.normalize == normalize


def test_threshold_calibration_dead(showers_file):
    path, images, *_ = showers_file
    calibration = torch.linspace(0.5, 1.5, 504)
    dead = torch.zeros(504, dtype=torch.bool)
    dead[:10] = True
    showers = sio.read_showers(path, threshold=200.0, calibration=calibration, dead=dead)
    expected = images * calibration
    expected[(expected < 200.0) | dead] = 0
    torch.testing.assert_close(showers.images, expected)


@pytest.mark.parametrize("step_size", [7, 1, "2 kB"])
def test_iterate_showers_matches_one_read(showers_file, step_size):
    path, images, labels, energy = showers_file
    batches = list(sio.iterate_showers(path, step_size=step_size, normalize="log1p"))
    assert len(batches) > 1
    whole = sio.read_showers(path, normalize="log1p")
    joined = sio.Showers.cat(batches)
    assert torch.equal(joined.images, whole.images)
    assert torch.equal(joined.labels, labels) and torch.equal(joined.energy, energy)
    assert torch.equal(sio.read_showers(path, step_size=step_size).images, images)


def test_many_files_list_and_glob(tmp_path):
    parts = [random_showers(n, seed=n) for n in (3, 5, 4)]
    for i, (images, labels, energy) in enumerate(parts):
        sio.write_showers_root(tmp_path / f"part{i}.root", images, labels, energy)
    expected = torch.cat([p[0] for p in parts])
    by_glob = sio.read_showers(str(tmp_path / "part*.root"), step_size=2)
    assert torch.equal(by_glob.images, expected)
    assert by_glob.sources == tuple(str(tmp_path / f"part{i}.root") for i in range(3))
    reversed_list = [tmp_path / "part2.root", str(tmp_path / "part0.root")]
    listed = sio.read_showers(reversed_list)
    assert torch.equal(listed.images, torch.cat([parts[2][0], parts[0][0]]))
    assert [len(b) for b in sio.iterate_showers(str(tmp_path / "part?.root"))] == [3, 5, 4]
    with pytest.raises(FileNotFoundError, match=r"nothing\*\.root"):
        sio.read_showers(str(tmp_path / "nothing*.root"))


def test_empty_file_and_single_hit(tmp_path):
    empty = tmp_path / "empty.root"
    sio.write_showers_root(empty, torch.zeros(0, 504), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    showers = sio.read_showers(empty)
    assert showers.images.shape == (0, 504) and len(showers) == 0 and showers.labels.shape == (0,)
    assert list(sio.iterate_showers(empty)) == []

    image = torch.zeros(1, 504)
    image[0, 431] = 12.5
    single = tmp_path / "single.root"
    sio.write_showers_root(single, image, torch.tensor([2]), torch.tensor([50.0]))
    assert uproot.open(single)["events"]["hit_cell"].array().tolist() == [[431]]
    showers = sio.read_showers(single, normalize="incident")
    assert showers.images.nonzero().tolist() == [[0, 431]]
    assert showers.images[0, 431].item() == pytest.approx(12.5 / 50_000)


def test_offsets_not_starting_at_zero_and_other_dtypes(tmp_path):
    """uint16 cells, float64 energies, int32 labels and custom branch names; steps start mid-buffer."""
    cells = ak.Array([[0, 5], [], [503, 503, 1], [7]])
    energies = ak.Array([[1.0, 2.0], [], [3.0, 4.0, 5.0], [6.0]])
    path = tmp_path / "custom.root"
    write_tree(
        path,
        {
            "c": ak.values_astype(cells, np.uint16),
            "e": energies,
            "y": np.array([1, 0, 1, 0], np.int32),
            "E0": np.array([1.0, 2.0, 3.0, 4.0], np.float32),
        },
        tree="dir_tree",
    )
    options = dict(tree="dir_tree", cell_branch="c", energy_branch="e", label_branch="y", incident_energy_branch="E0")
    showers = sio.read_showers(path, step_size=1, **options)
    expected = torch.zeros(4, 504)
    expected[0, 0], expected[0, 5], expected[2, 503], expected[2, 1], expected[3, 7] = 1, 2, 7, 5, 6
    assert torch.equal(showers.images, expected) and showers.labels.tolist() == [1, 0, 1, 0]
    no_labels = sio.read_showers(path, **{**options, "label_branch": None, "incident_energy_branch": None})
    assert no_labels.labels.tolist() == [-1] * 4 and torch.isnan(no_labels.energy).all()


def test_awkward_slices_go_to_hits_to_image_as_they_are():
    """The ROOT reader hands layout buffers over; a sliced array's offsets start above 0."""
    array = ak.Array([[1, 2], [3], [], [0, 4, 4]])[1:]
    layout = array.layout
    offsets, content = np.asarray(layout.offsets.data), np.asarray(layout.content.data)
    assert offsets[0] > 0
    energy = torch.ones(len(content))
    image = s2r.hits_to_image(torch.from_numpy(offsets), torch.from_numpy(content), energy, n_cells=5)
    assert image.tolist() == [[0, 0, 0, 1, 0], [0] * 5, [1, 0, 0, 0, 2]]


# ---- results friend trees -------------------------------------------------------------------
def test_results_friend_tree_round_trip(showers_file, tmp_path):
    path, images, labels, _ = showers_file
    n = len(labels)
    results = {
        "prediction": labels.flip(0),
        "score": torch.linspace(0, 1, n),
        "probabilities": torch.softmax(torch.randn(n, 3, generator=torch.Generator().manual_seed(1)), 1),
        "selected": (labels > 0).numpy(),
    }
    friend = tmp_path / "results.root"
    sio.write_results_root(friend, results)
    back = sio.read_arrays(friend, tree="results")
    assert set(back) == set(results)
    for name, value in results.items():
        assert torch.equal(back[name], torch.as_tensor(value)), name
    assert uproot.open(friend)["results"].num_entries == uproot.open(path)["events"].num_entries
    with pytest.raises(ValueError, match="same number of entries"):
        sio.write_results_root(tmp_path / "bad.root", {"a": torch.zeros(3), "b": torch.zeros(4)})


# ---- bad energies ---------------------------------------------------------------------------
@pytest.fixture
def bad_file(tmp_path):
    path = tmp_path / "bad.root"
    write_tree(
        path,
        {
            "hit_cell": ak.Array([[0, 1], [2, 3, 4], [5]]),
            "hit_energy": ak.Array([[1.0, 2.0], [3.0, float("nan"), -4.0], [5.0]]),
            "label": np.array([0, 1, 2]),
            "energy": np.array([10.0, 20.0, 30.0]),
        },
    )
    return path


def test_bad_energy_error_names_file_tree_branch_entry(bad_file):
    with pytest.raises(sio.BadEnergyError, match=r"bad\.root: tree 'events' branch 'hit_energy': entry 1 has hit energy nan"):
        sio.read_showers(bad_file)
    with pytest.raises(ValueError, match="entry 1"):  # a ValueError, also when streaming with later entries
        list(sio.iterate_showers(bad_file, step_size=1))


def test_bad_energy_drop_and_clip(bad_file):
    with pytest.warns(UserWarning, match="2 NaN/infinite/negative hit energies dropped"):
        dropped = sio.read_showers(bad_file, bad_energy="drop")
    with pytest.warns(UserWarning, match="set to 0"):
        clipped = sio.read_showers(bad_file, bad_energy="clip", step_size=1)
    expected = torch.zeros(3, 504)
    expected[0, :2] = torch.tensor([1.0, 2.0])
    expected[1, 2], expected[2, 5] = 3.0, 5.0
    assert torch.equal(dropped.images, expected) and torch.equal(clipped.images, expected)
    assert (dropped.n_dropped, dropped.n_clipped, clipped.n_dropped, clipped.n_clipped) == (2, 0, 0, 2)


def test_nan_incident_energy_or_label_is_an_error(tmp_path):
    path = tmp_path / "nan.root"
    write_tree(
        path,
        {"hit_cell": ak.Array([[0], [1]]), "hit_energy": ak.Array([[1.0], [1.0]]),
         "label": np.array([0.0, np.nan]), "energy": np.array([np.nan, 1.0])},
    )
    with pytest.raises(sio.BadEnergyError, match="branch 'label': entry 1"):
        sio.read_showers(path, incident_energy_branch=None)
    with pytest.raises(sio.BadEnergyError, match="branch 'energy': entry 0"):
        sio.read_showers(path, label_branch=None)


# ---- errors ---------------------------------------------------------------------------------
def test_missing_file_tree_branch(showers_file, tmp_path):
    path = showers_file[0]
    with pytest.raises(FileNotFoundError, match="nowhere.root"):
        sio.read_showers(tmp_path / "nowhere.root")
    with pytest.raises(KeyError) as error:
        sio.read_showers(path, tree="event")
    assert isinstance(error.value, sio.MissingKeyError)
    assert str(path) in str(error.value) and "did you mean 'events'" in str(error.value)
    with pytest.raises(KeyError, match=r"tree 'events': no branch 'hit_cels'; did you mean 'hit_cell'"):
        sio.read_showers(path, cell_branch="hit_cels")
    with pytest.raises(KeyError, match="did you mean 'label'"):
        sio.read_arrays(path, ["labels"])


def test_wrong_dtypes_and_shapes(tmp_path):
    float_cells = tmp_path / "float_cells.root"
    write_tree(float_cells, {"hit_cell": ak.Array([[0.5]]), "hit_energy": ak.Array([[1.0]]), "label": np.array([0]), "energy": np.array([1.0])})
    with pytest.raises(TypeError, match=r"float_cells\.root: tree 'events' branch 'hit_cell': expected integer cell indices.*float64"):
        sio.read_showers(float_cells)
    scalar_hits = tmp_path / "scalar.root"
    write_tree(scalar_hits, {"hit_cell": np.array([0]), "hit_energy": ak.Array([[1.0]]), "label": np.array([0]), "energy": np.array([1.0])})
    with pytest.raises(TypeError, match="expected a jagged array of numbers"):
        sio.read_showers(scalar_hits)
    mismatched = tmp_path / "mismatched.root"
    write_tree(mismatched, {"hit_cell": ak.Array([[0], [1, 2]]), "hit_energy": ak.Array([[1.0], [1.0]]), "label": np.array([0, 0]), "energy": np.array([1.0, 1.0])})
    with pytest.raises(ValueError, match="entry 1 has 2 'hit_cell' and 1 'hit_energy' values"):
        sio.read_showers(mismatched)
    out_of_range = tmp_path / "range.root"
    write_tree(out_of_range, {"hit_cell": ak.Array([[0], [504]]), "hit_energy": ak.Array([[1.0], [1.0]]), "label": np.array([0, 0]), "energy": np.array([1.0, 1.0])})
    with pytest.raises(IndexError, match=r"range\.root.*504.*out of range"):
        sio.read_showers(out_of_range)
    with pytest.raises(ValueError, match="bad_energy must be one of"):
        sio.read_showers(out_of_range, bad_energy="ignore")
    with pytest.raises(ValueError, match=r"images must be float \(N, 504\)"):
        sio.write_showers_root(tmp_path / "w.root", torch.zeros(2, 503), torch.zeros(2, dtype=torch.int64), torch.ones(2))


def test_truncated_and_foreign_files_name_the_file(showers_file, tmp_path):
    data = showers_file[0].read_bytes()
    for name, content in (("truncated.root", data[: len(data) // 2]), ("text.root", b"not a ROOT file\n" * 10)):
        broken = tmp_path / name
        broken.write_bytes(content)
        with pytest.raises(OSError, match=name.replace(".", r"\.")) as error:
            sio.read_showers(broken)
        assert isinstance(error.value, sio.CorruptFileError)


def test_failed_write_leaves_no_file_and_keeps_the_old_one(showers_file, tmp_path, monkeypatch):
    from sim2real_fast.io import root as root_module

    write_tree = root_module._write_tree

    def write_then_fail(*args):
        write_tree(*args)
        raise RuntimeError("disk full")

    monkeypatch.setattr(root_module, "_write_tree", write_then_fail)
    images, labels, energy = random_showers(3)
    with pytest.raises(RuntimeError, match="disk full"):
        sio.write_showers_root(tmp_path / "new.root", images, labels, energy)
    with pytest.raises(RuntimeError, match="disk full"):
        sio.write_results_root(showers_file[0], {"x": torch.zeros(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["showers.root"]
    assert torch.equal(sio.read_showers(showers_file[0]).images, showers_file[1])  # the old file is intact


def test_showers_container(showers_file):
    path, images, labels, energy = showers_file
    showers = sio.read_showers(path)
    assert len(showers) == 40 and "n=40" in repr(showers)
    one = showers[-1]
    assert len(one) == 1 and torch.equal(one.images, images[-1:])  # an int keeps the event dimension
    picked = showers[labels == 1]
    assert torch.equal(picked.images, images[labels == 1]) and torch.equal(showers[[0, 2]].energy, energy[[0, 2]])
    assert [layer.shape for layer in showers.layers()] == [(40, 3, 96), (40, 12, 12), (40, 12, 6)]
    assert showers.to("cpu").images.device.type == "cpu"
    with pytest.raises(IndexError, match="out of range"):
        showers[40]
    with pytest.raises(ValueError, match="geometry/normalize differ"):
        sio.Showers.cat([showers, sio.read_showers(path, normalize="sum")])
    with pytest.raises(ValueError, match=r"images must be \(N, 504\)"):
        sio.Showers(images[:, :10], labels, energy, showers.geometry)
