"""`sim2real generate`: train (simulated or file showers, resume), sample (HDF5, ROOT, steps), evaluate, bad inputs."""

import json
import shutil

import awkward as ak
import h5py
import numpy as np
import pytest
import torch
import uproot

from helpers import one_thread  # noqa: F401  (one_thread: an autouse fixture)
from sim2real_fast import cli, generate, io, simulate
from sim2real_fast.adapt import checkpoint
from sim2real_fast.evaluate.physics import wasserstein1
from sim2real_fast.ops import shower_features
from sim2real_fast.workflow import generation

N = 300


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Labelled ROOT showers, an unlabelled gamma CaloChallenge file, evaluation files and odd inputs."""
    root = tmp_path_factory.mktemp("data")
    torch.set_num_threads(1)
    labelled = simulate.showers(N, seed=0, effects="nominal")
    io.write_showers_root(root / "train.root", labelled.images, labelled.labels, labelled.energy)
    rows, cells = labelled.images.nonzero(as_tuple=True)
    counts = torch.bincount(rows, minlength=N).numpy()
    hits = ak.zip({"cell": ak.unflatten(cells.int().numpy(), counts),
                   "energy": ak.unflatten(labelled.images[rows, cells].numpy(), counts)})
    with uproot.recreate(root / "no_energy.root") as f:  # an event tree without incident energies
        tree = f.mktree("events", {"hit": hits.type.content, "label": np.int64})
        tree.extend({"hit": hits, "label": labelled.labels.numpy()})
    gammas = simulate.showers(200, seed=1, effects="nominal", particles="gamma", energy_range=(5.0, 50.0))
    io.write_calochallenge(root / "gammas.h5", gammas.images, gammas.energy, geometry="calogan")
    reference = simulate.showers(80, seed=2, effects="nominal", energy_range=(10.0, 50.0))
    floor = simulate.showers(80, seed=3, effects="nominal", energy_range=(10.0, 50.0))
    with h5py.File(root / "reference.h5", "w") as f:  # a CaloChallenge file as others write it: no labels
        f["showers"] = reference.images.numpy()
        f["incident_energies"] = 1000.0 * reference.energy.numpy()[:, None]
    io.write_showers_root(root / "floor.root", floor.images, floor.labels, floor.energy)
    with h5py.File(root / "no_incident.h5", "w") as f:
        f["showers"] = reference.images.numpy()
    with h5py.File(root / "other.h5", "w") as f:
        f["images"] = reference.images.numpy()
    io.write_calochallenge(root / "photons.h5", torch.ones(10, 368), torch.full((10,), 10.0))
    np.save(root / "train.npy", labelled.images.numpy())
    return {"dir": root, "labelled": labelled, "reference": reference}


def _train(out, *extra):
    return cli.main(["generate", "train", "--out", str(out), "--epochs", "1", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A ShowerVAE trained for one epoch on N simulated showers: its folder."""
    out = tmp_path_factory.mktemp("vae")
    torch.set_num_threads(1)
    assert _train(out, "--events", str(N)) == 0
    return out


@pytest.fixture(scope="module")
def gamma_model(files, tmp_path_factory):
    """A ShowerVAE trained on the unlabelled CaloChallenge file, its showers called gamma: its model.pt."""
    out = tmp_path_factory.mktemp("gamma")
    torch.set_num_threads(1)
    assert _train(out, "--data", str(files["dir"] / "gammas.h5"), "--particle", "gamma") == 0
    return out / "model.pt"


def test_train_without_data_simulates_its_showers(trained, capsys):
    model = generate.load(trained / "model.pt", method="vae", geometry="calogan")
    assert isinstance(model, generate.ShowerVAE) and len(model.history) == 1 and model.best_epoch == 1
    assert model.energy_range == generation.ENERGY_RANGE == (1.0, 100.0)
    assert model.trained == ("e+", "gamma", "pi+")
    assert [p.name for p in checkpoint.checkpoint_files(trained / "checkpoints")] == ["001_train_e1.pt"]
    run = checkpoint.read_checkpoint(trained / "checkpoints" / "001_train_e1.pt")["run"]
    assert (run["size"], run["epochs"], run["seed"]) == (N, 1, 0)


def test_train_on_an_unlabelled_file_takes_the_particle_and_the_files_energies(gamma_model, files):
    model = generate.load(gamma_model)
    energy = io.read_calochallenge(files["dir"] / "gammas.h5", geometry="calogan").energy
    assert model.trained == ("gamma",)
    assert model.energy_range == pytest.approx((float(energy.min()), float(energy.max())))


