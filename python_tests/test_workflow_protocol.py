"""The benchmark protocol: label-free selection, detector instances with paired intervals, label shift,
the real test split of ``sim2real adapt``, and tuning that never touches a test preset."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from sim2real_fast import cli, io, simulate, workflow
from sim2real_fast.evaluate import paired_difference, particle_metrics
from sim2real_fast.workflow import RunConfig

TINY = {"events": 300, "real_events": 300, "export": False,
        "adapt": {"epochs": 2, "batch_size": 100, "pseudo_iterations": 1, "few_shot_epochs": 1, "simclr_epochs": 1}}
QUIET = {"progress": False, "log": lambda _: None}


def _config(tmp_path, **changes) -> RunConfig:
    return RunConfig.from_dict({**TINY, "out": str(tmp_path / "run"), **changes})


def test_scores_come_from_the_selection_rule_pick(tmp_path):
    results = workflow.run(_config(tmp_path, methods=["source_only", "dann"], selection="im"), **QUIET)
    for method, entry in results["methods"].items():
        run = json.loads(next((tmp_path / "run" / "methods").glob(f"{method}-d0-seed0/result.json")).read_text())
        assert run["selected"]["rule"] == "im"
        assert run["selected"]["index"] == run["selection"]["im"]["index"]
        assert entry["target_accuracy"] == pytest.approx(run["selection"]["im"]["target_accuracy"])
        assert entry["target_accuracy_last"] == pytest.approx(run["selection"]["last"]["target_accuracy"])
        assert {"source_accuracy", "im", "snd", "dev", "last", "oracle"} <= set(run["selection"])
        for key in ("em_accuracy", "em_auc", "pion_auc", "source_em_auc"):
            assert 0.0 <= entry[key] <= 1.0
    with pytest.raises(ValueError, match="selection must be one of"):
        RunConfig(selection="oracle")


def test_detector_instances_are_paired_and_give_intervals(tmp_path):
    config = _config(tmp_path, methods=["source_only", "target_oracle", "rescale_layers"], detector_seeds=[0, 1],
                     seeds=[0, 1], preset="stress")
    results = workflow.run(config, **QUIET)
    data = tmp_path / "run" / "data"
    assert (data / "real-stress-d0.root").exists() and (data / "real-stress-d1.root").exists()
    a, b = (io.read_showers(data / f"real-stress-d{k}.root") for k in (0, 1))
    assert not torch.equal(a.images, b.images)
    entry = results["methods"]["target_oracle"]
    assert sorted((r["detector_seed"], r["seed"]) for r in entry["per_seed"]) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    paired = entry["vs_source_only"]["target_accuracy"]
    assert set(paired["per_instance"]) == {0, 1} and paired["runs"] == 4
    assert paired["low"] <= paired["mean"] <= paired["high"]
    assert "source_only" not in [m for m, e in results["methods"].items() if "vs_source_only" in e]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Paired difference to source_only" in report and "Gap decomposition" in report
    assert (tmp_path / "run" / "figures" / "distributions_piplus.png").exists()
    with pytest.raises(ValueError, match="detector_seeds"):
        RunConfig(sim="a.root", real="b.root", detector_seeds=(0, 1))


def test_paired_difference_bootstrap():
    method = {(i, s): 0.7 + 0.01 * i + 0.001 * s for i in range(4) for s in range(3)}
    baseline = {k: v - 0.05 for k, v in method.items()}
    d = paired_difference(method, baseline)
    assert d["mean"] == pytest.approx(0.05) and d["low"] == pytest.approx(0.05) and d["high"] == pytest.approx(0.05)
    assert d["wins"] == 1.0 and d["runs"] == 12
    noisy = {k: v + (0.1 if k[0] % 2 else -0.1) for k, v in baseline.items()}
    d = paired_difference(noisy, baseline)
    assert d["low"] < 0 < d["high"] and d["wins"] == 0.5
    assert paired_difference({}, baseline)["runs"] == 0


def test_particle_metrics_separate_the_em_pair_from_pions():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    probs = torch.tensor([[0.5, 0.1, 0.4], [0.3, 0.2, 0.5], [0.2, 0.3, 0.5], [0.1, 0.5, 0.4],
                          [0.1, 0.1, 0.8], [0.3, 0.25, 0.45]])
    m = particle_metrics(labels, probs, class_names=["e+", "gamma", "pi+"])
    assert m["em_accuracy"] == 1.0 and m["em_auc"] == 1.0
    assert m["pion_auc"] == pytest.approx(6 / 8)  # pi+ scores 0.8, 0.45 against EM 0.4, 0.5, 0.5, 0.4
    assert particle_metrics(labels, probs, class_names=["a", "b", "c"]) == {}


def test_label_shift_subsamples_the_real_classes(tmp_path):
    config = _config(tmp_path, methods=["source_only"], real_events=600, real_class_fractions=[0.2, 0.2, 0.6])
    data = workflow.load_data(config, progress=False)
    labels = torch.cat([data.real_adapt.labels, data.real_test.labels])
    fractions = torch.bincount(labels, minlength=3).double() / len(labels)
    torch.testing.assert_close(fractions, torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64), atol=0.01, rtol=0)
    assert int((data.real_split < 0).sum()) == len(data.real) - len(labels) > 0
    with pytest.raises(ValueError, match="summing to 1"):
        RunConfig(real_class_fractions=(0.5, 0.6, 0.1))
    with pytest.raises(ValueError, match="expected 3 fractions"):
        workflow.load_data(config.replace(real_class_fractions=(0.5, 0.5)), progress=False)


def test_bad_run_options_stop_with_one_line(tmp_path, capsys):
    for arguments in (["--real-class-fractions", "0.5", "0.5"], ["--real-class-fractions", "0.5", "0.6", "0.1"]):
        with pytest.raises(SystemExit):
            cli.main(["run", "--quick", "--methods", "source_only", "--out", str(tmp_path / "bad"), *arguments])
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert error.startswith("sim2real run: error: ") and "real_class_fractions" in error


def test_adapt_holds_out_a_real_test_split(tmp_path, capsys):
    sim = simulate.showers(200, seed=1, effects="nominal")
    real = simulate.showers(200, seed=2, effects="realistic")
    io.write_showers_root(tmp_path / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(tmp_path / "real.root", real.images, real.labels, real.energy)
    assert cli.main(["adapt", "--sim", str(tmp_path / "sim.root"), "--real", str(tmp_path / "real.root"),
                     "--method", "few_shot", "--out", str(tmp_path / "fs"), "--epochs", "1"]) == 0
    split = json.loads((tmp_path / "fs" / "real_split.json").read_text())
    held_out = set(split["held_out"])
    assert len(held_out) == 100 and "held out" in capsys.readouterr().out
    saved = torch.load(tmp_path / "fs" / "model.ckpt", weights_only=True)
    first = saved["history"][0]
    assert first["stage"] == "train"
    assert cli.main(["evaluate", "--model", str(tmp_path / "fs" / "model.ckpt"), "--real", str(tmp_path / "real.root"),
                     "--split", str(tmp_path / "fs" / "real_split.json"), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["events"] == 100 and "em_auc" in metrics
    friend = io.read_arrays(tmp_path / "eval" / "predictions.root", tree="results")
    assert sorted(torch.nonzero(torch.as_tensor(friend["test"])).flatten().tolist()) == sorted(held_out)
    assert cli.main(["adapt", "--sim", str(tmp_path / "sim.root"), "--real", str(tmp_path / "real.root"),
                     "--real-test", str(tmp_path / "real.root"), "--method", "coral", "--out",
                     str(tmp_path / "coral"), "--epochs", "1"]) == 0
    assert json.loads((tmp_path / "coral" / "real_split.json").read_text())["held_out"] is None
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--model", str(tmp_path / "coral" / "model.ckpt"), "--real", str(tmp_path / "real.root"),
                  "--split", str(tmp_path / "coral" / "real_split.json"), "--out", str(tmp_path / "e2")])
    assert "without --split" in capsys.readouterr().err


def test_few_shot_draws_its_shots_outside_the_held_out_events(tmp_path, monkeypatch):
    from sim2real_fast.workflow import steps

    seen = {}
    original = steps.fit

    def spy(method, model, **kwargs):
        seen["pool"] = kwargs["target_labelled"].inputs
        return original(method, model, **kwargs)

    monkeypatch.setattr(steps, "fit", spy)
    sim = simulate.showers(120, seed=3, effects="nominal")
    real = simulate.showers(120, seed=4, effects="realistic")
    io.write_showers_root(tmp_path / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(tmp_path / "real.root", real.images, real.labels, real.energy)
    steps.adapt_step("few_shot", sim=str(tmp_path / "sim.root"), real=str(tmp_path / "real.root"),
                     out=str(tmp_path / "out"), config=workflow.RunConfig().adapt.replace(epochs=1, few_shot_epochs=1),
                     progress=False, log=lambda _: None)
    held_out = json.loads((tmp_path / "out" / "real_split.json").read_text())["held_out"]
    stored = io.read_showers(tmp_path / "real.root").images
    kept = [i for i in range(120) if i not in set(held_out)]
    torch.testing.assert_close(seen["pool"], stored[kept])


def test_tuning_simulates_only_the_dev_detector(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("tune", Path(__file__).parents[1] / "benchmarks" / "tune.py")
    tune = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tune)
    asked = []
    real_effects = simulate.real_effects

    def record(preset, detector_seed):
        asked.append(preset)
        return real_effects(preset, detector_seed)

    monkeypatch.setattr(simulate, "real_effects", record)
    monkeypatch.setattr(tune, "GRID", {"coral": ("coral_weight", (10.0, 100.0))})
    monkeypatch.setattr(tune, "REFERENCES", ("source_only",))
    monkeypatch.setattr(tune, "HERE", tmp_path / "tuning")
    monkeypatch.setattr("sys.argv", ["tune.py", "--events", "200", "--work", str(tmp_path / "work")])
    assert tune.main() == 0
    assert asked and set(asked) == {"dev"}
    chosen = (tmp_path / "tuning" / "chosen.yaml").read_text()
    assert "selection:" in chosen and "coral_weight:" in chosen
    configs = [json.loads(p.read_text()) for p in (tmp_path / "work").glob("*/run.json")]
    assert {c["preset"] for c in configs} == {"dev"} and {c["data_seed"] for c in configs} == {100}


def test_gap_recovered_only_where_target_oracle_beats_source_only_by_min_gap():
    from sim2real_fast.workflow.runner import MIN_GAP, _add_gap_recovered

    def runs(low, high, method):
        return {name: [{"detector_seed": 0, "seed": 0, "target_accuracy": value}]
                for name, value in (("source_only", low), ("target_oracle", high), ("coral", method))}

    assert MIN_GAP == 0.02
    resolved = runs(0.70, 0.80, 0.75)  # a 10-point gap
    _add_gap_recovered(resolved)
    assert resolved["coral"][0]["gap_recovered"] == pytest.approx(0.5)
    assert resolved["target_oracle"][0]["gap_recovered"] == pytest.approx(1.0)
    edge = runs(0.70, 0.72, 0.71)  # exactly 2 points, as ratios of counts round it
    _add_gap_recovered(edge)
    assert edge["coral"][0]["gap_recovered"] == pytest.approx(0.5)
    for low, high in ((0.790, 0.809), (0.791, 0.783)):  # 1.9 points; target_oracle below source_only
        small = runs(low, high, 0.80)
        _add_gap_recovered(small)
        assert all(small[m][0]["gap_recovered"] is None for m in small)


def test_report_notes_how_many_runs_resolve_the_gap():
    from sim2real_fast.workflow.outputs import _unresolved

    def methods(*per_run):
        runs = [{"gap_recovered": g} for g in per_run]
        defined = [g for g in per_run if g is not None]
        mean = sum(defined) / len(defined) if defined else None
        return {name: {"gap_recovered": mean, "per_seed": runs} for name in ("source_only", "target_oracle")}

    assert _unresolved(methods(0.0, 0.0)) == []
    assert "in 1 of 3 runs" in _unresolved(methods(0.0, None, None))[0]
    assert "left out (–)" in _unresolved(methods(None, None))[0]
