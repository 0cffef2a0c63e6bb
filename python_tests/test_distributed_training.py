"""Data-parallel training (sim2real_fast.distributed) on 2 local gloo processes launched by torchrun.

- the translators (float64) and generators (float32: their inputs are) fitted by 2 processes equal the
  1-process fit: the random generator's state after the fit (epoch orders, pools, noise) exactly, the
  weights and losses to rounding (the gradients are summed in another order), every rank's weights
  bit for bit the same; checkpoints that not every rank sees, or a step too small to split, stop every
  rank with one error;
- ``sim2real translate train`` and ``sim2real generate train`` on 2 processes: rank 0 alone takes the
  lock and writes the checkpoints and model.pt; a run interrupted after epoch 1 and resumed gives the
  weights of the uninterrupted run, bit for bit.

This file is also the workers' script: torchrun runs it with a job name (``fits`` or ``cli``).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sim2real_fast import distributed, generate, io, simulate, translate
from sim2real_fast.adapt import checkpoint

TINY = dict(channels=(4, 8), n_blocks=1, discriminator_channels=(4, 8), code_size=8)
TRANSLATORS = {
    "cyclegan": lambda: translate.CycleGAN("calogan", **TINY, pool_size=6),
    "simgan": lambda: translate.SimGAN("calogan", channels=(4,), n_blocks=1, discriminator_channels=(4, 8),
                                       code_size=8, history_size=8),
    "pix2pix": lambda: translate.Pix2Pix("calogan", channels=(4, 8), discriminator_channels=(4, 8), code_size=8),
    "style": lambda: translate.StyleTransfer("calogan", channels=(4, 8), n_blocks=1, code_size=8,
                                             feature_channels=(4, 4), feature_epochs=1, feature_batch_size=16),
}
SMALL = dict(hidden=(16,), latent=4, prior_hidden=8, prior_components=2)
GENERATORS = {
    "vae": lambda: generate.ShowerVAE("calogan", **SMALL),
    "flow-vae": lambda: generate.FlowVAE("calogan", **SMALL, flow_hidden=[8], flow_transforms=1),
}
# 36 showers in batches of 11: steps of 11, 11, 11, 3 showers, split 6 + 5 and 2 + 1 (the generators train on
# 32: 11, 11, 10); two epochs, so the second epoch's order follows the first epoch's draws
FIT = dict(epochs=2, batch_size=11, seed=3)


def _showers():
    sim = simulate.showers(36, seed=0, effects="nominal")
    return sim, simulate.showers(36, seed=1, effects="nominal").images * 1.2


def _fit_all(folder: Path) -> dict:
    """Fit every translator and generator (checkpoints in ``folder/<name>``); name -> (weights, history)."""
    sim, real = _showers()
    fitted = {}
    for name, make in TRANSLATORS.items():
        options = {"sim_labels": sim.labels} if name == "style" else {}
        model = make().double()
        model.fit(sim.images.double(), real.double(), checkpoint_dir=folder / name, **FIT, **options)
        fitted[name] = model
    for name, make in GENERATORS.items():
        fitted[name] = make().fit(sim.images, sim.labels, sim.energy, checkpoint_dir=folder / name, **FIT)
    return {name: ({k: v.clone() for k, v in m.state_dict().items()},
                   [{k: v for k, v in h.items() if k != "seconds"} for h in m.history]) for name, m in fitted.items()}


# ---- the workers ----------------------------------------------------------------------------------
def _fits_job(folder: Path) -> None:
    assert distributed.init_from_env() and distributed.world_size() == 2
    torch.save(_fit_all(folder / "two"), folder / f"rank{distributed.rank()}.pt")
    # checkpoints that rank 0 alone sees (no shared filesystem): every rank stops with the same error
    own = folder / f"own{distributed.rank()}"
    if distributed.is_main():
        shutil.copytree(folder / "two" / "vae", own)
    sim, real = _showers()
    with pytest.raises(RuntimeError, match=r"resume after epochs \[2, 0\]; .* shared filesystem"):
        GENERATORS["vae"]().fit(sim.images, sim.labels, sim.energy, checkpoint_dir=own, resume=True, **FIT)
    # a last step of 1 shower cannot be split over 2 processes
    with pytest.raises(ValueError, match="2 processes split every step's showers, but the last step of 3 showers"):
        TRANSLATORS["pix2pix"]().fit(sim.images[:3], real[:3], epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="the last step of 32 training showers in batches of 31 holds 1"):
        GENERATORS["vae"]().fit(sim.images, sim.labels, sim.energy, epochs=1, batch_size=31)


def _cli_job(folder: Path) -> None:
    """translate and generate train: whole runs, runs interrupted at epoch 2 and resumed; every write recorded."""
    from sim2real_fast import cli
    from sim2real_fast.workflow import translation

    assert distributed.init_from_env()  # joined here, the group outlives each cli.main (which keeps it)
    writes = []

    def recorded(function, what):
        def wrapper(*args, **kwargs):
            writes.append(what)
            return function(*args, **kwargs)
        return wrapper

    checkpoint.write_checkpoint = recorded(checkpoint.write_checkpoint, "checkpoint")
    translation.output_lock = recorded(translation.output_lock, "lock")
    translate.Translator.save = recorded(translate.Translator.save, "model")
    generate.Generator.save = recorded(generate.Generator.save, "model")
    commands = {
        "translate": ["translate", "train", "--method", "cyclegan", "--sim", str(folder / "sim.root"), "--real",
                      str(folder / "real.root"), "--events", "30", "--batch-size", "7", "--epochs", "2"],
        "generate": ["generate", "train", "--model", "vae", "--events", "61", "--epochs", "2"],
    }
    for name, command in commands.items():
        cls = translate.CycleGAN if name == "translate" else generate.ShowerVAE
        assert cli.main([*command, "--out", str(folder / name / "whole")]) == 0
        begin = cls.begin_epoch

        def interrupted(self, epoch, *args, **kwargs):
            if epoch == 2:
                raise KeyboardInterrupt
            return begin(self, epoch, *args, **kwargs)

        cls.begin_epoch = interrupted
        with pytest.raises(KeyboardInterrupt):
            cli.main([*command, "--out", str(folder / name / "cut")])
        cls.begin_epoch = begin
        distributed.barrier()  # rank 0's checkpoint of epoch 1 is on disk before any rank resumes
        assert cli.main([*command, "--out", str(folder / name / "cut"), "--resume"]) == 0
    (folder / f"rank{distributed.rank()}.json").write_text(json.dumps({"pid": os.getpid(), "writes": writes}))


def _torchrun(job: str, folder: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                "2", __file__, job, str(folder)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun and its workers
        out, err = process.communicate()
        pytest.fail(f"the {job} job did not end in 300 s (a deadlock?):\n{err[-3000:]}")
    assert process.returncode == 0, out[-3000:] + err[-3000:]


# ---- the tests ------------------------------------------------------------------------------------
def test_two_processes_fit_as_one(tmp_path):
    _torchrun("fits", tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    one = _fit_all(tmp_path / "one")
    for name, (weights, history) in one.items():
        two_weights, two_history = ranks[0][name]
        assert all(torch.equal(two_weights[k], ranks[1][name][0][k]) for k in weights)  # the ranks agree exactly
        assert ranks[0][name][1] == ranks[1][name][1]
        last = {n: checkpoint.read_checkpoint(checkpoint.checkpoint_files(tmp_path / n / name)[-1])
                for n in ("one", "two")}
        state = "generator" if name in TRANSLATORS else "rng"
        assert torch.equal(last["one"][state], last["two"][state]), name  # the same orders, pools and noise
        exact = name in TRANSLATORS  # float64; the generators' float32 rounding grows through Adam's steps
        tolerance = dict(rtol=1e-8, atol=1e-8) if exact else dict(rtol=1e-4, atol=5e-5)
        for key, value in weights.items():
            torch.testing.assert_close(two_weights[key], value, **tolerance, msg=lambda m: f"{name} {key}: {m}")
        assert [h.keys() for h in two_history] == [h.keys() for h in history]
        rel = 1e-10 if exact else 1e-4
        for mine, theirs in zip(two_history, history):
            assert mine == {k: pytest.approx(v, rel=rel) if isinstance(v, float) else v for k, v in theirs.items()}
    pools = [checkpoint.read_checkpoint(checkpoint.checkpoint_files(tmp_path / n / "cyclegan")[-1])["training"]["pools"]
             for n in ("one", "two")]
    for key in ("real", "sim"):
        assert pools[0][key]["count"] == pools[1][key]["count"] == 6
        torch.testing.assert_close(pools[1][key]["images"], pools[0][key]["images"], rtol=1e-8, atol=1e-8)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    for name, effects, seed in (("sim", "nominal", 0), ("real", "stress", 1)):
        s = simulate.showers(30, seed=seed, effects=effects)
        io.write_showers_root(folder / f"{name}.root", s.images, s.labels, s.energy)
    _torchrun("cli", folder)
    return folder


def test_rank_0_alone_locks_and_writes(cli_runs):
    ranks = [json.loads((cli_runs / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[1]["writes"] == []
    # per command: whole (lock, 2 checkpoints, model), cut (lock, 1 checkpoint), resumed (lock, 1 checkpoint, model)
    run = ["lock", "checkpoint", "checkpoint", "model", "lock", "checkpoint", "lock", "checkpoint", "model"]
    assert ranks[0]["writes"] == run * 2
    for name in ("translate", "generate"):
        for run in ("whole", "cut"):
            out = cli_runs / name / run
            assert (out / "model.pt").is_file()
            assert f"(pid {ranks[0]['pid']})" in (out / ".sim2real.lock").read_text()


@pytest.mark.parametrize("name", ["translate", "generate"])
def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(cli_runs, name):
    load = translate.load if name == "translate" else generate.load
    whole, cut = (load(cli_runs / name / run / "model.pt") for run in ("whole", "cut"))
    assert len(whole.history) == len(cut.history) == 2
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), cut.state_dict().values()))
    files = checkpoint.checkpoint_files(cli_runs / name / "cut" / "checkpoints")
    assert files[-1].name == "002_train_e2.pt"


if __name__ == "__main__":
    torch.set_num_threads(1)
    {"fits": _fits_job, "cli": _cli_job}[sys.argv[1]](Path(sys.argv[2]))
    # leave without the interpreter's teardown: a gloo thread that frees a finished collective's tensors
    # during it aborts the process (seen after a broadcast or gather just before the exit; pytorch#179291)
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)