def test_train_takes_the_energy_range_the_file_was_drawn_from(files, tmp_path, capsys):
    data = ["--data", str(files["dir"] / "gammas.h5"), "--particle", "gamma"]
    assert _train(tmp_path / "ok", *data, "--energy-range", "5-50") == 0
    assert generate.load(tmp_path / "ok" / "model.pt").energy_range == (5.0, 50.0)
    for extra in (["--energy-range", "6-50"], ["--energy-range", "50-5"]):
        with pytest.raises(SystemExit) as stop:
            _train(tmp_path / "bad", *data, *extra)
        assert stop.value.code == 2
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert "energy" in error and "Traceback" not in error
    with pytest.raises(SystemExit):
        _train(tmp_path / "sim", "--energy-range", "1-100")
    assert "--energy-range goes with --data" in capsys.readouterr().err


def test_the_flow_vae_trains_and_samples(files, tmp_path):
    assert _train(tmp_path, "--model", "flow-vae", "--data", str(files["dir"] / "train.root"), "--events", "150") == 0
    assert isinstance(generate.load(tmp_path / "model.pt"), generate.FlowVAE)
    assert _sample(tmp_path, tmp_path / "flow.root", "--n", "30", "--particle", "pi+") == 0
    drawn = io.read_showers(tmp_path / "flow.root")
    assert drawn.images.shape == (30, 504) and bool((drawn.labels == simulate.PARTICLES["pi+"]).all())


def test_train_reads_labels_and_events_from_a_root_file(files, tmp_path):
    assert _train(tmp_path, "--data", str(files["dir"] / "train.root"), "--events", "120", "--seed", "4") == 0
    run = checkpoint.read_checkpoint(checkpoint.checkpoint_files(tmp_path / "checkpoints")[-1])["run"]
    assert (run["size"], run["seed"]) == (120, 4)
    energy = files["labelled"].energy[:120]
    assert run["energy_range"] == pytest.approx([float(energy.min()), float(energy.max())])
    assert generate.load(tmp_path / "model.pt").trained == tuple(
        p for p, c in simulate.PARTICLES.items() if bool((files["labelled"].labels[:120] == c).any()))


def test_resume_continues_an_interrupted_run_to_the_same_weights(tmp_path, monkeypatch):
    data = ["--events", "200", "--seed", "1"]
    assert cli.main(["generate", "train", "--out", str(tmp_path / "whole"), "--epochs", "2", *data]) == 0
    begin = generate.ShowerVAE.begin_epoch

    def interrupted(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        begin(self, epoch)

    monkeypatch.setattr(generate.ShowerVAE, "begin_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["generate", "train", "--out", str(tmp_path / "cut"), "--epochs", "2", *data])
    monkeypatch.setattr(generate.ShowerVAE, "begin_epoch", begin)
    assert not (tmp_path / "cut" / "model.pt").exists()
    assert [p.name for p in checkpoint.checkpoint_files(tmp_path / "cut" / "checkpoints")] == ["001_train_e1.pt"]
    assert cli.main(["generate", "train", "--out", str(tmp_path / "cut"), "--resume"]) == 0  # the run's options
    whole, cut = (generate.load(tmp_path / name / "model.pt") for name in ("whole", "cut"))
    assert len(cut.history) == 2
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), cut.state_dict().values()))


def _sample(model, output, *extra):
    return cli.main(["generate", "sample", "--model", str(model), "--output", str(output), *extra])


