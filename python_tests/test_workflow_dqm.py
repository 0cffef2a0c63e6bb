"""`sim2real dqm`: both tasks end to end, the data splits, resume, a user's real maps, bad inputs."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import one_thread  # noqa: F401

from sim2real_fast import cli, io, simulate
from sim2real_fast.workflow import dqm as workflow
from sim2real_fast.workflow.dqm import DQMConfig, run_dqm
from sim2real_fast.workflow.dqm_data import fault_data, read_real_maps

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "hcal" / "hcal_dqm_run306138_10ls.hdf5"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/hcal (not in a user's clone)")
N_CELLS = 7 * 72 * 84
TINY = {"sim_maps": 40, "reference_maps": 6, "real_maps": 30, "run_lumisections": 12, "epochs": 1, "batch_size": 16,
        "threads": 1}
CONFIG = DQMConfig(task="both", methods=("source_only", "dann"), run_models=("cnn",), **TINY)
FIGURES = ("occupancy.png", "roc_faults.png", "anomaly_maps.png", "run_robustness.png")


def strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path}: {constant} is not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The tiny study of both tasks, simulated real domain: (out folder, returned results)."""
    out = tmp_path_factory.mktemp("dqm")
    return out, run_dqm(CONFIG, out=out, log=lambda text: None)


@pytest.fixture(scope="module")
def good():
    """Three good simulated LS, (3, 42336) counts."""
    return simulate.dqm_maps(3, faults=None, seed=7).maps


def test_results_json_is_strict_and_holds_every_unit(study):
    out, results = study
    stored = strict_json(out / "results.json")
    assert stored == results
    assert stored["config"] == json.loads(json.dumps(dataclasses.asdict(CONFIG))) and stored["real"] is None
    faults = stored["faults"]
    assert set(faults["methods"]) == {"source_only", "dann"} and set(faults["baselines"]) == {"ratio", "zscore"}
    for name, entry in faults["methods"].items():
        low, high = entry["map"]["ci95"]
        assert 0 <= low <= entry["map"]["auc"] <= high <= 1, name
        assert 0 <= entry["channel"]["auc"] <= 1 and 0 <= entry["false_alarm"]["rate"] <= 1
        assert 0 <= entry["accuracy"] <= 1 and entry["train_seconds"] > 0 and entry["energy_joules"] >= 0
        assert entry["selected"]["rule"] == "im" and entry["selected"]["epoch"] == 1
    for entry in faults["baselines"].values():
        assert 0 <= entry["map"]["auc"] <= 1 and 0 <= entry["channel"]["auc"] <= 1
    assert faults["baselines"]["zscore"]["map"]["auc"] > 0.9  # the faults are there to be found
    pick = faults["label_free_pick"]
    assert pick["rule"] == "im"
    assert pick["method"] == max(faults["methods"], key=lambda m: faults["methods"][m]["selected"]["im"])
    targets = faults["targets"]
    assert len(targets) == 4 and all(set(t) == {"value", "met"} for t in targets.values())
    assert targets["map_auc >= 0.95"]["value"] == faults["methods"][pick["method"]]["map"]["auc"]
    assert set(stored["run"]) == {"cnn"} and set(stored["run"]["cnn"]) == {"raw", "events"}
    for entry in stored["run"]["cnn"].values():
        assert 0 <= entry["auc"] <= 1 and len(entry["ci95"]) == 2
        assert [b["ls"] for b in entry["by_ls"]] == [[6, 7], [8, 9], [10, 10], [11, 11]]  # the test half, LS 6-11
        assert sum(b["n"] for b in entry["by_ls"]) == 12 == entry["data"]["test"]  # 6 LS of each run


def test_report_and_figures(study):
    out, _ = study
    report = (out / "report.md").read_text()
    for text in ("source_only (label-free pick)", "| dann |", "ratio (no training)", "zscore (no training)",
                 "A smoke test", "## Run classification", "| cnn | raw |", "| cnn | events |"):
        assert text in report, text
    for name in FIGURES:
        figure = out / "figures" / name
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(figures/{name})" in report


def test_counts_of_the_simulated_real_run(study):
    data = study[1]["faults"]["data"]
    ls = np.arange(CONFIG.real_maps)
    assert data["folds"] == 1 and data["real_reference_ls"] == [int((ls % 5 == 0).sum())] == [6]
    assert data["real_test_good"] == int((ls % 5 >= 3).sum()) == 12
    assert data["real_test_faulty"] == 12 * CONFIG.test_seeds
    assert data["real_adapt"] == int(((ls % 5 == 1) | (ls % 5 == 2)).sum())
    assert (data["sim_train"], data["sim_val"], data["sim_test"]) == (32, 8, 10)
    for entry in (*study[1]["faults"]["methods"].values(), *study[1]["faults"]["baselines"].values()):
        assert (entry["map"]["n_good"], entry["map"]["n_faulty"]) == (12, 12)
        assert entry["false_alarm"]["n_good"] == 12


