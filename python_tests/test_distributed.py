"""Data-parallel training on 2 processes (gloo, CPU) equals 1 process on the global batch.

One spawned pair of processes runs every distributed case once (the helpers, one MMD + CORAL step, whole
fits, a fit resumed after its first epoch, `sim2real run` and its resume); the tests compare what each
rank found with the same code run here in one process, where every distributed call is the identity.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from sim2real_fast import cli, distributed, simulate
from sim2real_fast.adapt import AdaptConfig, Domain, fit
from sim2real_fast.adapt import checkpoint as checkpoint_module
from sim2real_fast.ops import coral, mmd
from sim2real_fast.workflow import outputs

WORLD = 2
FITS = ("mmd", "coral", "dann", "simclr+few_shot+pseudo_label")
CONFIG = AdaptConfig(epochs=2, batch_size=7, pseudo_iterations=1, pseudo_threshold=0.34, few_shot_k=1,
                     few_shot_epochs=1, simclr_epochs=1, simclr_projection=4, discriminator_hidden=8)
RUN = {"events": 200, "real_events": 200, "export": False, "methods": ["source_only", "dann", "pseudo_label"],
       "adapt": {"epochs": 2, "batch_size": 50, "pseudo_iterations": 1, "pseudo_epochs": 1,
                 "pseudo_threshold": 0.34}}


# ---- the cases, run by each rank of the pair and by this process alone ---------------------------------
def _helpers() -> dict:
    """shard / gather (unequal shards of 7 and an empty one) / average_gradients / broadcast_parameters."""
    rank = distributed.rank()
    found = {"shard": distributed.shard(torch.arange(7))}
    rows = torch.arange(21.0, dtype=torch.float64).reshape(7, 3)
    local = distributed.shard(rows).clone().requires_grad_()
    joined = distributed.gather(local)
    weights = torch.linspace(-1, 1, 21, dtype=torch.float64).reshape(7, 3)
    (joined * weights).sum().backward()
    found |= {"gather": joined.detach(), "gather_grad": local.grad}
    found["gather_one"] = distributed.gather(distributed.shard(torch.ones(1, 2)))
    p = nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), float(rank + 1))
    q = nn.Parameter(torch.zeros(2))  # no gradient: left alone
    distributed.average_gradients([p, q])
    found |= {"averaged": p.grad.clone(), "no_grad": q.grad}
    p.grad = torch.full((3,), float(rank + 1))
    distributed.average_gradients([p], weight=0.5)
    found["weighted"] = p.grad.clone()
    module = nn.Linear(2, 2)
    with torch.no_grad():
        module.weight.fill_(rank + 1.0)
    distributed.broadcast_parameters(module)
    found["broadcast"] = module.weight.detach().clone()
    return found


def _step() -> dict:
    """One step of MMD + CORAL between the features of 7 source and 5 target rows (float64)."""
    g = torch.Generator().manual_seed(0)
    source = torch.randn(7, 6, generator=g, dtype=torch.float64)
    target = torch.randn(5, 6, generator=g, dtype=torch.float64)
    torch.manual_seed(1)
    layer = nn.Linear(6, 4).double()
    f_source = distributed.gather(layer(distributed.shard(source)))
    f_target = distributed.gather(layer(distributed.shard(target)))
    loss = mmd(f_source, f_target) + coral(f_source, f_target)
    loss.backward()
    distributed.average_gradients(layer.parameters())
    return {"loss": loss.detach(), **{name: p.grad.clone() for name, p in layer.named_parameters()}}


class _Tiny(nn.Module):
    """A features + head model of 6 inputs (the fit protocol), float64."""

    n_features, n_classes = 4, 3

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        self.head = nn.Linear(4, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _jitter(inputs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return inputs + 0.1 * torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype)


def _domains() -> dict:
    g = torch.Generator().manual_seed(2)
    source = Domain(torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (30,), generator=g))
    real = torch.randn(22, 6, generator=g, dtype=torch.float64) + 0.5
    real_labels = torch.randint(0, 3, (22,), generator=g)
    return {"source": source, "target": Domain(real), "target_labelled": Domain(real, real_labels)}


@contextlib.contextmanager
def _float64():
    """float64 as the default dtype: the methods' heads (the discriminator, the projection) are float64 too."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _model() -> _Tiny:
    torch.manual_seed(3)
    return _Tiny().double()


def _fit(method: str, folder: Path, **kwargs):
    with _float64():
        return fit(method, _model(), config=CONFIG, checkpoint_dir=folder, augment=_jitter, **_domains(), **kwargs)


def _summary(result) -> dict:
    return {"state": {k: v.clone() for k, v in result.model.state_dict().items()},
            "history": [{k: v for k, v in h.items() if k != "seconds"} for h in result.history],
            "checkpoints": [(c.stage, c.epoch, c.path.name) for c in result.checkpoints]}


def _fits(folder: Path) -> dict:
    """Every method of FITS for 2 epochs (batches of 7 or 8: unequal shards) in float64, the checkpoint files
    each process wrote, and dann+pseudo_label resumed after its first epoch."""
    written = []
    write = checkpoint_module.write_checkpoint
    checkpoint_module.write_checkpoint = lambda path, payload: (written.append(path.name), write(path, payload))
    try:
        found = {method: _summary(_fit(method, folder / method)) for method in FITS}
        straight = _fit("dann+pseudo_label", folder / "straight")
        if distributed.is_main():  # what a run killed during its second epoch leaves
            (folder / "cut").mkdir()
            shutil.copy(straight.checkpoints[0].path, folder / "cut")
        distributed.barrier()
        resumed = _fit("dann+pseudo_label", folder / "cut", resume=True)
        found |= {"straight": _summary(straight), "resumed": _summary(resumed)}
        try:  # no shared filesystem: rank 1 finds no checkpoint where rank 0 finds the finished fit
            _fit("dann+pseudo_label", folder / ("cut" if distributed.is_main() else "elsewhere"), resume=True)
        except RuntimeError as error:
            found["unshared"] = str(error)
    finally:
        checkpoint_module.write_checkpoint = write
    found["written"] = written
    return found


def _cli_run(config: Path, out: Path) -> dict:
    """`sim2real run` (figures left out: they are slow and rank 0 writes them with the rest), then its
    --resume after dann's result and last checkpoint are lost: the results and every file written."""
    figures = outputs._figures
    outputs._figures = lambda *args, **kwargs: {}
    try:
        codes = [cli.main(["run", "--config", str(config), "--out", str(out)])]
        results = json.loads((out / "results.json").read_text()) if distributed.is_main() else None
        if distributed.is_main():
            (out / "methods" / "dann-d0-seed0" / "result.json").unlink()
            checkpoint_module.checkpoint_files(out / "checkpoints" / "dann-d0-seed0")[-1].unlink()
        distributed.barrier()
        codes.append(cli.main(["run", "--config", str(config), "--out", str(out), "--resume"]))
        resumed = json.loads((out / "results.json").read_text()) if distributed.is_main() else None
        report = (out / "report.md").read_text() if distributed.is_main() else None
    finally:
        outputs._figures = figures
    distributed.barrier()  # rank 0 has written every output
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return {"codes": codes, "results": results, "resumed": resumed, "report": report, "files": files}


def _worker(rank: int, folder: Path) -> None:
    torch.set_num_threads(1)
    os.environ |= {"WORLD_SIZE": str(WORLD), "RANK": str(rank), "LOCAL_RANK": str(rank)}
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=WORLD)
    try:
        found = {"helpers": _helpers(), "step": _step(), "fits": _fits(folder / "fits"),
                 "run": _cli_run(folder / "run.json", folder / "run")}
        torch.save(found, folder / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# ---- the tests ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "run.json"
    path.write_text(json.dumps(RUN))
    return path


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, config_file) -> list[dict]:
    """What each rank of 2 processes found (torch.multiprocessing.spawn, a FileStore in a temporary folder)."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("pair")
    shutil.copy(config_file, folder / "run.json")
    mp.spawn(_worker, args=(folder,), nprocs=WORLD)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a, b, **tolerance) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _close(a[key], b[key], **tolerance)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, **tolerance)
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, **tolerance)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=tolerance["rtol"], abs=tolerance["atol"])
    else:
        assert a == b


def test_helpers_on_unequal_shards(ranks):
    first, second = (r["helpers"] for r in ranks)
    assert first["shard"].tolist() == [0, 1, 2, 3] and second["shard"].tolist() == [4, 5, 6]
    rows = torch.arange(21.0, dtype=torch.float64).reshape(7, 3)
    weights = torch.linspace(-1, 1, 21, dtype=torch.float64).reshape(7, 3)
    for r, found in enumerate(ranks):
        helpers = found["helpers"]
        assert torch.equal(helpers["gather"], rows)
        # every rank's loss is the global one: all_gather's backward sums the ranks' gradients, W times its share
        assert torch.equal(helpers["gather_grad"], WORLD * (weights[:4] if r == 0 else weights[4:]))
        assert torch.equal(helpers["gather_one"], torch.ones(1, 2))  # rank 1's shard is empty
        assert torch.equal(helpers["averaged"], torch.full((3,), 1.5)) and helpers["no_grad"] is None
        assert torch.equal(helpers["weighted"], torch.full((3,), 1.5))  # 0.5 * 1 + 0.5 * 2, not divided
        assert torch.equal(helpers["broadcast"], torch.ones(2, 2))
    alone = _helpers()
    assert torch.equal(alone["shard"], torch.arange(7)) and torch.equal(alone["gather"], rows)
    assert torch.equal(alone["gather_grad"], weights) and torch.equal(alone["averaged"], torch.ones(3))


def test_one_mmd_coral_step_equals_one_process(ranks):
    alone = _step()
    assert alone["loss"] != 0 and alone["weight"].abs().sum() > 0  # the unbiased MMD^2 may be < 0
    for found in ranks:
        _close(found["step"], alone, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", FITS)
def test_fit_equals_one_process(ranks, method, tmp_path):
    alone = _summary(_fit(method, tmp_path / method))
    first, second = (r["fits"][method] for r in ranks)
    _close(first, second, rtol=0, atol=0)  # the ranks hold the same weights, bit for bit
    _close(first, alone, rtol=1e-9, atol=1e-12)
    assert any(not torch.equal(v, w) for v, w in zip(first["state"].values(), _model().state_dict().values()))
    for name in {"mmd": ("mmd",), "coral": ("coral",), "dann": ("dann", "domain_accuracy")}.get(method, ()):
        assert name in first["history"][0]
    if "pseudo_label" in method:
        assert [h["stage"] for h in first["history"]] == ["pretrain", "train", "train", "few_shot", "pseudo_label"]
        assert first["history"][-1]["pseudo_kept"] > 0


def test_rank_0_writes_the_checkpoints_and_a_resumed_fit_repeats_the_straight_one(ranks):
    first, second = (r["fits"] for r in ranks)
    epochs = {method: len(first[method]["history"]) for method in FITS}
    assert len(first["written"]) == sum(epochs.values()) + 3 + 2 and second["written"] == []
    for method in FITS:
        assert first[method]["checkpoints"] == second[method]["checkpoints"]
    for found in (first, second):
        assert found["resumed"]["history"] == found["straight"]["history"]
        _close(found["resumed"]["state"], found["straight"]["state"], rtol=0, atol=0)


def test_a_resume_without_shared_checkpoints_stops_every_rank(ranks):
    for found in ranks:
        assert "every process must see the checkpoints" in found["fits"]["unshared"]
        assert "epochs [3, 0]" in found["fits"]["unshared"]  # dann+pseudo_label: 2 train epochs + 1 pseudo-label round


def test_run_on_two_processes(ranks, config_file, tmp_path):
    figures = outputs._figures
    outputs._figures = lambda *args, **kwargs: {}
    try:
        assert cli.main(["run", "--config", str(config_file), "--out", str(tmp_path / "one")]) == 0
    finally:
        outputs._figures = figures
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    first, second = (r["run"] for r in ranks)
    assert first["codes"] == second["codes"] == [0, 0]
    assert second["results"] is None
    expected = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert first["files"] == second["files"] == expected  # rank 0's files only, the same as one process writes
    two = first["results"]
    assert two["machine"]["world_size"] == 2 and one["machine"]["world_size"] == 1
    assert "- **processes**: 2" in first["report"]
    assert "**processes**" not in (tmp_path / "one" / "report.md").read_text()
    for method in RUN["methods"]:
        for key in ("target_accuracy", "source_accuracy", "target_accuracy_last"):
            assert two["methods"][method][key] == pytest.approx(one["methods"][method][key], abs=1e-6), (method, key)
    clock = {"train_seconds", "energy_joules"}
    for method, entry in first["resumed"]["methods"].items():  # dann's second epoch trained again, on 2 processes
        assert entry["target_accuracy"] == two["methods"][method]["target_accuracy"]
        assert [{k: v for k, v in r.items() if k not in clock} for r in entry["per_seed"]] == \
            [{k: v for k, v in r.items() if k not in clock} for r in two["methods"][method]["per_seed"]]


def test_commands_that_do_not_train_refuse_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dqm", "--quick", "--out", str(tmp_path / "dqm")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sim2real dqm does not run under torchrun" in last and "sim2real run" in last
    assert not (tmp_path / "dqm").exists()