def test_sample_writes_both_hdf5_layouts_and_root_in_steps(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "SAMPLE_BLOCK", 100)
    drawn = []
    original = generate.ShowerVAE.sample

    def spy(self, n, **options):
        drawn.append(n)
        return original(self, n, **options)

    monkeypatch.setattr(generate.ShowerVAE, "sample", spy)
    options = ["--n", "250", "--energy", "10-50", "--particle", "e+", "--seed", "3"]
    assert _sample(trained, tmp_path / "steps.h5", *options, "--step-size", "70") == 0
    assert max(drawn) == 100  # drawn in blocks, never all 250 at once
    assert _sample(trained / "model.pt", tmp_path / "one.h5", *options, "--step-size", "250") == 0
    assert _sample(trained, tmp_path / "challenge.h5", *options, "--format", "calochallenge") == 0
    assert _sample(trained, tmp_path / "steps.root", *options, "--step-size", "70") == 0
    assert _sample(trained, tmp_path / "seed4.h5", *options[:-1], "4") == 0
    with h5py.File(tmp_path / "steps.h5") as f:
        assert {"layer_0", "layer_1", "layer_2", "energy", "label"} <= set(f) and "showers" not in f
    with h5py.File(tmp_path / "challenge.h5") as f:
        assert {"showers", "incident_energies", "label"} <= set(f) and "layer_0" not in f
    steps, one = io.read_calogan(tmp_path / "steps.h5"), io.read_calogan(tmp_path / "one.h5")
    assert steps.images.shape == (250, 504) and bool((steps.images >= 0).all()) and float(steps.images.sum()) > 0
    assert torch.equal(steps.images, one.images) and torch.equal(steps.energy, one.energy)
    assert not torch.equal(steps.energy[:100], steps.energy[100:200])  # each block its own draws
    assert bool((steps.labels == simulate.PARTICLES["e+"]).all())
    assert bool(((steps.energy >= 10) & (steps.energy <= 50)).all()) and abs(float(steps.energy.mean()) - 30) < 4
    challenge = io.read_calochallenge(tmp_path / "challenge.h5", geometry="calogan")
    for other in (challenge, io.read_showers(tmp_path / "steps.root")):
        torch.testing.assert_close(other.images, steps.images)
        torch.testing.assert_close(other.energy, steps.energy)
        assert torch.equal(other.labels, steps.labels)
    assert not torch.equal(io.read_calogan(tmp_path / "seed4.h5").images, steps.images)
    assert not list(tmp_path.glob(".*.tmp"))


def test_sample_draws_every_trained_particle_or_one_energy(trained, gamma_model, tmp_path):
    assert _sample(trained, tmp_path / "mixed.root", "--n", "150") == 0
    mixed = io.read_showers(tmp_path / "mixed.root")
    assert set(mixed.labels.tolist()) == {0, 1, 2}
    assert bool(((mixed.energy >= 1) & (mixed.energy <= 100)).all())
    assert _sample(gamma_model, tmp_path / "gammas.h5", "--n", "40", "--energy", "20") == 0
    gammas = io.read_calogan(tmp_path / "gammas.h5")
    assert bool((gammas.energy == 20).all()) and bool((gammas.labels == simulate.PARTICLES["gamma"]).all())


def test_steps_regroup_blocks_in_order():
    blocks = iter([(torch.arange(0, 100),), (torch.arange(100, 200),), (torch.arange(200, 250),)])
    steps = list(generation._steps(blocks, 70))
    assert [len(s[0]) for s in steps] == [70, 70, 70, 40]
    assert torch.equal(torch.cat([s[0] for s in steps]), torch.arange(250))


def test_evaluate_compares_any_pair_of_files(trained, files, tmp_path, capsys):
    generated = tmp_path / "generated.h5"
    assert _sample(trained, generated, "--n", "100", "--energy", "10-50") == 0
    data, out = files["dir"], tmp_path / "evaluation"
    capsys.readouterr()
    assert cli.main(["generate", "evaluate", "--generated", str(generated), "--reference", str(data / "reference.h5"),
                     "--floor", str(data / "floor.root"), "--geometry", "calogan", "--out", str(out),
                     "--events", "60"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == {"generated": 60, "reference": 60, "floor": 60, "floor_reference": 60}
    assert results["floor_source"] == "sample"
    totals = [shower_features(x[:60], "calogan").total for x in
              (io.read_calogan(generated).images, files["reference"].images)]
    w1 = results["features"]["generated"]["energy_total"]["w1"]
    assert w1 == pytest.approx(wasserstein1(totals[1], totals[0]), rel=1e-4)
    rows = {line.split("  ")[0]: line.split() for line in printed.splitlines()}
    for level in ("cells", "features"):
        auc = rows[f"classifier AUC, {level}"][-2:]
        assert auc == [f"{results['classifier'][level][c]['auc']:.3f}" for c in ("generated", "floor")]
    assert "mean separation power" in rows and "FPD x 10^3" in rows
    assert (out / "report.md").exists()


BAD = {
    "unknown model": (lambda d, m, g: ["train", "--model", "gan", "--out", f"{d}/x"], "invalid choice: 'gan'"),
    "missing data": (lambda d, m, g: ["train", "--data", f"{d}/nope.root", "--out", f"{d}/x"], "nope.root"),
    "data of another geometry": (lambda d, m, g: ["train", "--data", f"{d}/photons.h5", "--out", f"{d}/x"],
                                 "photons.h5: dataset 'showers' has 368 voxels"),
    "unlabelled data": (lambda d, m, g: ["train", "--data", f"{d}/gammas.h5", "--out", f"{d}/x"],
                        "gammas.h5: the showers have no labels; pass --particle"),
    "particle for labelled data": (lambda d, m, g: ["train", "--data", f"{d}/train.root", "--particle", "e+",
                                                    "--out", f"{d}/x"], "has labels of its own"),
    "npy data": (lambda d, m, g: ["train", "--data", f"{d}/train.npy", "--out", f"{d}/x"],
                 "train.npy: .npy files hold no incident energies"),
    "checkpoints without resume": (lambda d, m, g: ["train", "--out", f"{m}", "--events", "300"], "pass --resume"),
    "resume another model": (lambda d, m, g: ["train", "--model", "flow-vae", "--out", f"{m}", "--resume"],
                             "001_train_e1.pt: a checkpoint of a 'vae' generator"),
    "model of another geometry": (lambda d, m, g: ["sample", "--model", f"{m}", "--n", "5", "--output", f"{d}/x.h5",
                                                   "--geometry", "calochallenge-ds1-photons"],
                                  "model.pt: a generator for geometry 'calogan'"),
    "missing model": (lambda d, m, g: ["sample", "--model", f"{d}/nope", "--n", "5", "--output", f"{d}/x.h5"],
                      "nope: no such generator file"),
    "energy outside the trained range": (lambda d, m, g: ["sample", "--model", f"{m}", "--n", "5", "--energy",
                                                          "0.5-50", "--output", f"{d}/x.h5"],
                                         "reaches outside the trained range 1-100 GeV"),
    "energy not a range": (lambda d, m, g: ["sample", "--model", f"{m}", "--n", "5", "--energy", "ten",
                                            "--output", f"{d}/x.h5"], "--energy: expected GeV as LOW-HIGH"),
    "untrained particle": (lambda d, m, g: ["sample", "--model", f"{g}", "--n", "5", "--particle", "e+",
                                            "--output", f"{d}/x.h5"], "'e+' was not in the training showers"),
    "unknown particle": (lambda d, m, g: ["sample", "--model", f"{m}", "--n", "5", "--particle", "mu-",
                                          "--output", f"{d}/x.h5"], "unknown 'mu-'"),
    "unknown output kind": (lambda d, m, g: ["sample", "--model", f"{m}", "--n", "5", "--output", f"{d}/x.txt"],
                            "--output"),
    "format of a root output": (lambda d, m, g: ["sample", "--model", f"{m}", "--n", "5", "--format", "calogan",
                                                 "--output", f"{d}/x.root"], "--format calogan"),
    "missing generated file": (lambda d, m, g: ["evaluate", "--generated", f"{d}/nope.h5", "--reference",
                                                f"{d}/reference.h5", "--geometry", "calogan", "--out", f"{d}/x"],
                               "nope.h5"),
    "missing hdf5 dataset": (lambda d, m, g: ["evaluate", "--generated", f"{d}/no_incident.h5", "--reference",
                                              f"{d}/reference.h5", "--geometry", "calogan", "--out", f"{d}/x"],
                             "no_incident.h5: no dataset 'incident_energies'"),
    "hdf5 of no known layout": (lambda d, m, g: ["evaluate", "--generated", f"{d}/other.h5", "--reference",
                                                 f"{d}/reference.h5", "--geometry", "calogan", "--out", f"{d}/x"],
                                "other.h5: neither a CaloGAN"),
    "no incident energies": (lambda d, m, g: ["evaluate", "--generated", f"{d}/no_energy.root", "--reference",
                                              f"{d}/reference.h5", "--geometry", "calogan", "--out", f"{d}/x"],
                             "no_energy.root: the generated showers have no incident energies"),
    "evaluate in another geometry": (lambda d, m, g: ["evaluate", "--generated", f"{d}/reference.h5", "--reference",
                                                      f"{d}/reference.h5", "--geometry", "calochallenge-ds1-photons",
                                                      "--out", f"{d}/x"], "reference.h5: dataset 'showers' has 504"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_exit_2_with_one_line_naming_the_problem(case, files, trained, gamma_model, capsys):
    make, expected = BAD[case]
    data = files["dir"]
    argv = ["generate", *make(data, trained, gamma_model)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    assert expected in err.strip().splitlines()[-1]
    assert not any((data / name).exists() for name in ("x", "x.h5", "x.root", "x.txt"))
    assert [p.name for p in checkpoint.checkpoint_files(trained / "checkpoints")] == ["001_train_e1.pt"]


def test_a_finished_run_resumed_is_loaded_not_retrained(trained, tmp_path, monkeypatch):
    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    (out / "model.pt").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(generate.ShowerVAE, "losses", no_training)
    assert cli.main(["generate", "train", "--out", str(out), "--resume"]) == 0
    before, after = (generate.load(path / "model.pt").state_dict() for path in (trained, out))
    assert all(torch.equal(before[k], after[k]) for k in before)
