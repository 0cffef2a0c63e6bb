"""The sim2real command as a new user meets it: a bad file or option exits with code 2 and one line naming it
(no traceback); --resume without an earlier run starts fresh; --quick says it is a smoke test; results.json
is strict JSON and gap_recovered is left out, with a reason, without a 2-point gap."""

from __future__ import annotations

import contextlib
import io as text_io
import json
import math

import pytest
import torch

from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from sim2real_fast import cli, geometry, io, simulate
from sim2real_fast.models import CaloCNN
from sim2real_fast.workflow import outputs, runner
from sim2real_fast.workflow._json import write_json
from sim2real_fast.workflow.config import SMOKE_TEST


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny shower files (60 events each), DQM maps as a tree and as TH2, a text file and a saved model."""
    folder = tmp_path_factory.mktemp("files")
    sim = simulate.showers(60, seed=1, effects="nominal")
    real = simulate.showers(60, seed=2, effects="realistic")
    io.write_showers_root(folder / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(folder / "real.root", real.images, real.labels, real.energy)
    maps = simulate.dqm_maps(2, domain="sim", seed=0)
    io.write_maps_root(folder / "dqm_tree.root", maps.maps, geometry=maps.geometry, labels=maps.labels)
    io.write_th2(folder / "dqm_th2.root", maps.maps, geometry=maps.geometry)
    (folder / "notes.txt").write_text("hello\n")
    calogan = geometry.get("calogan")
    torch.save({"state_dict": CaloCNN(calogan, n_classes=3).state_dict(), "geometry": calogan.to_dict(),
                "class_names": ["e+", "gamma", "pi+"], "method": "source_only"}, folder / "model.ckpt")
    (folder / "wide.json").write_text(json.dumps({"name": "wide", "layers": [
        {"name": "front", "rows": 24, "cols": 24}, {"name": "back", "rows": 4, "cols": 4}]}))
    return {name.split(".")[0]: str(folder / name) for name in ("sim.root", "real.root", "dqm_tree.root",
                                                                "dqm_th2.root", "notes.txt", "model.ckpt", "wide.json")}


def _error(argv: list[str], capsys) -> str:
    """The one-line message of a command that must exit with code 2 after its usage lines."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    prefix = f"sim2real {argv[0]}: error: "
    assert lines[-1].startswith(prefix), err
    assert all(line.startswith(("usage:", " ")) for line in lines[:-1]), err  # usage lines, then one message
    return lines[-1][len(prefix):]


@pytest.mark.parametrize("command", [
    ["run", "--sim", "{notes}", "--real", "{notes}"],
    ["run", "--sim", "{sim}", "--real", "{notes}"],
    ["train", "--sim", "{notes}"],
    ["adapt", "--sim", "{sim}", "--real", "{notes}", "--method", "dann"],
    ["evaluate", "--model", "{model}", "--real", "{real}", "--sim", "{notes}"],
])
def test_a_text_file_as_events(files, tmp_path, command, capsys):
    message = _error([part.format(**files) for part in command] + ["--out", str(tmp_path / "out")], capsys)
    assert files["notes"] in message and "is not a ROOT file" in message
    assert "expected a ROOT event tree 'events'" in message and "hit_cell" in message
    if command[0] == "run":  # a run that could not read its data leaves no configuration to resume
        assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_an_unknown_geometry(tmp_path, command, capsys):
    message = _error([command, "--geometry", "unknown", "--out", str(tmp_path / "out"), "--events", "20"], capsys)
    assert "unknown geometry 'unknown'" in message and "calogan" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["run", "simulate"])
def test_out_is_a_file(files, command, capsys):
    message = _error([command, "--out", files["notes"], "--events", "20"], capsys)
    assert "--out" in message and files["notes"] in message and "expected a folder" in message


@pytest.mark.parametrize("command", [["run"], ["train", "--sim", "{sim}", "--out", "{out}"]])
def test_a_missing_config_file(files, tmp_path, command, capsys):
    missing = str(tmp_path / "missing.yaml")
    argv = [part.format(**files, out=tmp_path / "out") for part in command] + ["--config", missing]
    message = _error(argv, capsys)
    assert missing in message and "config file not found" in message and "YAML" in message


@pytest.mark.parametrize("maps", ["dqm_tree", "dqm_th2"])
def test_dqm_maps_as_showers(files, tmp_path, maps, capsys):
    message = _error(["run", "--sim", files[maps], "--real", files["real"], "--out", str(tmp_path)], capsys)
    assert files[maps] in message and "looks like a DQM occupancy-maps file" in message
    assert f"sim2real dqm --real {files[maps]}" in message


def test_the_hcal_geometry_is_refused_for_showers(files, tmp_path, capsys):
    for argv in (["run", "--sim", files["sim"], "--real", files["real"], "--out", str(tmp_path / "run")],
                 ["train", "--sim", files["sim"], "--out", str(tmp_path / "train")],
                 ["simulate", "--out", str(tmp_path / "simulate"), "--events", "20"]):
        message = _error(argv + ["--geometry", "hcal"], capsys)
        assert "geometry 'hcal'" in message and "occupancy maps" in message and "not a calorimeter" in message
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "simulate").exists()


