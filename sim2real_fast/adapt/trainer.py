"""``fit``: train a features + head model with one adaptation method (or a combination), stage by stage.

A fit is a fixed sequence of epochs: "pretrain" (simclr), "train", "few_shot", "pseudo_label".
Every epoch ends with a checkpoint holding all that the next epoch depends on (weights, optimiser
moments, the random generators, the pseudo-labels), so a resumed fit repeats an uninterrupted one
bit for bit (same device and thread count).

Supervised epochs share one step: the labelled batch (source, randomised source or, for
``target_oracle``, labelled target), an optional labelled batch beside it (pseudo-labelled target or
the k-shot set) and, with an alignment method, an unlabelled target batch of the same size go through
``model.features`` together; the loss is

    CE(source) + w_extra CE(extra) + dann_weight BCE(discriminator) + coral_weight CORAL + mmd_weight MMD^2

with the alignment terms between the labelled batch's and the target batch's features.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..models import DomainDiscriminator, predict
from ..ops import coral, dann_alpha, mmd
from . import checkpoint as _checkpoint
from .augment import CaloAugment
from .checkpoint import Checkpoint
from .config import AdaptConfig
from .domain import Domain
from .few_shot import k_shot_indices
from .methods import ALIGNMENTS, parse_method, stages
from .pseudo_label import select_pseudo_labels
from .simclr import ProjectionHead, nt_xent

__all__ = ["FitResult", "fit"]

_FORMAT = 1


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained model, one history dict per epoch, a checkpoint per epoch.

    ``train_seconds`` is the sum of the epochs' seconds (checkpoint writes not included).
    """

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    train_seconds: float = 0.0


@dataclass(frozen=True)
class _Epoch:
    """One epoch of the plan: ``epoch`` counts within ``stage`` (1-based); ``iteration`` is the pseudo-label round."""

    stage: str
    epoch: int
    iteration: int = 0


