"""``fit``: train a features + head model with one adaptation method (or a combination), stage by stage.

A fit is a fixed sequence of epochs: the "train" stage every fit has, and the stages its methods add
(:class:`~sim2real_fast.adapt.methods.Stage`: "pretrain", "few_shot", "pseudo_label", ...), in rank order.
Every epoch ends with a checkpoint holding all that the next epoch depends on (weights, optimiser
moments, the random generators, the methods' state), so a resumed fit repeats an uninterrupted one
bit for bit (same device and thread count).

Every supervised epoch has the same number of steps, ``round(len(source) / batch_size)``, whatever the
labelled domain is (simulation, randomised simulation or, for ``target_oracle``, labelled real events,
cycled): the references and the methods get equal optimiser budgets. A step puts the labelled batch,
the labelled events a method adds beside it (pseudo-labels, k shots) and, when a method aligns, an
unlabelled target batch of the same size through ``model.features`` together; the loss is the
cross-entropy of the labelled batch plus the weighted terms of every method
(:meth:`~sim2real_fast.adapt.methods.Method.losses`). The trainer knows no method by name.

Under ``torchrun`` (:mod:`sim2real_fast.distributed`) a fit is data-parallel and its losses are those of
one process on the global batch. Every rank draws the same batches (the same seeded generators) and
puts its shard of each (labelled, extra, target) through ``model.features``; the shards' features are
gathered, so the cross-entropies and the methods' losses (MMD, CORAL, the discriminator) are those of
the whole batch on every rank, and the gradients are averaged over the ranks before every optimiser
step (:meth:`_Run.optimize`), which keeps the weights equal everywhere. SimCLR's pretraining and the
pseudo-labelling predictions are sharded the same way; the methods' ``prepare`` (statistics, a
translator's training) runs on every rank, from the same seeds, to the same result. ``model.features``
must treat events one by one (no batch statistics such as BatchNorm: they would be the shard's).
Rank 0 writes the checkpoint files, the other ranks record the same checkpoints; a resume reads the
files on every rank (several nodes need a shared filesystem). One process is rank 0 of 1: every
collective is then the identity and a fit is bit for bit what it was without ``torchrun``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .. import distributed
from . import checkpoint as _checkpoint
from .checkpoint import Checkpoint
from .config import AdaptConfig
from .domain import Domain
from .methods import Method, Stage, build, train_stage

__all__ = ["FitResult", "Step", "fit"]

_FORMAT = 2


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model, one history dict per epoch, a checkpoint per epoch.

    ``train_seconds`` is the sum of the epochs' seconds (checkpoint writes not included).
    ``source_transform`` maps simulated inputs to what the model was trained on (identity for most
    methods; ``rescale_layers`` scales layers): apply it to simulated validation events.
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    train_seconds: float = 0.0
    source_transform: Callable[[torch.Tensor], torch.Tensor] = lambda inputs: inputs


@dataclass(frozen=True)
class _Epoch:
    """One epoch of the plan: ``epoch`` counts within ``stage`` (1-based); ``round`` within its rounds (1-based)."""

    stage: Stage
    epoch: int
    round: int = 1


@dataclass
class Step:
    """What a method's losses see of one supervised step.

    ``f_labelled`` (B, F) and ``f_target`` (B, F) or None are the features of the labelled and the
    unlabelled target batch; ``progress`` in [0, 1) is the position of the step within its stage.
    """

    stage: Stage
    epoch: int
    index: int
    n_steps: int
    f_labelled: torch.Tensor
    f_target: torch.Tensor | None

    @property
    def progress(self) -> float:
        return ((self.epoch - 1) * self.n_steps + self.index) / (self.stage.epochs * self.stage.rounds * self.n_steps)


def fit(
    method: str,
    model: nn.Module,
    *,
    source: Domain,
    target: Domain | None = None,
    config: AdaptConfig = AdaptConfig(),
    target_labelled: Domain | None = None,
    randomized_source: Domain | None = None,
    paired: tuple[Domain, Domain] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> FitResult:
    """Train ``model`` in place with ``method`` (see :data:`~sim2real_fast.adapt.METHODS`; "a+b" combines).

    Args:
        method: a method or '+'-joined combination, e.g. ``"dann+pseudo_label"`` (:func:`parse_method`).
        model: a freshly initialised model with ``features(x) -> (B, n_features)``,
            ``head(f) -> (B, n_classes)`` and attributes ``n_features``, ``n_classes``; batches are
            moved to the device of its parameters.
        source: labelled simulation; its size sets the steps of every supervised epoch.
        target: the real domain; only its inputs are read (its labels never are).
        config: the hyper-parameters; ``config.seed`` seeds everything random inside fit (the
            caller seeds the model's initialisation).
        target_labelled: labelled real events: the training set of ``target_oracle`` and the pool
            from which ``few_shot`` draws ``config.few_shot_k`` events per class.
        randomized_source: labelled domain-randomised simulation, the training set of
            ``domain_randomization`` (which then ignores ``source``'s events but not its size).
        paired: (sim, real): the same events through the sim detector and the real one, row i of
            each the same shower (e.g. test-beam events simulated one by one), the training set of
            ``pix2pix``'s translator.
        checkpoint_dir: a folder, created if missing, empty (or one with this run's checkpoints and
            ``resume=True``): a file per epoch is written there. Without it the checkpoints keep
            the model's state_dict in memory.
        resume: continue after the last checkpoint in ``checkpoint_dir`` (a run that finished
            returns its stored result at once).
        progress: a tqdm bar per stage over its steps (stderr; rank 0 only).
        augment: ``(inputs, generator) -> inputs``, the random view of SimCLR;
            default :class:`~sim2real_fast.adapt.CaloAugment` of ``model.geometry``.

    Returns:
        :class:`FitResult`. History dicts hold "stage", "epoch", "iteration" (the round of a
        multi-round stage, 1 elsewhere), "steps", "seconds", "loss" (mean over steps) and its parts
        ("ce", "dann", "coral", "mmd", "contrastive", "few_shot_ce", "pseudo_ce"), plus what the
        methods report ("domain_accuracy", "pseudo_kept", "masked_cells", "layer_scales").
    """
    if not isinstance(config, AdaptConfig):
        raise TypeError(f"fit: config must be an AdaptConfig, got {type(config).__name__}")
    methods = build(method, config)
    for name in ("n_features", "n_classes"):
        if not isinstance(getattr(model, name, None), int):
            raise TypeError(f"fit: model must have an int attribute {name!r} (the features + head protocol)")
    run = _Run(methods, model, config, source=source, target=target, target_labelled=target_labelled,
               randomized_source=randomized_source, paired=paired, augment=augment)
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if resume and folder is None:
        raise ValueError("fit: resume=True needs the checkpoint_dir of the run to continue")
    if folder is not None:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"fit: checkpoint_dir {folder} exists and is not a folder")
        folder.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.random.default_generator.manual_seed(config.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(config.seed)
        run.build()
        distributed.broadcast_parameters(run.model)
        distributed.broadcast_parameters(run.heads)
        if folder is not None:
            files = _checkpoint.checkpoint_files(folder)
            if files and not resume:
                raise FileExistsError(
                    f"fit: checkpoint_dir {folder} already holds checkpoints ({files[-1].name}); "
                    "pass resume=True to continue that run, or use an empty folder"
                )
            if files:
                run.restore(_checkpoint.read_checkpoint(files[-1]), folder, files[-1])
        done = getattr(run, "done", 0)
        distributed.check_resume(done, folder, owner="fit", device=device)
        run.train(folder, progress=progress and distributed.is_main())
    return FitResult(run.model, run.history, run.checkpoints, sum(h["seconds"] for h in run.history),
                     run.source_transform)


class _Run:
    """The state of one fit: model, methods, helper heads, optimisers, generator, history.

    Methods read ``labelled`` (the labelled training domain), ``source``, ``target`` (unlabelled),
    ``target_labelled``, ``randomized_source``, ``paired``, ``model``, ``heads``, ``optimizers``, ``generator``,
    ``augment``, ``device`` and ``shared`` (values one method leaves for another, e.g. the k shots), and
    take their optimiser steps with :meth:`optimize`.
    """

    def __init__(self, methods: tuple[Method, ...], model, config, *, source, target, target_labelled,
                 randomized_source, paired, augment):
        self.methods, self.model, self.config = methods, model, config
        self.name = "+".join(m.name for m in methods)
        sees = set().union(*(m.sees for m in methods))
        self.source = source
        _check_domain(self.name, "source", source, labelled=True)
        self.target_labelled = target_labelled if "target_labelled" in sees else None
        if "target_labelled" in sees:
            _check_domain(self.name, "target_labelled", target_labelled, labelled=True)
        self.randomized_source = randomized_source if "randomized_source" in sees else None
        if "randomized_source" in sees:
            _check_domain(self.name, "randomized_source", randomized_source, labelled=True)
        self.paired = None
        if "paired" in sees:
            self.paired = _check_paired(self.name, paired)
        self.target = None
        if "target" in sees:
            _check_domain(self.name, "target", target, labelled=False)
            self.target = target.unlabelled()
        self.labelled = next((d for m in methods if (d := m.labelled(self)) is not None), source)
        for name, domain in (("target", self.target), ("target_labelled", self.target_labelled),
                             ("randomized_source", self.randomized_source),
                             *((f"paired[{k}]", d) for k, d in enumerate(self.paired or ()))):
            if domain is not None and domain.inputs.shape[1:] != source.inputs.shape[1:]:
                raise ValueError(f"fit({self.name!r}): {name} inputs are (N, {tuple(domain.inputs.shape[1:])}) "
                                 f"but source inputs are (N, {tuple(source.inputs.shape[1:])})")
        self.augment = augment  # a method that needs one and gets None sets its default in prepare()
        self.stages = sorted([train_stage(config), *(s for m in methods for s in m.stages())], key=lambda s: s.rank)
        self.plan = [_Epoch(stage, (r - 1) * stage.epochs + e + 1, r)
                     for stage in self.stages for r in range(1, stage.rounds + 1) for e in range(stage.epochs)]
        self.summary = {
            "format": _FORMAT, "method": self.name, "config": config.digest(),
            "sizes": {"source": len(source), "labelled": len(self.labelled),
                      "target": None if self.target is None else len(self.target),
                      "target_labelled": None if self.target_labelled is None else len(self.target_labelled),
                      **({} if self.paired is None else {"paired": len(self.paired[0])})},
            "epochs": len(self.plan),
        }
        self.history: list[dict] = []
        self.checkpoints: list[Checkpoint] = []
        self.shared: dict = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def owner(self, stage: Stage) -> Method:
        """The method that runs ``stage``'s epochs (a stage with an ``owner``)."""
        return next(m for m in self.methods if m.name == stage.owner)

    def n_batches(self, n: int) -> int:
        return _n_batches(n, self.config.batch_size)

    def batches(self, n: int) -> list[torch.Tensor]:
        return _batches(n, self.config.batch_size, self.generator)

    def optimize(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One step of ``optimizer`` down ``loss``, its gradients averaged over the ranks (of a loss that
        every rank computes on the whole gathered batch, :func:`~sim2real_fast.distributed.gather`)."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(p for group in optimizer.param_groups for p in group["params"])
        optimizer.step()

    def source_transform(self, inputs: torch.Tensor) -> torch.Tensor:
        for method in self.methods:
            inputs = method.source_transform(inputs)
        return inputs

    def build(self) -> None:
        """Methods' statistics, helper heads and optimisers (initialised from the generators fit has seeded)."""
        c, model = self.config, self.model
        self.generator = torch.Generator().manual_seed(c.seed)
        transformed = self.labelled is self.source or self.labelled is self.randomized_source
        first = [m for m in self.methods if m.transforms_first]
        for group in (first, [m for m in self.methods if not m.transforms_first]):
            for method in group:
                method.prepare(self)
            if transformed and group:
                inputs = self.labelled.inputs
                for method in group:
                    inputs = method.source_transform(inputs)
                self.labelled = Domain(inputs, self.labelled.labels, self.labelled.energy, self.labelled.name)
        self.heads = nn.ModuleDict()
        supervised: list[nn.Parameter] = []
        for method in self.methods:
            for name, head in method.heads(self).items():
                self.heads[name] = head
                supervised += list(head.parameters())
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, weight_decay=c.weight_decay)  # noqa: E731
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for stage in self.stages:
            if stage.optimizer in self.optimizers:
                continue
            params = [*model.parameters()]
            if stage.owner is None:
                params += supervised
            else:
                for name, module in self.owner(stage).stage_modules(self, stage).items():
                    self.heads[name] = module
                    params += list(module.parameters())
            self.optimizers[stage.optimizer] = adam(params, stage.lr)
        self.heads.to(self.device)

    # ---- checkpoints ---------------------------------------------------------------------------
    def _payload(self, done: int) -> dict:
        cuda = self.device.type == "cuda"
        spec = self.plan[done - 1]
        return {
            "run": self.summary, "config": self.config.to_dict(), "done": done,
            "stage": spec.stage.name, "epoch": spec.epoch, "iteration": spec.round,
            "model": self.model.state_dict(), "heads": self.heads.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "methods": {m.name: m.state() for m in self.methods},
            "history": self.history,
            "files": [c.path.name for c in self.checkpoints if c.path is not None],
        }

    def restore(self, payload: dict, folder: Path, path: Path) -> None:
        if payload.get("run") != self.summary:
            raise ValueError(
                f"fit: the checkpoints in {folder} belong to another run ({payload.get('run')}); this call is "
                f"{self.summary}. Use another checkpoint_dir, or the same method, config and data to resume"
            )
        self.done = payload["done"]
        self.model.load_state_dict(payload["model"])
        self.heads.load_state_dict(payload["heads"])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        self.generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(payload["cuda_rng"], self.device)
        for method in self.methods:
            method.load_state(payload["methods"][method.name])
        self.history = payload["history"]
        names = payload["files"]
        self.checkpoints = [Checkpoint(e.stage.name, e.epoch, folder / n, None) for e, n in zip(self.plan, names)]

    def _save(self, folder: Path | None, done: int) -> None:
        spec = self.plan[done - 1]
        if folder is None:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.checkpoints.append(Checkpoint(spec.stage.name, spec.epoch, None, state))
            return
        path = folder / _checkpoint.checkpoint_name(done, spec.stage.name, spec.epoch)
        self.checkpoints.append(Checkpoint(spec.stage.name, spec.epoch, path, None))
        if distributed.is_main():
            _checkpoint.write_checkpoint(path, self._payload(done))

    # ---- the loop ------------------------------------------------------------------------------
    def train(self, folder: Path | None, *, progress: bool) -> None:
        start = getattr(self, "done", 0)
        bar = None
        try:
            for done in range(start + 1, len(self.plan) + 1):
                spec = self.plan[done - 1]
                if bar is None or spec.stage != self.plan[done - 2].stage:
                    bar = self._bar(spec.stage, done - 1, bar) if progress else None
                t0 = time.perf_counter()
                self.model.train()
                self.heads.train()
                for method in self.methods:
                    method.begin_epoch(self, spec.stage, spec.epoch, spec.round)
                if spec.stage.owner is None:
                    record = self._supervised_epoch(spec, bar)
                else:
                    record = self.owner(spec.stage).run_epoch(self, spec.stage, bar)
                for method in self.methods:
                    record.update(method.epoch_record())
                record = {"stage": spec.stage.name, "epoch": spec.epoch, "iteration": spec.round, **record}
                record["seconds"] = time.perf_counter() - t0
                self.history.append(record)
                self._save(folder, done)
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, stage: Stage, done: int, previous):
        from tqdm import tqdm

        if previous is not None:
            previous.close()
        epochs = [e for e in self.plan if e.stage == stage]
        finished = sum(1 for e in self.plan[:done] if e.stage == stage)
        steps = self._steps(stage)
        return tqdm(total=steps * len(epochs), initial=steps * finished, desc=f"{self.name} {stage.name}",
                    unit=" steps", disable=None)

    def _steps(self, stage: Stage) -> int:
        if stage.owner is not None:
            return self.owner(stage).steps(self)
        return self.n_batches(len(self.source))

    def _supervised_epoch(self, spec: _Epoch, bar) -> dict:
        """``round(len(source) / batch_size)`` steps over the labelled domain, with the methods' extras and losses.

        Each rank puts its shard of every part of the batch through ``model.features``; the losses see
        the gathered features of the whole batch (:func:`_gather_parts`)."""
        g, device, model, stage = self.generator, self.device, self.model, spec.stage
        extras = [e for m in self.methods if (e := m.extra(self, stage)) is not None]
        if len(extras) > 1:
            raise ValueError(f"fit({self.name!r}): more than one method adds labelled events to stage {stage.name!r}")
        extra = extras[0] if extras and len(extras[0].domain) else None
        sizes = [len(b) for b in torch.arange(len(self.source)).tensor_split(self.n_batches(len(self.source)))]
        labelled = _stream(len(self.labelled), sizes, g)
        aligns = any(m.aligns for m in self.methods)
        targets = _stream(len(self.target), sizes, g) if aligns else None
        extra_index = _stream(len(extra.domain), [min(s, len(extra.domain)) for s in sizes], g) if extra else None
        sums: dict[str, torch.Tensor] = {}
        optimizer = self.optimizers[stage.optimizer]
        for step, index in enumerate(labelled):
            x = self.labelled.inputs[index]
            for method in self.methods:
                x = method.augment_labelled(self, x)
            parts = [x]
            if extra is not None:
                parts.append(extra.domain.inputs[extra_index[step]])
            if targets is not None:
                parts.append(self.target.inputs[targets[step]])
            local = torch.cat([distributed.shard(part) for part in parts]).to(device)
            features = _gather_parts(model.features(local), [len(p) for p in parts])
            f_target = features[-1] if targets is not None else None
            terms = {"ce": (1.0, F.cross_entropy(model.head(features[0]), self.labelled.labels[index].to(device)))}
            if extra is not None:
                terms[extra.loss] = (extra.weight, F.cross_entropy(
                    model.head(features[1]), extra.domain.labels[extra_index[step]].to(device)))
            info = Step(stage, spec.epoch, step, len(sizes), features[0], f_target)
            for method in self.methods:
                terms.update(method.losses(self, info))
            loss = sum(weight * value for weight, value in terms.values())
            self.optimize(optimizer, loss)
            for name, value in [("loss", loss), *((n, v) for n, (_, v) in terms.items())]:
                sums[name] = sums.get(name, 0.0) + value.detach()
            if bar is not None:
                bar.update(1)
        return {"steps": len(sizes), **{name: float(s) / len(sizes) for name, s in sums.items()}}


def _gather_parts(local: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The features of every part of the global batch, ``sizes`` (B_k,) rows each, from this rank's
    (sum_k B_k_r, F) features of its shards of the parts (:func:`distributed.shard`, in part order).

    One :func:`distributed.gather` joins the ranks' blocks; each part's shards are then put back in rank
    order, which is the part's global order (shards are contiguous).
    """
    gathered = distributed.gather(local)
    ranks = distributed.world_size()
    if ranks == 1:
        return list(gathered.split(sizes))
    shards = [[len(s) for s in torch.arange(n).tensor_split(ranks)] for n in sizes]  # [part][rank]
    blocks = gathered.split([sum(part[r] for part in shards) for r in range(ranks)])
    pieces = [block.split([part[r] for part in shards]) for r, block in enumerate(blocks)]
    return [torch.cat([pieces[r][k] for r in range(ranks)]) for k in range(len(sizes))]


def _check_domain(method: str, argument: str, domain, *, labelled: bool) -> None:
    if not isinstance(domain, Domain):
        raise ValueError(f"fit({method!r}) needs {argument}: a Domain, got {type(domain).__name__}")
    if len(domain) == 0:
        raise ValueError(f"fit({method!r}): {argument} has no events")
    if labelled and not domain.labelled:
        raise ValueError(f"fit({method!r}): {argument} must be labelled (Domain.labels), got {domain.name!r} without")


def _check_paired(method: str, paired) -> tuple[Domain, Domain]:
    if not (isinstance(paired, tuple) and len(paired) == 2):
        raise ValueError(f"fit({method!r}) needs paired: a (sim, real) tuple of Domains of the same events, "
                         f"got {type(paired).__name__}")
    for k, domain in enumerate(paired):
        _check_domain(method, f"paired[{k}]", domain, labelled=False)
    if len(paired[0]) != len(paired[1]):
        raise ValueError(f"fit({method!r}): paired sim and real must hold the same events, got {len(paired[0])} "
                         f"and {len(paired[1])}")
    return paired


def _n_batches(n: int, batch_size: int) -> int:
    return max(1, round(n / batch_size))


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of range(n) in round(n / batch_size) batches of near-equal size (none tiny)."""
    return list(torch.randperm(n, generator=generator).tensor_split(_n_batches(n, batch_size)))


def _stream(n: int, sizes: list[int], generator: torch.Generator) -> list[torch.Tensor]:
    """Batches of the given sizes from back-to-back random permutations of range(n) (cycles a smaller set)."""
    total = sum(sizes)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(math.ceil(total / n))])[:total]
    return list(order.split(sizes))