def test_hits_all_in_the_first_layer_of_a_larger_geometry(files, tmp_path, capsys):
    message = _error(["train", "--sim", files["sim"], "--geometry", files["wide"],
                      "--out", str(tmp_path)], capsys)
    assert files["sim"] in message and "geometry 'wide'" in message and "first layer 'front'" in message
    assert "largest hit_cell" in message and "--geometry" in message


@pytest.mark.parametrize("model, says", [("notes", "cannot be read as a model file"),
                                          ("sim", "cannot be read as a model file")])
def test_evaluate_a_file_that_is_no_model(files, tmp_path, model, says, capsys):
    message = _error(["evaluate", "--model", files[model], "--real", files["real"], "--out", str(tmp_path)], capsys)
    assert message.startswith(files[model]) and says in message and "sim2real train / adapt" in message


def test_evaluate_a_torch_file_of_something_else(files, tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.ckpt")
    message = _error(["evaluate", "--model", str(tmp_path / "other.ckpt"), "--real", files["real"],
                      "--out", str(tmp_path / "out")], capsys)
    assert "holds no geometry, class_names and state_dict" in message


@pytest.fixture(scope="module")
def quick_resumed(files, tmp_path_factory):
    """`sim2real run --quick --resume` on a new folder, with the tiny files (figures left out: they take seconds)."""
    out = tmp_path_factory.mktemp("quick") / "run"
    stdout, stderr = text_io.StringIO(), text_io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        patch.setattr(outputs, "_figures", lambda *args: {})
        code = cli.main(["run", "--quick", "--resume", "--out", str(out), "--sim", files["sim"], "--real",
                         files["real"], "--methods", "source_only", "--no-export", "--threads", "1"])
    return {"code": code, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_resume_without_an_earlier_run_starts_fresh(quick_resumed):
    assert quick_resumed["code"] == 0 and "Traceback" not in quick_resumed["stderr"]
    said = [line for line in quick_resumed["stderr"].splitlines() if "no earlier run" in line]
    assert said == [f"--resume: no earlier run in {str(quick_resumed['out'])!r} (no run.json); starting a fresh run"]
    assert (quick_resumed["out"] / "methods" / "source_only-dfile-seed0" / "result.json").exists()


def test_quick_says_smoke_test_first(quick_resumed):
    assert quick_resumed["stdout"].splitlines()[0] == SMOKE_TEST
    assert "source_only" in quick_resumed["stdout"]
    report = (quick_resumed["out"] / "report.md").read_text().splitlines()
    assert report[0].startswith("# ") and SMOKE_TEST in report[0]
    args = cli.build_parser().parse_args(["run"])
    from sim2real_fast.workflow.commands import _run_config

    assert not _run_config(args).quick


def _strict_loads(text: str):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_results_json_is_strict(quick_resumed, tmp_path):
    results = _strict_loads((quick_resumed["out"] / "results.json").read_text())
    assert results["config"]["quick"] is True and 0.0 <= results["methods"]["source_only"]["target_accuracy"] <= 1.0
    write_json(tmp_path / "x.json", {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": (2, 0.5)})
    assert _strict_loads((tmp_path / "x.json").read_text()) == {"a": None, "b": [1.0, None, {"c": None}], "d": [2, 0.5]}


def _runs(low: float, high: float, method: float) -> dict:
    return {name: [{"detector_seed": 0, "seed": 0, "target_accuracy": value, "n_test": 100_000}]
            for name, value in (("source_only", low), ("target_oracle", high), ("coral", method))}


@pytest.mark.parametrize("low, high, method, expected", [
    (0.70, 0.80, 0.75, 0.5),
    (0.70, 0.72, 0.71, 0.5),    # exactly 2 points: defined
    (0.70, 0.719, 0.71, None),  # 1.9 points, even with a test set that resolves it
    (0.80, 0.70, 0.75, None),   # target_oracle worse than source_only
])
def test_gap_recovered_needs_a_two_point_gap(low, high, method, expected):
    per_seed = _runs(low, high, method)
    runner._add_gap_recovered(per_seed)
    got = per_seed["coral"][0]["gap_recovered"]
    assert got is None if expected is None else got == pytest.approx(expected)
    summary = {name: {"target_accuracy": runs[0]["target_accuracy"], "gap_recovered": runs[0]["gap_recovered"],
                      "per_seed": runs} for name, runs in per_seed.items()}
    notes = outputs._unresolved(summary)
    if expected is None:
        assert notes and "does not beat source_only by 2 points" in notes[0]
        assert f"{100 * high:.1f}% vs {100 * low:.1f}%" in notes[0]
    else:
        assert notes == []


def test_report_says_why_a_score_is_missing():
    entry = {"target_accuracy": 0.7, "em_auc": None, "pion_auc": 0.9,
             "per_seed": [{"em_auc": math.nan, "pion_auc": 0.9}],
             "per_class": {"e+": {"precision": math.nan, "recall": 0.5}}}
    notes = outputs._missing({"dann": entry})
    assert any(note.startswith("em_auc is missing") and "dann" in note and "no e+ or no gamma" in note
               for note in notes)
    assert not any(note.startswith("pion_auc") for note in notes)
    assert any("never predicts" in note for note in notes)