def fit(
    method: str,
    model: nn.Module,
    *,
    source: Domain,
    target: Domain,
    config: AdaptConfig = AdaptConfig(),
    target_labelled: Domain | None = None,
    randomized_source: Domain | None = None,
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
        source: labelled simulation.
        target: the real domain; only its inputs are read (its labels never are).
        config: the hyper-parameters; ``config.seed`` seeds everything random inside fit (the
            caller seeds the model's initialisation).
        target_labelled: labelled real events: the training set of ``target_oracle`` and the pool
            from which ``few_shot`` draws ``config.few_shot_k`` events per class.
        randomized_source: labelled domain-randomised simulation, the training set of
            ``domain_randomization`` (which then ignores ``source``).
        checkpoint_dir: a folder, created if missing, empty (or one with this run's checkpoints and
            ``resume=True``): a file per epoch is written there. Without it the checkpoints keep
            the model's state_dict in memory.
        resume: continue after the last checkpoint in ``checkpoint_dir`` (a run that finished
            returns its stored result at once).
        progress: a tqdm bar per stage over its steps (stderr).
        augment: ``(inputs, generator) -> inputs``, the random view of SimCLR's pretraining;
            default :class:`~sim2real_fast.adapt.CaloAugment` of ``model.geometry``.

    Returns:
        :class:`FitResult`. History dicts hold "stage", "epoch", "iteration" (pseudo-label round, 0
        elsewhere), "steps", "seconds", "loss" (mean over steps) and its parts: "ce", "dann",
        "coral", "mmd", "contrastive", "few_shot_ce", "pseudo_ce"; plus "domain_accuracy"
        (DANN's discriminator on its batches) and "pseudo_kept" (events labelled this round).
    """
    methods = parse_method(method)
    if not isinstance(config, AdaptConfig):
        raise TypeError(f"fit: config must be an AdaptConfig, got {type(config).__name__}")
    for name in ("n_features", "n_classes"):
        if not isinstance(getattr(model, name, None), int):
            raise TypeError(f"fit: model must have an int attribute {name!r} (the features + head protocol)")
    run = _Run(methods, model, config, source=source, target=target, target_labelled=target_labelled,
               randomized_source=randomized_source, augment=augment)
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
        if folder is not None:
            files = _checkpoint.checkpoint_files(folder)
            if files and not resume:
                raise FileExistsError(
                    f"fit: checkpoint_dir {folder} already holds checkpoints ({files[-1].name}); "
                    "pass resume=True to continue that run, or use an empty folder"
                )
            if files:
                run.restore(_checkpoint.read_checkpoint(files[-1]), folder, files[-1])
        run.train(folder, progress=progress)
    return FitResult(run.model, run.history, run.checkpoints, sum(h["seconds"] for h in run.history))


class _Run:
    """The state of one fit: model, helper heads, optimisers, generators, pseudo-labels, history."""

    def __init__(self, methods, model, config, *, source, target, target_labelled, randomized_source, augment):
        self.methods, self.model, self.config = methods, model, config
        self.alignments = tuple(m for m in methods if m in ALIGNMENTS)
        name = "+".join(methods)
        labelled = {"target_oracle": ("target_labelled", target_labelled),
                    "domain_randomization": ("randomized_source", randomized_source)}
        argument, self.labelled = next((labelled[m] for m in methods if m in labelled), ("source", source))
        _check_domain(name, argument, self.labelled, labelled=True)
        uses_target = bool(self.alignments) or any(m in methods for m in ("pseudo_label", "simclr"))
        self.target = None
        if uses_target:
            _check_domain(name, "target", target, labelled=False)
            self.target = target.unlabelled()
            if self.target.inputs.shape[1:] != self.labelled.inputs.shape[1:]:
                raise ValueError(f"fit({name!r}): target inputs are (N, {tuple(self.target.inputs.shape[1:])}) "
                                 f"but {argument} inputs are (N, {tuple(self.labelled.inputs.shape[1:])})")
        self.k_shot_pool = None
        if "few_shot" in methods:
            _check_domain(name, "target_labelled", target_labelled, labelled=True)
            self.k_shot_pool = target_labelled
        self.augment = augment
        if "simclr" in methods and augment is None:
            if getattr(model, "geometry", None) is None:
                raise ValueError(f"fit({name!r}): the model has no .geometry for the default CaloAugment; pass augment=")
            self.augment = CaloAugment(model.geometry)
        self.plan = [_Epoch(stage, e + 1) for stage in stages(methods) if stage != "pseudo_label"
                     for e in range(self._stage_epochs(stage))]
        if "pseudo_label" in methods:
            self.plan += [_Epoch("pseudo_label", i * config.pseudo_epochs + e + 1, i + 1)
                          for i in range(config.pseudo_iterations) for e in range(config.pseudo_epochs)]
        self.summary = {
            "format": _FORMAT, "method": name, "config": config.digest(),
            "sizes": {"labelled": len(self.labelled), "target": None if self.target is None else len(self.target),
                      "k_shot_pool": None if self.k_shot_pool is None else len(self.k_shot_pool)},
            "epochs": len(self.plan),
        }
        self.history: list[dict] = []
        self.checkpoints: list[Checkpoint] = []
        self.pseudo: Domain | None = None
        self._pseudo_index: torch.Tensor | None = None
        self.k_shot: Domain | None = None

    def _stage_epochs(self, stage: str) -> int:
        c = self.config
        return {"pretrain": c.simclr_epochs, "train": c.epochs, "few_shot": c.few_shot_epochs}[stage]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def build(self) -> None:
        """Helper heads and optimisers (initialised from the global generator fit has just seeded)."""
        c, model = self.config, self.model
        self.heads = nn.ModuleDict()
        if "dann" in self.methods:
            self.heads["discriminator"] = DomainDiscriminator(model.n_features, hidden=c.discriminator_hidden)
        if "simclr" in self.methods:
            self.heads["projection"] = ProjectionHead(model.n_features, c.simclr_projection)
        self.heads.to(self.device)
        discriminator = list(self.heads["discriminator"].parameters()) if "dann" in self.methods else []
        adam = lambda params, lr: torch.optim.Adam(params, lr=lr, weight_decay=c.weight_decay)  # noqa: E731
        self.optimizers = {"train": adam([*model.parameters(), *discriminator], c.lr)}
        if "simclr" in self.methods:
            self.optimizers["pretrain"] = adam([*model.parameters(), *self.heads["projection"].parameters()], c.simclr_lr)
        if "few_shot" in self.methods:
            self.optimizers["few_shot"] = adam([*model.parameters(), *discriminator], c.few_shot_lr)
        self.generator = torch.Generator().manual_seed(c.seed)
        if self.k_shot_pool is not None:
            index = k_shot_indices(self.k_shot_pool.labels, c.few_shot_k, generator=self.generator)
            self.k_shot = self.k_shot_pool.subset(index)

    # ---- checkpoints ---------------------------------------------------------------------------
    def _payload(self, done: int) -> dict:
        cuda = self.device.type == "cuda"
        return {
            "run": self.summary, "config": self.config.to_dict(), "done": done,
            "stage": self.plan[done - 1].stage, "epoch": self.plan[done - 1].epoch,
            "iteration": self.plan[done - 1].iteration,
            "model": self.model.state_dict(), "heads": self.heads.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if cuda else None,
            "pseudo": None if self.pseudo is None else {"inputs_index": self._pseudo_index, "labels": self.pseudo.labels},
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
        if payload["pseudo"] is not None:
            self._pseudo_index = payload["pseudo"]["inputs_index"]
            self.pseudo = self._pseudo_domain(self._pseudo_index, payload["pseudo"]["labels"])
        self.history = payload["history"]
        names = payload["files"]
        self.checkpoints = [Checkpoint(e.stage, e.epoch, folder / n, None) for e, n in zip(self.plan, names)]

    def _save(self, folder: Path | None, done: int) -> None:
        spec = self.plan[done - 1]
        if folder is None:
            state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.checkpoints.append(Checkpoint(spec.stage, spec.epoch, None, state))
            return
        path = folder / _checkpoint.checkpoint_name(done, spec.stage, spec.epoch)
        self.checkpoints.append(Checkpoint(spec.stage, spec.epoch, path, None))
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
                record = self._pretrain_epoch(bar) if spec.stage == "pretrain" else self._supervised_epoch(spec, bar)
                record = {"stage": spec.stage, "epoch": spec.epoch, "iteration": spec.iteration, **record}
                record["seconds"] = time.perf_counter() - t0
                self.history.append(record)
                self._save(folder, done)
        finally:
            if bar is not None:
                bar.close()

    def _bar(self, stage: str, done: int, previous):
        from tqdm import tqdm

        if previous is not None:
            previous.close()
        steps = [self._steps(e.stage) for e in self.plan if e.stage == stage]
        finished = sum(self._steps(e.stage) for e in self.plan[:done] if e.stage == stage)
        return tqdm(total=sum(steps), initial=finished, desc=f"{'+'.join(self.methods)} {stage}", unit=" steps",
                    disable=None)

    def _steps(self, stage: str) -> int:
        n = len(self.labelled) + len(self.target) if stage == "pretrain" else len(self.labelled)
        return _n_batches(n, self.config.batch_size)

    def _pretrain_epoch(self, bar) -> dict:
        """One pass of NT-Xent over source + target events, two augmented views of each."""
        c, g, device = self.config, self.generator, self.device
        pool = torch.cat([self.labelled.inputs, self.target.inputs])
        projection, optimizer = self.heads["projection"], self.optimizers["pretrain"]
        total = torch.zeros((), device=device)
        batches = _batches(len(pool), c.batch_size, g)
        for index in batches:
            x = pool[index].to(device)
            views = torch.cat([self.augment(x, g), self.augment(x, g)])
            z = projection(self.model.features(views))
            loss = nt_xent(z[: len(x)], z[len(x):], temperature=c.simclr_temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            if bar is not None:
                bar.update(1)
        mean = float(total) / len(batches)
        return {"steps": len(batches), "loss": mean, "contrastive": mean}

    def _supervised_epoch(self, spec: _Epoch, bar) -> dict:
        """One pass over the labelled domain with the method's extra labelled set and alignment losses."""
        c, g, device, model = self.config, self.generator, self.device, self.model
        record: dict = {}
        extra, extra_name, extra_weight = None, None, 1.0
        optimizer = self.optimizers["few_shot" if spec.stage == "few_shot" else "train"]
        if spec.stage == "few_shot":
            extra, extra_name, extra_weight = self.k_shot, "few_shot_ce", c.few_shot_weight
        elif spec.stage == "pseudo_label":
            if spec.epoch == (spec.iteration - 1) * c.pseudo_epochs + 1:
                self._relabel()
            extra, extra_name = self._pseudo_with_k_shot(), "pseudo_ce"
            record["pseudo_kept"] = len(self.pseudo)
        batches = _batches(len(self.labelled), c.batch_size, g)
        sizes = [len(b) for b in batches]
        targets = _stream(len(self.target), sizes, g) if self.alignments else None
        extras = _stream(len(extra), [min(s, len(extra)) for s in sizes], g) if extra is not None and len(extra) else None
        discriminator = self.heads["discriminator"] if "dann" in self.methods else None
        names = ["ce", *([extra_name] if extras is not None else []), *self.alignments]
        sums = {name: torch.zeros((), device=device) for name in ["loss", *names]}
        domain_correct = torch.zeros((), device=device)
        domain_total = 0
        augment = self.augment if "simclr" in self.methods and c.simclr_augment_labelled else None
        for step, index in enumerate(batches):
            parts = [self.labelled.inputs[index] if augment is None else augment(self.labelled.inputs[index], g)]
            if extras is not None:
                parts.append(extra.inputs[extras[step]])
            if targets is not None:
                parts.append(self.target.inputs[targets[step]])
            features = model.features(torch.cat(parts).to(device))
            f_labelled, f_extra, f_target = _split(features, [len(p) for p in parts], extras is not None,
                                                   targets is not None)
            losses = {"ce": F.cross_entropy(model.head(f_labelled), self.labelled.labels[index].to(device))}
            if extras is not None:
                losses[extra_name] = F.cross_entropy(model.head(f_extra), extra.labels[extras[step]].to(device))
            if discriminator is not None:
                progress = ((spec.epoch - 1) * len(batches) + step) / (c.epochs * len(batches))
                discriminator.set_alpha(dann_alpha(progress if spec.stage == "train" else 1.0, gamma=c.dann_gamma))
                logits = discriminator(torch.cat([f_labelled, f_target]))
                domain = torch.cat([torch.zeros(len(f_labelled)), torch.ones(len(f_target))]).to(device)
                losses["dann"] = F.binary_cross_entropy_with_logits(logits, domain)
                domain_correct += ((logits.detach() > 0) == (domain > 0.5)).sum()
                domain_total += len(domain)
            if "coral" in self.alignments:
                losses["coral"] = coral(f_labelled, f_target)
            if "mmd" in self.alignments:
                pairs = {"features": (f_labelled, f_target), "logits": (model.head(f_labelled), model.head(f_target))}
                losses["mmd"] = sum(mmd(*pairs[on]) for on in c.mmd_on)
            weights = {"dann": c.dann_weight, "coral": c.coral_weight, "mmd": c.mmd_weight, extra_name: extra_weight}
            loss = sum(weights.get(name, 1.0) * value for name, value in losses.items())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums["loss"] += loss.detach()
            for name, value in losses.items():
                sums[name] += value.detach()
            if bar is not None:
                bar.update(1)
        record.update({"steps": len(batches), **{name: float(s) / len(batches) for name, s in sums.items()}})
        if discriminator is not None:
            record["domain_accuracy"] = float(domain_correct) / domain_total
        return record

    def _relabel(self) -> None:
        """Pseudo-labels of the target from the current model (confident, class-balanced)."""
        probs = predict(self.model, self.target.inputs).probs
        index, labels = select_pseudo_labels(probs, threshold=self.config.pseudo_threshold,
                                             class_balance=self.config.pseudo_class_balance)
        self._pseudo_index = index
        self.pseudo = self._pseudo_domain(index, labels)

    def _pseudo_domain(self, index: torch.Tensor, labels: torch.Tensor) -> Domain:
        target = self.target.subset(index)
        return Domain(target.inputs, labels, target.energy, f"{self.target.name} (pseudo-labelled)")

    def _pseudo_with_k_shot(self) -> Domain:
        """The pseudo-labelled target, plus the k-shot events when the method has few_shot."""
        if self.k_shot is None:
            return self.pseudo
        return Domain(torch.cat([self.pseudo.inputs, self.k_shot.inputs]),
                      torch.cat([self.pseudo.labels, self.k_shot.labels]), None, self.pseudo.name)


def _check_domain(method: str, argument: str, domain, *, labelled: bool) -> None:
    if not isinstance(domain, Domain):
        raise ValueError(f"fit({method!r}) needs {argument}: a Domain, got {type(domain).__name__}")
    if len(domain) == 0:
        raise ValueError(f"fit({method!r}): {argument} has no events")
    if labelled and not domain.labelled:
        raise ValueError(f"fit({method!r}): {argument} must be labelled (Domain.labels), got {domain.name!r} without")


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


def _split(features: torch.Tensor, sizes: list[int], has_extra: bool, has_target: bool):
    """(labelled, extra or None, target or None) rows of the features of the concatenated batch."""
    parts: Iterator[torch.Tensor] = iter(features.split(sizes))
    labelled = next(parts)
    extra = next(parts) if has_extra else None
    target = next(parts) if has_target else None
    return labelled, extra, target