def test_fault_data_tests_the_right_lumisections():
    data = fault_data(sim_maps=8, reference_maps=4, real_maps=30, real=None, test_seeds=2, seed=0)
    labels = data.real_test.labels
    assert len(labels) == 36 and (labels[:12] == 0).all() and (labels[12:] > 0).all()
    assert data.description["real_test_faulty"] == 24 and data.description["fault_draws_per_test_ls"] == 2
    assert not data.channel_labels[:12].any() and data.channel_labels[12:].any(1).all()
    run = simulate.dqm_maps(30, domain="real", faults=None, seed=2)  # the simulated real run of seed 0
    test_ls = torch.arange(30)[torch.arange(30) % 5 >= 3]
    assert torch.equal(data.test_maps[:12], run.maps[test_ls])
    assert torch.equal(data.test_maps[12:24].ne(run.maps[test_ls]).any(1), torch.ones(12, dtype=torch.bool))
    assert data.active.shape == (36, N_CELLS) and data.baselines["zscore"].maps.shape == (36,)
    assert data.real_adapt.labels is None and len(data.real_adapt) == 12


def test_resume_reads_the_stored_units_without_training(study, tmp_path, monkeypatch):
    out, results = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(workflow, "fit", no_training)
    resumed = run_dqm(CONFIG, out=copy, resume=True, log=lambda text: None)
    assert resumed["faults"]["methods"] == results["faults"]["methods"]
    assert resumed["faults"]["baselines"] == results["faults"]["baselines"]
    assert resumed["run"] == results["run"]
    with pytest.raises(ValueError, match="--resume"):
        run_dqm(dataclasses.replace(CONFIG, epochs=2), out=copy, resume=True, log=lambda text: None)
    with pytest.raises(ValueError, match="--resume"):
        run_dqm(dataclasses.replace(CONFIG, methods=("source_only",)), out=copy, resume=True, log=lambda text: None)


def test_resume_after_an_interruption_finishes_the_missing_unit(study, tmp_path, monkeypatch):
    out, results = study
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("result.json", "arrays.pt"):
        (copy / "faults" / "dann" / name).unlink()
    trained = []

    def recording_fit(method, *args, **kwargs):
        trained.append(method)
        return workflow_fit(method, *args, **kwargs)

    workflow_fit = workflow.fit
    monkeypatch.setattr(workflow, "fit", recording_fit)
    resumed = run_dqm(CONFIG, out=copy, resume=True, log=lambda text: None)
    assert trained == ["dann"]
    assert resumed["faults"]["methods"]["dann"]["map"] == results["faults"]["methods"]["dann"]["map"]
    assert resumed["faults"]["methods"]["dann"]["channel"] == results["faults"]["methods"]["dann"]["channel"]


@needs_data
def test_faults_on_the_real_file(tmp_path):
    config = DQMConfig(task="faults", methods=("source_only",), **TINY)
    results = run_dqm(config, out=tmp_path, real=DATA, log=lambda text: None)
    data = results["faults"]["data"]
    assert data["real"] == str(DATA) and results["real"] == str(DATA) and "run" not in results
    assert data["folds"] == 2 and data["real_reference_ls"] == [5, 5]
    assert (data["real_test_good"], data["real_test_faulty"], data["fault_draws_per_test_ls"]) == (10, 200, 20)
    entry = results["faults"]["methods"]["source_only"]
    assert (entry["map"]["n_good"], entry["map"]["n_faulty"]) == (10, 200)
    strict_json(tmp_path / "results.json")
    assert (tmp_path / "figures" / "roc_faults.png").exists()


@needs_data
def test_run_classification_with_the_real_file_as_run_b(tmp_path):
    config = DQMConfig(task="run", run_models=("cnn",), **TINY)
    results = run_dqm(config, out=tmp_path, real=DATA, log=lambda text: None)
    assert "faults" not in results
    for entry in results["run"]["cnn"].values():
        assert entry["data"]["runs"] == ["A", str(DATA)] and entry["data"]["lumisections"] == [10, 10]
        assert entry["data"]["test"] == 10 and len(entry["by_ls"]) == 4
        assert sum(b["n"] for b in entry["by_ls"]) == 10


# ---- a user's real maps ---------------------------------------------------------------------------------
@needs_data
def test_read_real_maps_reads_the_hcal_dqm_file():
    maps = read_real_maps(DATA)
    assert maps.maps.shape == (10, N_CELLS) and maps.geometry.name == "hcal"
    assert torch.equal(maps.maps, io.read_hcal_dqm(DATA).maps)


@pytest.mark.parametrize("layout", ["npy_depths", "npy_rows", "npy_flat", "th2", "tree", "h5"])
def test_read_real_maps_reads_every_layout(good, tmp_path, layout):
    path = tmp_path / {"th2": "maps.root", "tree": "maps.root", "h5": "maps.h5"}.get(layout, "maps.npy")
    if layout.startswith("npy"):
        shape = {"npy_depths": (3, 7, 72, 84), "npy_rows": (3, 7 * 72, 84), "npy_flat": (3, N_CELLS)}[layout]
        np.save(path, good.numpy().reshape(shape))
    elif layout == "th2":
        io.write_th2(path, good, geometry="hcal")
    elif layout == "tree":
        io.write_maps_root(path, good, geometry="hcal")
    else:
        io.write_hcal_dqm(path, good)
    maps = read_real_maps(path)
    assert maps.geometry.name == "hcal" and torch.equal(maps.maps, good)


