"""SIGKILL a training command at a random checkpoint, then --resume: the straight run's result, bit for bit.

The kill point is drawn (seeded) among the command's checkpoints: the process is killed as soon as the
k-th checkpoint file is on disk, wherever it then is in the next epoch. `sim2real run` has its own
test (test_workflow.py::test_killed_command_resumes_to_the_same_results).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sim2real_fast import generate, io, simulate, translate

CLI = [sys.executable, "-c", "import sys; from sim2real_fast.cli import main; sys.exit(main())"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(argv):
    subprocess.run(CLI + argv, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _done(out: Path, pattern: str) -> int:
    """Checkpoints written so far: the files matching ``out/pattern``, by their unit number (a generator keeps
    only its latest checkpoint file, ``NNN_stage_eE.pt``), summed over folders."""
    folders: dict[Path, int] = {}
    for path in out.glob(pattern):
        folders[path.parent] = max(folders.get(path.parent, 0), int(path.name[:3]))
    return sum(folders.values())


def _kill_at(argv, out: Path, pattern: str, k: int) -> None:
    """Start the command, SIGKILL it once its ``k``-th checkpoint is on disk."""
    process = subprocess.Popen(CLI + argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while _done(out, pattern) < k:
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended before checkpoint {k}"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.fixture(scope="module")
def showers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("showers")
    for name, effects, seed in (("sim", "nominal", 0), ("real", "stress", 1)):
        s = simulate.showers(200, seed=seed, effects=effects)
        io.write_showers_root(folder / f"{name}.root", s.images, s.labels, s.energy)
    return folder


def test_generate_train_killed_at_a_random_epoch_resumes_to_the_straight_weights(tmp_path):
    argv = ["generate", "train", "--events", "200", "--epochs", "3", "--seed", "1"]
    k = random.Random(16).randint(1, 2)
    _kill_at([*argv, "--out", str(tmp_path / "cut")], tmp_path / "cut", "checkpoints/*.pt", k)
    assert not (tmp_path / "cut" / "model.pt").exists()
    _run(["generate", "train", "--out", str(tmp_path / "cut"), "--resume"])
    _run([*argv, "--out", str(tmp_path / "straight")])
    cut, straight = (generate.load(tmp_path / name / "model.pt") for name in ("cut", "straight"))
    assert len(cut.history) == len(straight.history) and _same_weights(cut, straight)


def test_translate_train_killed_at_a_random_epoch_resumes_to_the_straight_weights(tmp_path, showers):
    argv = ["translate", "train", "--method", "style", "--sim", str(showers / "sim.root"),
            "--real", str(showers / "real.root"), "--epochs", "3", "--batch-size", "64"]
    k = random.Random(17).randint(1, 2)
    _kill_at([*argv, "--out", str(tmp_path / "cut")], tmp_path / "cut", "checkpoints/*.pt", k)
    assert not (tmp_path / "cut" / "model.pt").exists()
    _run([*argv, "--out", str(tmp_path / "cut"), "--resume"])
    _run([*argv, "--out", str(tmp_path / "straight")])
    cut, straight = (translate.load(tmp_path / name / "model.pt") for name in ("cut", "straight"))
    assert _same_weights(cut, straight)


def test_dqm_killed_at_a_random_checkpoint_resumes_to_the_straight_results(tmp_path):
    argv = ["dqm", "--quick", "--task", "faults", "--methods", "source_only", "dann", "--threads", "1"]
    k = random.Random(18).randint(1, 3)  # of 4 checkpoints: 2 epochs x 2 methods
    _kill_at([*argv, "--out", str(tmp_path / "cut")], tmp_path / "cut", "faults/*/checkpoints/*.pt", k)
    assert not (tmp_path / "cut" / "results.json").exists()
    _run([*argv, "--out", str(tmp_path / "cut"), "--resume"])
    _run([*argv, "--out", str(tmp_path / "straight")])
    cut, straight = (json.loads((tmp_path / name / "results.json").read_text())["faults"] for name in ("cut", "straight"))
    for method in ("source_only", "dann"):
        for key in ("map", "channel", "false_alarm", "per_fault", "accuracy", "selected"):
            assert cut["methods"][method][key] == straight["methods"][method][key], (method, key)
    assert cut["label_free_pick"] == straight["label_free_pick"]
