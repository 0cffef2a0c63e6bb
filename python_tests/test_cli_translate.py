"""`sim2real translate`: train (files, layout, pairs, resume), apply (ROOT/HDF5/npy in steps), evaluate, bad inputs."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from helpers import one_thread  # noqa: F401  (one_thread: an autouse fixture)
from sim2real_fast import cli, io, simulate, translate
from sim2real_fast.adapt import checkpoint
from sim2real_fast.evaluate.physics import wasserstein1
from sim2real_fast.ops import shower_features
from sim2real_fast.translate import write_layout

N = 200


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """sim.root / real.root (N labelled showers each), a pair of 80 paired showers, npy and odd inputs."""
    root = tmp_path_factory.mktemp("data")
    sim = simulate.showers(N, seed=0, effects="nominal")
    real = simulate.showers(N, seed=1, effects="stress")
    io.write_showers_root(root / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(root / "real.root", real.images, real.labels, real.energy)
    pairs = simulate.paired_showers(80, seed=2, batch_size=64)
    io.write_showers_root(root / "pair_sim.root", pairs.sim.images, pairs.sim.labels, pairs.sim.energy)
    io.write_showers_root(root / "pair_real.root", pairs.real.images, pairs.real.labels, pairs.real.energy)
    write_layout(root / "layout", sim, real, geometry="calogan")
    write_layout(root / "pairs", pairs.sim, pairs.real, geometry="calogan")
    np.save(root / "sim.npy", sim.images.numpy())
    io.write_calogan(root / "sim.h5", sim.images, sim.energy, labels=sim.labels)
    np.save(root / "photons.npy", np.ones((10, 368), np.float32))  # a calochallenge-ds1-photons shape
    (root / "empty").mkdir()
    (root / "pngs").mkdir()
    (root / "pngs" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    torch.save({"state_dict": {}}, root / "not_a_translator.pt")
    return {"dir": root, "sim": sim, "real": real}


def _train(out, *extra):
    return cli.main(["translate", "train", "--out", str(out), "--epochs", "1", "--batch-size", "64", *extra])


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """A SimGAN trained for one epoch on sim.root and real.root: its folder."""
    out = tmp_path_factory.mktemp("simgan")
    data = files["dir"]
    torch.set_num_threads(1)
    assert _train(out, "--method", "simgan", "--sim", str(data / "sim.root"), "--real", str(data / "real.root")) == 0
    return out


def test_train_writes_a_model_that_loads_with_its_method(trained):
    model = translate.load(trained / "model.pt", method="simgan", geometry="calogan")
    assert isinstance(model, translate.SimGAN) and len(model.history) == 1
    assert [p.name for p in checkpoint.checkpoint_files(trained / "checkpoints")] == ["001_train_e1.pt"]
    run = checkpoint.read_checkpoint(trained / "checkpoints" / "001_train_e1.pt")["run"]
    assert (run["sizes"], run["epochs"], run["batch_size"]) == ([N, N], 1, 64)


def test_resume_after_a_finished_run_loads_it_without_training(trained, files, tmp_path, monkeypatch, capsys):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (out / "model.pt").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(translate.SimGAN, "train_step", no_training)
    data = files["dir"]
    assert cli.main(["translate", "train", "--method", "simgan", "--sim", str(data / "sim.root"), "--real",
                     str(data / "real.root"), "--out", str(out), "--resume"]) == 0  # epochs, batch size: the run's
    assert "written" in capsys.readouterr().out
    before, after = (translate.load(path / "model.pt").state_dict() for path in (trained, out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.name for p in checkpoint.checkpoint_files(out / "checkpoints")] == ["001_train_e1.pt"]


def test_apply_writes_root_hdf5_and_npy_in_steps(trained, files, tmp_path):
    data = files["dir"]
    outputs = {}
    for name in ("out.root", "out.h5", "out.npy"):
        assert cli.main(["translate", "apply", "--model", str(trained / "model.pt"), "--input", str(data / "sim.root"),
                         "--output", str(tmp_path / name), "--step-size", "64"]) == 0
        outputs[name] = tmp_path / name
    expected = translate.load(trained / "model.pt").translate(files["sim"].images)
    back = io.read_showers(outputs["out.root"])
    assert len(back) == N and bool((back.images >= 0).all())
    torch.testing.assert_close(back.images, expected, rtol=1e-5, atol=1e-4)
    assert not torch.equal(back.images, files["sim"].images)  # the trained refiner changed the showers
    assert torch.equal(back.labels, files["sim"].labels)
    torch.testing.assert_close(back.energy, files["sim"].energy.double())
    from_hdf5 = io.read_calogan(outputs["out.h5"])
    torch.testing.assert_close(from_hdf5.images, back.images)
    assert torch.equal(from_hdf5.labels, back.labels)
    torch.testing.assert_close(from_hdf5.energy, back.energy)
    torch.testing.assert_close(torch.from_numpy(np.load(outputs["out.npy"])), back.images)
    assert not list(tmp_path.glob(".*.tmp"))


def test_apply_reads_hdf5_in_steps(trained, files, tmp_path):
    out = tmp_path / "from_h5.root"
    assert cli.main(["translate", "apply", "--model", str(trained / "model.pt"), "--input",
                     str(files["dir"] / "sim.h5"), "--output", str(out), "--step-size", "64"]) == 0
    back = io.read_showers(out)
    expected = translate.load(trained / "model.pt").translate(files["sim"].images)
    torch.testing.assert_close(back.images, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(back.labels, files["sim"].labels)
    torch.testing.assert_close(back.energy, files["sim"].energy.double())


def test_apply_of_unlabelled_showers_writes_no_label_branches(trained, files, tmp_path):
    out = tmp_path / "from_npy.root"
    assert cli.main(["translate", "apply", "--model", str(trained / "model.pt"), "--input",
                     str(files["dir"] / "sim.npy"), "--output", str(out), "--step-size", "150"]) == 0
    assert set(io.read_arrays(out)) == {"nhit", "hit_cell", "hit_energy"}
    back = io.read_showers(out, label_branch=None, incident_energy_branch=None)
    expected = translate.load(trained / "model.pt").translate(files["sim"].images)
    torch.testing.assert_close(back.images, expected, rtol=1e-5, atol=1e-4)


def test_evaluate_writes_results_and_a_report_with_its_figures(trained, files, tmp_path, capsys):
    data, out = files["dir"], tmp_path / "evaluation"
    assert cli.main(["translate", "evaluate", "--model", str(trained / "model.pt"), "--sim", str(data / "sim.root"),
                     "--real", str(data / "real.root"), "--out", str(out)]) == 0
    assert "translated vs real" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "simgan" and results["events"] == {"sim": N, "real": N}
    for key, n in (("starting_point", N), ("translated", N), ("floor", N // 2)):
        entry = results[key]
        assert entry["n"] == n and set(entry["features"]) == set(results["feature_names"])
        for metric in ("fpd", "kpd", "auc", "auc_cells"):
            assert set(entry[metric]) == {"value", "error"}
        assert 0 <= entry["auc"]["value"] <= 1 and 0 <= entry["auc_cells"]["value"] <= 1
    total = {name: shower_features(x, "calogan").total for name, x in (
        ("sim", files["sim"].images), ("real", files["real"].images),
        ("translated", translate.load(trained / "model.pt").translate(files["sim"].images)))}
    for key, name in (("starting_point", "sim"), ("translated", "translated")):
        w1 = results[key]["features"]["energy_total"]["w1"]
        assert w1 == pytest.approx(wasserstein1(total["real"], total[name]), rel=1e-4)
    kept = results["label_preservation"]
    assert kept["n"] == N - N // 2 and 0 <= kept["accuracy_translated"] <= 1
    assert set(results["energy_response"]["classes"]) == {"e+", "gamma", "pi+"}
    report = (out / "report.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert {"average_shower.png", "features.png", "features_eplus.png"} <= set(figures)
    for figure in figures:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sim vs real" in report and "real vs real (floor)" in report


def test_the_folder_layout_trains(files, tmp_path):
    write_layout(tmp_path / "layout", files["sim"].images, files["real"].images, geometry="calogan", kind="npy")
    assert _train(tmp_path / "model", "--method", "cyclegan", "--data", str(tmp_path / "layout"), "--events", "64") == 0
    assert isinstance(translate.load(tmp_path / "model" / "model.pt", method="cyclegan"), translate.CycleGAN)
    run = checkpoint.read_checkpoint(checkpoint.checkpoint_files(tmp_path / "model" / "checkpoints")[-1])["run"]
    assert run["sizes"] == [64, 64]


@pytest.mark.parametrize("method", ["cyclegan", "simgan", "pix2pix", "style"])
def test_every_translator_trains_on_the_root_layout_and_applies(method, files, tmp_path):
    layout = files["dir"] / ("pairs" if method == "pix2pix" else "layout")
    assert _train(tmp_path / "model", "--method", method, "--data", str(layout), "--events", "64") == 0
    model = tmp_path / "model" / "model.pt"
    assert translate.load(model, method=method).name == method
    assert cli.main(["translate", "apply", "--model", str(model), "--input", str(files["dir"] / "sim.root"),
                     "--output", str(tmp_path / "out.root")]) == 0
    out = io.read_showers(tmp_path / "out.root")
    assert out.images.shape == (N, 504) and out.images.min() >= 0
    assert torch.equal(out.labels, files["sim"].labels)


def test_pix2pix_trains_on_paired_files(files, tmp_path):
    data = files["dir"]
    assert _train(tmp_path, "--method", "pix2pix", "--sim", str(data / "pair_sim.root"),
                  "--real", str(data / "pair_real.root")) == 0
    assert translate.load(tmp_path / "model.pt").name == "pix2pix"


class _LabelledSimGAN(translate.SimGAN):
    """A SimGAN that asks for the sim labels, as the style translator does."""

    name = "labelled_simgan"
    needs_sim_labels = True
    seen = []

    def fit(self, sim, real, *, sim_labels, **options):
        self.seen.append(sim_labels)
        return super().fit(sim, real, **options)


def test_a_translator_that_needs_sim_labels_gets_them_or_a_message(files, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(translate.REGISTRY, _LabelledSimGAN.name, _LabelledSimGAN)
    data = files["dir"]
    with pytest.raises(SystemExit) as exit_info:
        _train(tmp_path / "a", "--method", "labelled_simgan", "--sim", str(data / "sim.npy"),
               "--real", str(data / "real.root"))
    assert exit_info.value.code == 2
    assert str(data / "sim.npy") in capsys.readouterr().err.strip().splitlines()[-1]
    assert _train(tmp_path / "b", "--method", "labelled_simgan", "--sim", str(data / "sim.root"),
                  "--real", str(data / "real.root"), "--events", "64") == 0
    assert torch.equal(_LabelledSimGAN.seen[-1], files["sim"].labels[:64])


BAD = {
    "missing sim file": (lambda d, m: ["train", "--method", "simgan", "--sim", f"{d}/nope.root", "--real",
                                       f"{d}/real.root", "--out", f"{d}/x"], "nope.root"),
    "empty folder": (lambda d, m: ["train", "--method", "simgan", "--sim", f"{d}/empty", "--real", f"{d}/real.root",
                                   "--out", f"{d}/x"], "holds no shower files"),
    "png folder": (lambda d, m: ["train", "--method", "simgan", "--sim", f"{d}/pngs", "--real", f"{d}/real.root",
                                 "--out", f"{d}/x"], "a.png: 8-bit image files"),
    "events 0": (lambda d, m: ["train", "--method", "simgan", "--sim", f"{d}/sim.root", "--real", f"{d}/real.root",
                               "--out", f"{d}/x", "--events", "0"], "--events"),
    "no real": (lambda d, m: ["train", "--method", "simgan", "--sim", f"{d}/sim.root", "--out", f"{d}/x"], "--real"),
    "not a layout": (lambda d, m: ["train", "--method", "simgan", "--data", f"{d}", "--out", f"{d}/x"],
                              "trainA: no such folder"),
    "mismatched pairs": (lambda d, m: ["train", "--method", "pix2pix", "--sim", f"{d}/sim.root", "--real",
                                       f"{d}/pair_real.root", "--out", f"{d}/x"], "sim.root holds 200 events and"),
    "checkpoints without resume": (lambda d, m: ["train", "--method", "simgan", "--sim", f"{d}/sim.root", "--real",
                                                 f"{d}/real.root", "--out", f"{m}"], "pass --resume"),
    "resume another method": (lambda d, m: ["train", "--method", "cyclegan", "--sim", f"{d}/sim.root", "--real",
                                            f"{d}/real.root", "--out", f"{m}", "--resume"],
                              "001_train_e1.pt: a checkpoint of a 'simgan'"),
    "model of another geometry": (lambda d, m: ["apply", "--model", f"{m}/model.pt", "--input", f"{d}/sim.root",
                                                "--output", f"{d}/x.root", "--geometry", "calochallenge-ds1-photons"],
                                  "model.pt: a translator for geometry 'calogan'"),
    "not a translator": (lambda d, m: ["apply", "--model", f"{d}/not_a_translator.pt", "--input", f"{d}/sim.root",
                                       "--output", f"{d}/x.root"], "not_a_translator.pt: not a translator file"),
    "input of another geometry": (lambda d, m: ["apply", "--model", f"{m}/model.pt", "--input", f"{d}/photons.npy",
                                                "--output", f"{d}/x.root"], "photons.npy: expected (N, 504)"),
    "missing input": (lambda d, m: ["apply", "--model", f"{m}/model.pt", "--input", f"{d}/nope.root",
                                    "--output", f"{d}/x.root"], "nope.root"),
    "unknown output kind": (lambda d, m: ["apply", "--model", f"{m}/model.pt", "--input", f"{d}/sim.root",
                                          "--output", f"{d}/x.txt"], "--output"),
    "step size 0": (lambda d, m: ["apply", "--model", f"{m}/model.pt", "--input", f"{d}/sim.root",
                                  "--output", f"{d}/x.root", "--step-size", "0"], "--step-size"),
    "missing model": (lambda d, m: ["evaluate", "--model", f"{d}/nope.pt", "--sim", f"{d}/sim.root",
                                    "--real", f"{d}/real.root", "--out", f"{d}/x"], "nope.pt"),
    "evaluate on a png folder": (lambda d, m: ["evaluate", "--model", f"{m}/model.pt", "--sim", f"{d}/sim.root",
                                               "--real", f"{d}/pngs", "--out", f"{d}/x"], "8-bit image files"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_exit_2_with_one_line_naming_the_problem(case, files, trained, capsys):
    make, expected = BAD[case]
    argv = ["translate", *make(files["dir"], trained)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    assert expected in err.strip().splitlines()[-1]
    assert not (files["dir"] / "x").exists() and not (files["dir"] / "x.root").exists()