def _nan(good, index=2 * 72 * 84 + 100):
    """The maps with a NaN in depth 3."""
    bad = good.clone()
    bad[1, index] = float("nan")
    return bad


def _h5_with_odd_depth(path, good):
    import h5py

    with h5py.File(path, "w") as out:
        for depth, layer in enumerate(good.view(3, 7, 72, 84).unbind(1), 1):
            out[f"RecHitTask_Occupancy_depth_depth{depth}"] = layer[:, :, :80].numpy() if depth == 3 else layer.numpy()


def _th2_of_other_binning(path, good):
    import uproot

    with uproot.recreate(path) as out:
        for ls in range(2):
            for depth in range(1, 8):
                out[f"ls{ls}_depth{depth}"] = (np.ones((80, 72)), np.arange(81.0), np.arange(73.0))


BAD_FILES = {
    "npy_other_depth_shape": ("maps.npy", lambda p, g: np.save(p, np.ones((3, 7, 72, 80), np.float32)), []),
    "npy_other_cells": ("maps.npy", lambda p, g: np.save(p, np.ones((3, 100), np.float32)), []),
    "npy_nan": ("maps.npy", lambda p, g: np.save(p, _nan(g).numpy()), ["NaN"]),
    "npy_negative": ("maps.npy", lambda p, g: np.save(p, -g.numpy()), ["negative"]),
    "npy_one_ls": ("maps.npy", lambda p, g: np.save(p, g[:1].numpy()), ["lumi-section"]),
    "h5_other_depth_shape": ("maps.h5", _h5_with_odd_depth, ["RecHitTask_Occupancy_depth_depth3"]),
    "h5_nan": ("maps.h5", lambda p, g: io.write_hcal_dqm(p, _nan(g)), ["RecHitTask_Occupancy_depth_depth3", "NaN"]),
    "th2_other_binning": ("maps.root", _th2_of_other_binning, ["ls0_depth1", "84"]),
    "th2_nan": ("maps.root", lambda p, g: io.write_th2(p, _nan(g), geometry="hcal"), ["depth3", "NaN"]),
    "unknown_suffix": ("maps.txt", lambda p, g: p.write_text("1 2 3\n"), [".txt"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_read_real_maps_names_the_file_and_the_problem(good, tmp_path, case):
    name, write, words = BAD_FILES[case]
    path = tmp_path / name
    write(path, good)
    with pytest.raises(ValueError) as error:
        read_real_maps(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_read_real_maps_of_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_real_maps(tmp_path / "missing.h5")


@pytest.mark.parametrize("options, word", [({"task": "all"}, "--task"), ({"model": "mlp"}, "--model"),
                                           ({"input": "log"}, "--input"), ({"methods": ("dan",)}, "dan"),
                                           ({"sim_maps": 2}, "sim_maps"), ({"epochs": 0}, "epochs")])
def test_config_rejects_bad_options(options, word):
    with pytest.raises(ValueError, match=word):
        DQMConfig(**options)


# ---- the command ----------------------------------------------------------------------------------------
def test_cli_quick_fault_detection(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["dqm", "--quick", "--task", "faults", "--methods", "source_only", "--epochs", "1",
                     "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "source_only (label-free pick)" in printed and "smoke test" in printed and "zscore (no training)" in printed
    results = strict_json(out / "results.json")
    config = results["config"]
    assert (config["task"], config["methods"], config["epochs"]) == ("faults", ["source_only"], 1)
    assert (config["sim_maps"], config["real_maps"]) == (workflow.QUICK["sim_maps"], workflow.QUICK["real_maps"])
    assert "run" not in results and results["faults"]["data"]["real_test_good"] == 40
    assert (out / "report.md").exists()


@pytest.fixture(scope="module")
def bad_files(good, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    np.save(root / "nan.npy", _nan(good).numpy())
    np.save(root / "wrong.npy", np.ones((3, 7, 72, 80), np.float32))
    (root / "a_file").write_text("not a folder\n")
    return root


BAD_ARGS = {
    "nan": (["--real", "{root}/nan.npy"], ["nan.npy", "NaN"]),
    "wrong_shape": (["--real", "{root}/wrong.npy"], ["wrong.npy", "80"]),
    "missing": (["--real", "{root}/missing.h5"], ["missing.h5", "no such file"]),
    "out_is_a_file": (["--out", "{root}/a_file"], ["--out", "a_file"]),
    "unknown_method": (["--methods", "unknown_method"], ["unknown_method"]),
    "input": (["--input", "bogus"], ["--input", "bogus"]),
    "epochs": (["--epochs", "0"], ["--epochs"]),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_inputs_exit_2_with_one_line_naming_the_problem(case, bad_files, tmp_path, capsys):
    extra, words = BAD_ARGS[case]
    argv = ["dqm", "--quick", "--out", str(tmp_path / "out")] + [a.format(root=bad_files) for a in extra]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert "error:" in line
    for word in words:
        assert word in line, (word, line)
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked
