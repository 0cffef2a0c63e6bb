"""The cases of python_tests/test_distributed.py, run by each rank of a spawned pair of processes and by
the test process alone; a module of its own so that the spawned processes import it by this name."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from sim2real_fast import cli, distributed
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
