"""sim2real run end to end on tiny data: outputs, resume after a crash, configs, bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sim2real_fast import cli, io, workflow
from sim2real_fast.workflow import RunConfig

TINY = {"events": 400, "real_events": 400, "export": False,
        "adapt": {"epochs": 1, "batch_size": 128, "pseudo_iterations": 1, "pseudo_epochs": 1, "few_shot_epochs": 1,
                  "simclr_epochs": 1}}


def _config(tmp_path, **changes) -> RunConfig:
    return RunConfig.from_dict({**TINY, "out": str(tmp_path / "run"), **changes})


def _assert_same(a, b, where="results"):
    """Equal up to float round-off (feature MMD is not bit-reproducible), ignoring clock readings."""
    clock = {"seconds", "train_seconds", "energy_joules", "spread", "per_seed"}
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in set(a) - clock:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True), where
    else:
        assert a == b, where


def test_quick_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "quick"
    assert cli.main(["run", "--quick", "--out", str(out), "--threads", "2"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert list(results["methods"]) == list(workflow.DEFAULT_METHODS)
    for method, entry in results["methods"].items():
        for key in ("target_accuracy", "target_f1", "target_auc", "source_accuracy", "a_distance", "mmd",
                    "train_seconds", "energy_joules"):
            assert entry[key] is not None and math.isfinite(entry[key]), (method, key)
        assert 0.0 <= entry["target_accuracy"] <= 1.0 and method in printed
        assert set(entry["selection"]) >= {"source_accuracy", "im", "snd", "dev"}
    report = (out / "report.md").read_text()
    if results["methods"]["target_oracle"]["gap_recovered"] is None:  # a gap within the test set's noise
        assert "cannot resolve" in report
    else:
        assert results["methods"]["source_only"]["gap_recovered"] == pytest.approx(0.0)
        assert results["methods"]["target_oracle"]["gap_recovered"] == pytest.approx(1.0)
    for figure in ("roc.png", "embeddings.png", "distributions.png", "training.png"):
        assert (out / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"figures/{figure}" in report
    friend = io.read_arrays(out / "predictions.root", tree="results")
    n_real = len(io.read_showers(out / "data" / "real-realistic-d0.root"))
    assert len(friend["split"]) == n_real and friend["dann_score"].shape == (n_real, 3)
    for method in workflow.DEFAULT_METHODS:
        slug = workflow.method_slug(method)
        assert (out / "models" / f"{slug}.pt").exists() and (out / "models" / f"{slug}.onnx").exists()


def test_resume_after_a_crash_gives_the_same_results(tmp_path, monkeypatch):
    config = _config(tmp_path, methods=["source_only", "dann"], events=300, real_events=300)
    straight = workflow.run(config.replace(out=str(tmp_path / "straight")), progress=False, log=lambda _: None)

    from sim2real_fast.workflow import runner as run_module

    calls = {"n": 0}
    evaluate = run_module.evaluate_fit

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate_fit", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        workflow.run(config, progress=False, log=lambda _: None)
    assert (tmp_path / "run" / "methods" / "source_only-d0-seed0" / "result.json").exists()
    assert not (tmp_path / "run" / "methods" / "dann-d0-seed0" / "result.json").exists()
    monkeypatch.setattr(run_module, "evaluate_fit", evaluate)
    resumed = workflow.run(config, resume=True, progress=False, log=lambda _: None)
    _assert_same(resumed["methods"], straight["methods"])
    with pytest.raises(ValueError, match="another configuration"):
        workflow.run(config.replace(events=400), resume=True, progress=False, log=lambda _: None)


def test_files_and_bad_inputs(tmp_path):
    from sim2real_fast import simulate

    sim = simulate.showers(300, seed=1, effects="nominal")
    real = simulate.showers(300, effects="realistic", seed=2)
    io.write_showers_root(tmp_path / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(tmp_path / "real.root", real.images, real.labels, real.energy)
    io.write_showers_root(tmp_path / "unlabelled.root", sim.images, torch.full((300,), -1), sim.energy)
    config = _config(tmp_path, sim=str(tmp_path / "sim.root"), real=str(tmp_path / "real.root"),
                     methods=["source_only"])
    results = workflow.run(config, progress=False, log=lambda _: None)
    assert results["methods"]["source_only"]["gap_recovered"] is None  # no target_oracle in this run
    with pytest.raises(FileNotFoundError, match="missing.root"):
        workflow.run(config.replace(sim=str(tmp_path / "missing.root")), progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="unlabelled"):
        workflow.run(config.replace(sim=str(tmp_path / "unlabelled.root")), progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="does not match geometry 'calochallenge-ds1-photons'"):
        workflow.run(config.replace(geometry="calochallenge-ds1-photons"), progress=False, log=lambda _: None)
    with pytest.raises(ValueError, match="both sim and real"):
        RunConfig(sim=str(tmp_path / "sim.root"))
    with pytest.raises(ValueError, match="unknown method|expected"):
        RunConfig(methods=("dann", "magic"))


def test_yaml_config_and_flag_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("events: 1000\nmethods: [source_only, coral]\nadapt:\n  epochs: 2\n  coral_weight: 3.0\n")
    config = RunConfig.from_yaml(path)
    assert config.events == 1000 and config.methods == ("source_only", "coral") and config.adapt.coral_weight == 3.0
    args = cli.build_parser().parse_args(["run", "--config", str(path), "--events", "700", "--quick"])
    from sim2real_fast.workflow.commands import _run_config

    merged = _run_config(args)
    assert merged.events == 700 and merged.real_events == workflow.QUICK["real_events"]
    assert merged.adapt.epochs == 1 and merged.adapt.coral_weight == 3.0
    path.write_text("event: 1000\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown run option\(s\) \['event'\]"):
        RunConfig.from_yaml(path)
    with pytest.raises(SystemExit):
        cli.main(["run", "--sim", str(tmp_path / "sim.root")])


def test_train_adapt_evaluate_steps(tmp_path, capsys):
    from sim2real_fast import simulate

    sim = simulate.showers(300, seed=1, effects="nominal")
    real = simulate.showers(300, effects="realistic", seed=2)
    io.write_showers_root(tmp_path / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(tmp_path / "real.root", real.images, torch.full((300,), -1), real.energy)
    io.write_showers_root(tmp_path / "real_labelled.root", real.images, real.labels, real.energy)
    assert cli.main(["train", "--sim", str(tmp_path / "sim.root"), "--out", str(tmp_path / "base"), "--epochs", "1"]) == 0
    assert cli.main(["adapt", "--sim", str(tmp_path / "sim.root"), "--real", str(tmp_path / "real.root"),
                     "--method", "coral", "--out", str(tmp_path / "coral"), "--epochs", "1"]) == 0
    for name in ("model.ckpt", "model.pt", "model.onnx"):
        assert (tmp_path / "coral" / name).exists()
    with pytest.raises(SystemExit):  # few_shot needs labelled real events
        cli.main(["adapt", "--sim", str(tmp_path / "sim.root"), "--real", str(tmp_path / "real.root"),
                  "--method", "few_shot", "--out", str(tmp_path / "fs")])
    assert "labels" in capsys.readouterr().err
    assert cli.main(["evaluate", "--model", str(tmp_path / "coral" / "model.ckpt"), "--real",
                     str(tmp_path / "real_labelled.root"), "--sim", str(tmp_path / "sim.root"),
                     "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= metrics["target_accuracy"] <= 1.0 and "a_distance" in metrics and "gap_alarm" in metrics
    friend = io.read_arrays(tmp_path / "eval" / "predictions.root", tree="results")
    assert friend["score"].shape == (300, 3)
    torch.testing.assert_close(torch.as_tensor(friend["score"]).sum(1), torch.ones(300), atol=1e-5, rtol=0)


def test_killed_command_resumes_to_the_same_results(tmp_path):
    """SIGKILL `sim2real run` in the middle of a method's training, then --resume: the straight run's results."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    description = {**TINY, "methods": ["source_only", "dann"], "events": 300, "real_events": 300,
                   "adapt": {**TINY["adapt"], "epochs": 3}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(description))
    out = tmp_path / "killed"
    command = [sys.executable, "-c", "import sys; from sim2real_fast.cli import main; sys.exit(main())",
               "run", "--config", str(path), "--out", str(out), "--threads", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_dann_epoch = out / "checkpoints" / "dann-d0-seed0"
    deadline = time.monotonic() + 300
    while not (first_dann_epoch.is_dir() and any(first_dann_epoch.glob("*.pt"))):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "methods" / "dann-d0-seed0" / "result.json").exists()
    subprocess.run(command + ["--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resumed = json.loads((out / "results.json").read_text())
    straight = workflow.run(RunConfig.from_dict({**description, "out": str(tmp_path / "straight"), "threads": 1}),
                            progress=False, log=lambda _: None)
    _assert_same(resumed["methods"], json.loads(json.dumps(straight["methods"])))
