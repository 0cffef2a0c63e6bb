"""The interface of a generator (fast simulation of showers), its training loop, files and registry.

A generator learns p(shower | incident energy, particle) from simulated showers of one geometry and
draws new ones. Everywhere: images (N, n_cells) cell energies in MeV in the geometry's flat order,
labels (N,) int64 indices into the generator's ``particles``, energy (N,) incident energy in GeV.

A generator is one class in its own file under ``generate/`` that subclasses :class:`Generator` and
registers itself with :func:`register`. The base class owns what every generator shares: input
checks, the validation split, :meth:`Generator.fit` (seeding, epoch order, early stopping, a
checkpoint after every epoch, resume), :meth:`Generator.sample`, :meth:`Generator.save` and
:func:`load`. A subclass builds its networks in ``__init__`` and implements the hooks ``prepare``
(statistics of the training split), ``losses`` (the objective of a batch) and ``generate`` (one batch
of showers); ``make_optimizer`` defaults to Adam over every parameter at ``self.lr``, ``begin_epoch``
(before every epoch, e.g. a learning-rate schedule) to nothing.

Training (:meth:`Generator.fit`):

- validation split (:func:`validation_split`): a fraction of the showers, drawn by a permutation
  seeded by ``seed``, is held out; the generator never trains on it. It chooses the epoch only: keep
  the evaluation showers out of ``fit`` altogether.
- epochs: a fresh permutation of the training showers per epoch, in batches; one optimiser step per batch.
- early stopping: after every epoch, the mean validation loss (``losses(..., progress=None)``: the
  objective at its final settings, noise drawn from a generator seeded by ``seed`` afresh each epoch,
  so that every epoch is scored on the same draws). The weights of the epoch with the lowest
  validation loss are kept; training stops after ``patience`` epochs without a lower one (or after
  ``epochs``), and the generator ends with the best epoch's weights.
- checkpoints: with ``checkpoint_dir``, after every epoch one file ``<epoch>_train_e<epoch>.pt``
  (``007_train_e7.pt``; atomic write, then the previous epoch's file is deleted) with the current
  and the best weights, the optimiser, the random state and the history. ``resume=True`` continues
  from it and ends with the same weights as an uninterrupted run (same device and thread count): a
  kill loses at most the epoch in progress. :func:`load` reads a checkpoint as the best weights so far.
- data-parallel training (``torchrun``, :mod:`sim2real_fast.distributed`): every process draws the same
  epoch order and computes ``losses`` on its shard of each batch; the gradients are summed over the
  processes, each weighted by its share of the batch (the step of the whole batch's mean loss). The
  noise of ``losses`` comes from :meth:`Generator.draw_noise`, which draws it for the whole batch in
  every process (the generator and so the next epoch's order stay common, and a step uses the noise of
  one process). The validation loss is split alike and summed over the processes, so that every
  process stops at the same epoch; only the first process writes checkpoints.
"""

from __future__ import annotations

import abc
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Sequence

import torch
from torch import nn

from .. import _model_file, distributed
from .. import geometry as _geometry
from ..adapt import checkpoint as _checkpoint
from ..io._atomic import atomic_path

__all__ = [
    "FILE_FORMAT", "REGISTRY", "Generator", "GeneratorFileError", "Samples", "load", "read_payload", "register",
    "validation_split",
]

#: name -> generator class, filled by :func:`register` as the generator modules are imported.
REGISTRY: dict[str, type[Generator]] = {}

#: Version of the file :meth:`Generator.save` writes (and of the checkpoints' run summary).
FILE_FORMAT = 1

_MAGIC = "sim2real_fast.generate"


class GeneratorFileError(ValueError):
    """A file that is not a generator, holds another method, or does not fit the expected geometry."""


class Samples(NamedTuple):
    """The output of :meth:`Generator.sample`."""

    images: torch.Tensor  # (n, n_cells) float32 cell energies in MeV, on the CPU
    labels: torch.Tensor  # (n,) int64 indices into the generator's particles
    energy: torch.Tensor  # (n,) float64 incident energy in GeV


def register(cls: type[Generator]) -> type[Generator]:
    """Class decorator: make ``cls`` available by ``cls.name`` (to :func:`load`)."""
    if not getattr(cls, "name", "") or cls.name in REGISTRY:
        raise ValueError(f"register: generator name {getattr(cls, 'name', None)!r} is missing or taken")
    REGISTRY[cls.name] = cls
    return cls


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def validation_split(n: int, *, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) int64 indices (each ascending) of ``n`` showers: the first max(1, round(fraction x n))
    of a permutation drawn from ``torch.Generator().manual_seed(seed)`` validate, the rest train."""
    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction < 1):
        raise ValueError(f"validation_fraction: expected a number in (0, 1), got {fraction!r}")
    held = max(1, round(fraction * n))
    if held >= n:
        raise ValueError(f"validation_fraction: {fraction} of {n} showers leaves none to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[held:].sort().values, order[:held].sort().values


class Generator(nn.Module, metaclass=abc.ABCMeta):
    """A generator of (N, n_cells) showers in MeV on one geometry, conditional on incident energy and particle.

    Subclasses set the class attributes, build their networks in ``__init__`` (after
    ``super().__init__``) and implement the abstract hooks. Every keyword of a subclass' ``__init__``
    goes into ``hparams`` (JSON-ready values, ``particles`` included): :func:`load` rebuilds the
    generator as ``cls(geometry, **hparams)`` and loads the state (weights and buffers, the trained
    energy range and particles among them).

    Class attributes:
        name: the name users write (``"vae"``); registered by :func:`register`.
        summary: one line for ``--help`` and the README.
        default_epochs, default_batch_size, default_patience: :meth:`fit`'s defaults.

    Attributes:
        geometry: the :class:`~sim2real_fast.geometry.Geometry` of every shower.
        particles: the class names; label i is ``particles[i]`` (default as ``simulate.PARTICLES``).
        hparams: the keywords of ``__init__`` (without ``geometry``).
        history: one dict per trained epoch ("epoch", "lr", the mean training losses, "validation_loss",
            "best_epoch", "seconds").
        best_epoch: the epoch whose weights the generator holds after :meth:`fit` (None before).
        source: the file the generator was loaded from, or None.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    default_epochs: ClassVar[int] = 30
    default_batch_size: ClassVar[int] = 256
    default_patience: ClassVar[int] = 5

    def __init__(self, geometry: str | _geometry.Geometry, *, particles: Sequence[str], hparams: dict) -> None:
        super().__init__()
        self.geometry = _geometry.get(geometry)
        names = list(particles) if isinstance(particles, (list, tuple)) else None
        if not names or not all(isinstance(p, str) and p for p in names) or len(set(names)) != len(names):
            raise ValueError(f"particles: expected distinct non-empty class names, got {particles!r}")
        self.particles = tuple(names)
        self.hparams = {**hparams, "particles": names}
        #: (low, high) incident energy in GeV the generator was trained on; NaN before fit
        self.register_buffer("trained_energy", torch.full((2,), math.nan, dtype=torch.float64))
        #: (n_particles,) True for the particles of the training split
        self.register_buffer("trained_particles", torch.zeros(len(names), dtype=torch.bool))
        self.history: list[dict] = []
        self.best_epoch: int | None = None
        self.source: Path | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._rows: tuple[torch.Tensor, int] | None = None  # this process's rows of the batch, its size

    # ---- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def prepare(self, images: torch.Tensor, labels: torch.Tensor, energy: torch.Tensor) -> None:
        """Statistics of the training split (CPU: (N, n_cells) float32 MeV, (N,) int64, (N,) float64 GeV),
        called by :meth:`fit` after the weights are initialised and ``trained_energy`` and
        ``trained_particles`` are set: preprocessing buffers, output biases."""

    @abc.abstractmethod
    def losses(self, images: torch.Tensor, labels: torch.Tensor, energy: torch.Tensor, *,
               progress: float | None, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """The objective of a batch on the generator's device: (B, n_cells) float32 MeV, (B,) int64,
        (B,) float32 GeV. ``progress``: epochs completed so far in training (0 at the first step),
        None for the validation loss. Returns batch means, the objective under ``"loss"``; draws
        from ``generator`` (CPU) through :meth:`draw_noise`."""

    @abc.abstractmethod
    def generate(self, labels: torch.Tensor, energy: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) int64 labels and (B,) float32 GeV on the device -> (B, n_cells) float32 MeV, non-negative,
        below-threshold cells 0 (called in inference mode); draws from ``generator`` (CPU)."""

    def begin_epoch(self, epoch: int) -> None:
        """Before the 1-based ``epoch`` of :meth:`fit` (e.g. to set the learning rate); the default does nothing."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of :meth:`fit`: Adam over every parameter at ``self.lr`` (set by the subclass)."""
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def reset_parameters(self) -> None:
        """Initialise every submodule that has ``reset_parameters`` (from torch's global generator,
        which :meth:`fit` seeds)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()

    def draw_noise(self, sample: Callable[..., torch.Tensor], size: Sequence[int],
                   generator: torch.Generator) -> torch.Tensor:
        """``sample(size, generator=generator)`` (``torch.rand``, ``torch.randn``) on the CPU for the (B, ...) batch
        that :meth:`losses` holds. In data-parallel training that batch is this process's rows of a larger
        one: the draw is then the whole batch's, of which these rows, so that every process advances
        ``generator`` alike."""
        if self._rows is None:
            return sample(size, generator=generator)
        rows, total = self._rows
        return sample((total, *size[1:]), generator=generator)[rows]

    @contextlib.contextmanager
    def _shard(self, index: torch.Tensor) -> Iterator[torch.Tensor]:
        """This process's part of the batch ``index`` (B,) (:func:`~sim2real_fast.distributed.shard`); inside the
        block :meth:`draw_noise` draws for the whole batch."""
        if distributed.world_size() == 1:
            yield index
            return
        self._rows = (distributed.shard(torch.arange(len(index))), len(index))
        try:
            yield distributed.shard(index)
        finally:
            self._rows = None

    # ---- state ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.trained_energy.device

    @property
    def energy_range(self) -> tuple[float, float] | None:
        """(low, high) GeV of the training, or None before :meth:`fit`."""
        low, high = self.trained_energy.tolist()
        return None if math.isnan(low) else (low, high)

    @property
    def trained(self) -> tuple[str, ...]:
        """Names of the particles the generator was trained on."""
        return tuple(p for p, seen in zip(self.particles, self.trained_particles.tolist()) if seen)

    def _owner(self) -> str:
        return f"{self.name}" + (f" (file {self.source})" if self.source is not None else "")

    # ---- checks --------------------------------------------------------------------------------
    def check_data(self, images: torch.Tensor, labels: torch.Tensor,
                   energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raises unless images (N, n_cells) MeV, labels (N,) in [0, n_particles) and energy (N,) GeV > 0 are
        finite tensors of one N >= 2; returns them as float32, int64 and float64 on the CPU."""
        n_cells = self.geometry.n_cells
        for arg, value in (("images", images), ("labels", labels), ("energy", energy)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{arg}: expected a tensor, got {type(value).__name__}")
        if images.dim() != 2 or images.shape[1] != n_cells or not images.is_floating_point():
            raise ValueError(f"images: expected floating (N, {n_cells}) cell energies in MeV of geometry "
                             f"{self.geometry.name!r}, got {images.dtype} {tuple(images.shape)}")
        n = len(images)
        if n < 2:
            raise ValueError(f"images: expected at least 2 showers (training and validation), got {n}")
        if labels.shape != (n,) or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels: expected ({n},) integer labels, got {labels.dtype} {tuple(labels.shape)}")
        if energy.shape != (n,) or not energy.is_floating_point():
            raise ValueError(f"energy: expected ({n},) floating incident energies in GeV, got "
                             f"{energy.dtype} {tuple(energy.shape)}")
        images, labels, energy = images.float().cpu(), labels.long().cpu(), energy.double().cpu()
        if not bool(torch.isfinite(images).all()):
            raise ValueError("images: hold NaN or infinite energies")
        if bool(((labels < 0) | (labels >= len(self.particles))).any()):
            raise ValueError(f"labels: expected values in [0, {len(self.particles)}) (particles "
                             f"{', '.join(self.particles)}), got {sorted(set(labels.tolist()))}")
        if not bool((torch.isfinite(energy) & (energy > 0)).all()):
            raise ValueError("energy: expected finite incident energies > 0 GeV")
        return images, labels, energy

    def _check_energy_range(self, energy_range: Any, energy: torch.Tensor) -> tuple[float, float]:
        low, high = float(energy.min()), float(energy.max())
        if energy_range is None:
            return low, high
        ok = (isinstance(energy_range, (tuple, list)) and len(energy_range) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in energy_range)
              and 0 < energy_range[0] <= energy_range[1] < math.inf)
        if not ok:
            raise ValueError(f"energy_range: expected (low, high) GeV with 0 < low <= high, got {energy_range!r}")
        if low < energy_range[0] or high > energy_range[1]:
            raise ValueError(f"energy_range: the showers' energies {low:.6g}-{high:.6g} GeV reach outside "
                             f"{tuple(energy_range)}")
        return float(energy_range[0]), float(energy_range[1])

    # ---- training ------------------------------------------------------------------------------
    def fit(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        energy: torch.Tensor,
        *,
        energy_range: tuple[float, float] | None = None,
        validation_fraction: float = 0.1,
        epochs: int | None = None,
        batch_size: int | None = None,
        patience: int | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = False,
        seed: int = 0,
    ) -> Generator:
        """Train from scratch (weights initialised from ``seed``); returns self in eval mode with the
        weights of the epoch of lowest validation loss (``best_epoch``).

        Args:
            images, labels, energy: (N, n_cells) MeV, (N,) labels into ``particles``, (N,) GeV.
            energy_range: (low, high) GeV the showers were drawn from, the range :meth:`sample` accepts;
                None: the showers' smallest and largest energy.
            validation_fraction: the share held out for early stopping (:func:`validation_split`).
            epochs: most passes over the training showers; None: ``default_epochs``.
            batch_size: showers per step; None: ``default_batch_size``.
            patience: stop after this many epochs without a lower validation loss; None: ``default_patience``.
            checkpoint_dir: a folder (created if missing) that gets a checkpoint after every epoch (in data-parallel
                training from the first process; every process resumes from it).
            resume: continue after the checkpoint in ``checkpoint_dir`` (the same call gives the same
                weights as an uninterrupted run); a finished run loads its result.
            progress: a tqdm bar over the steps (stderr).
            seed: seeds the initialisation, the validation split, the epoch order and every draw.
        """
        epochs = self.default_epochs if epochs is None else epochs
        batch_size = self.default_batch_size if batch_size is None else batch_size
        patience = self.default_patience if patience is None else patience
        for arg, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                    ("patience", patience, 1), ("seed", seed, 0)):
            if not _is_int(value, minimum):
                raise ValueError(f"{arg}: expected an int >= {minimum}, got {value!r}")
        images, labels, energy = self.check_data(images, labels, energy)
        energy_range = self._check_energy_range(energy_range, energy)
        train, validation = validation_split(len(images), fraction=validation_fraction, seed=seed)
        last, processes = (len(train) - 1) % batch_size + 1, distributed.world_size()
        if last < processes:
            raise ValueError(f"batch_size: {processes} processes split every step's showers, but the last step of "
                             f"{len(train)} training showers in batches of {batch_size} holds {last}; change "
                             f"batch_size or the showers")
        folder = None if checkpoint_dir is None else Path(checkpoint_dir)
        if resume and folder is None:
            raise ValueError("resume: resume=True needs the checkpoint_dir of the run to continue")
        files: list[Path] = []
        if folder is not None:
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(f"checkpoint_dir: {folder} exists and is not a folder")
            if distributed.is_main():
                folder.mkdir(parents=True, exist_ok=True)
            files = _checkpoint.checkpoint_files(folder) if folder.is_dir() else []
            if files and not resume:
                raise FileExistsError(f"checkpoint_dir: {folder} already holds checkpoints ({files[-1].name}); "
                                      "pass resume=True to continue that run, or use an empty folder")
        run = {"format": FILE_FORMAT, "method": self.name, "geometry": self.geometry.to_dict(),
               "hparams": self.hparams, "size": len(images), "energy_range": list(energy_range),
               "validation_fraction": validation_fraction, "epochs": epochs, "batch_size": batch_size,
               "patience": patience, "seed": seed}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.reset_parameters()
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                self.trained_energy.copy_(torch.tensor(energy_range, dtype=torch.float64))
                self.trained_particles.copy_(torch.bincount(labels[train], minlength=len(self.particles)) > 0)
            self.prepare(images[train], labels[train], energy[train])
            self.history, self._optimizer = [], self.make_optimizer()
            best = {"epoch": 0, "loss": math.inf, "state": self._state()}
            done, stopped = 0, False
            if files:
                done, stopped, best = self._restore(_checkpoint.read_checkpoint(files[-1]), run, files[-1], generator)
            distributed.check_resume(done, folder, owner="checkpoint_dir", device=self.device)
            distributed.broadcast_parameters(self)
            if not stopped:
                data = (images, labels, energy)
                self._train(data, train, validation, run, done, best, folder, generator, progress)
        self.load_state_dict(best["state"])
        self.best_epoch = best["epoch"]
        return self.eval()

    def _batch(self, data: tuple, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels, energy = data
        device = self.device
        return images[index].to(device), labels[index].to(device), energy[index].to(device, torch.float32)

    def validation_loss(self, data: tuple, index: torch.Tensor, *, seed: int, batch_size: int) -> float:
        """Mean ``losses(..., progress=None)["loss"]`` over the showers ``index`` of ``data`` (images, labels,
        energy), without gradients, noise from ``torch.Generator().manual_seed(seed)``. In data-parallel
        training each process takes its shard of every batch and the sums are added over the processes: the
        same value in every process."""
        generator = torch.Generator().manual_seed(seed)
        total = 0.0
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                for part in index.split(batch_size):
                    with self._shard(part) as mine:
                        if len(mine):
                            loss = self.losses(*self._batch(data, mine), progress=None, generator=generator)["loss"]
                            total += float(loss) * len(mine)
        finally:
            self.train(was_training)
        total = distributed.gather(torch.tensor([total], dtype=torch.float64, device=self.device)).sum()
        return float(total) / len(index)

    def _train(self, data, train, validation, run, done, best, folder, generator, progress) -> None:
        epochs, batch_size, patience, seed = run["epochs"], run["batch_size"], run["patience"], run["seed"]
        steps = math.ceil(len(train) / batch_size)
        parameters = [p for group in self._optimizer.param_groups for p in group["params"]]
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps * epochs, initial=steps * done, desc=self.name, unit=" steps", disable=None)
        try:
            for epoch in range(done + 1, epochs + 1):
                start = time.perf_counter()
                self.train()
                self.begin_epoch(epoch)
                order = train[torch.randperm(len(train), generator=generator)]
                sums: dict[str, float] = {}
                for step, index in enumerate(order.split(batch_size)):
                    with self._shard(index) as mine:
                        losses = self.losses(*self._batch(data, mine), progress=epoch - 1 + step / steps,
                                             generator=generator)
                    self._optimizer.zero_grad(set_to_none=True)
                    losses["loss"].backward()
                    distributed.average_gradients(parameters, weight=len(mine) / len(index))
                    self._optimizer.step()
                    for key, value in losses.items():
                        sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(mine)
                    if bar is not None:
                        bar.update()
                summed = torch.tensor([list(sums.values())], dtype=torch.float64, device=self.device)
                sums = dict(zip(sums, distributed.gather(summed).sum(0).tolist()))
                if not math.isfinite(sums["loss"]):
                    raise FloatingPointError(f"fit: the training loss of epoch {epoch} is not finite; "
                                             "lower lr or check the showers")
                record = {"epoch": epoch, "lr": self._optimizer.param_groups[0]["lr"],
                          **{key: value / len(train) for key, value in sums.items()}}
                record["validation_loss"] = self.validation_loss(data, validation, seed=seed, batch_size=batch_size)
                if record["validation_loss"] < best["loss"]:
                    best.update(epoch=epoch, loss=record["validation_loss"], state=self._state())
                record["best_epoch"] = best["epoch"]
                record["seconds"] = time.perf_counter() - start
                self.history.append(record)
                stopped = epoch - best["epoch"] >= patience
                if folder is not None and distributed.is_main():
                    self._checkpoint(folder, run, epoch, stopped, best, generator)
                if stopped:
                    break
        finally:
            if bar is not None:
                bar.close()

    def _state(self) -> dict:
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def _checkpoint(self, folder: Path, run: dict, epoch: int, stopped: bool, best: dict,
                    generator: torch.Generator) -> None:
        previous = _checkpoint.checkpoint_files(folder)
        path = folder / _checkpoint.checkpoint_name(epoch, "train", epoch)
        _checkpoint.write_checkpoint(path, {
            "run": run, "epoch": epoch, "stopped": stopped, "best_loss": best["loss"],
            "generator": self._payload(best["state"], best["epoch"]), "current": self._state(),
            "optimizer": self._optimizer.state_dict(), "rng": generator.get_state(),
        })
        for old in previous:
            if old != path:
                old.unlink(missing_ok=True)

    def _restore(self, payload: dict, run: dict, path: Path, generator: torch.Generator) -> tuple[int, bool, dict]:
        if payload.get("run") != run:
            raise ValueError(f"checkpoint_dir: checkpoint {path} belongs to another run; resume with the same "
                             "generator, showers, energy_range, validation_fraction, epochs, batch_size, patience "
                             "and seed, or use another checkpoint_dir")
        saved = payload["generator"]
        self.load_state_dict(payload["current"])
        self.history = list(saved["history"])
        self._optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["rng"])
        best = {"epoch": saved["best_epoch"], "loss": payload["best_loss"], "state": saved["state"]}
        return payload["epoch"], payload["stopped"], best

    # ---- sampling ------------------------------------------------------------------------------
    def _sample_energy(self, n: int, energy: Any, generator: torch.Generator) -> torch.Tensor:
        low, high = self.energy_range
        trained = f"the trained range {low:.6g}-{high:.6g} GeV of this {self._owner()}"
        if isinstance(energy, torch.Tensor):
            if energy.shape != (n,) or not energy.is_floating_point():
                raise ValueError(f"energy: expected ({n},) floating energies in GeV, got "
                                 f"{energy.dtype} {tuple(energy.shape)}")
            energy = energy.detach().double().cpu()
            outside = ~((energy >= low) & (energy <= high))
            if bool(outside.any()):
                raise ValueError(f"energy: {float(energy[outside][0]):.6g} GeV is outside {trained}")
            return energy
        if energy is None:
            energy = (low, high)
        ok = (isinstance(energy, (tuple, list)) and len(energy) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in energy)
              and energy[0] <= energy[1])
        if not ok:
            raise ValueError(f"energy: expected (low, high) GeV or a ({n},) tensor of GeV, got {energy!r}")
        if energy[0] < low or energy[1] > high:
            raise ValueError(f"energy: ({energy[0]:.6g}, {energy[1]:.6g}) GeV reaches outside {trained}")
        return energy[0] + (energy[1] - energy[0]) * torch.rand(n, generator=generator, dtype=torch.float64)

    def _sample_labels(self, n: int, particle: Any, generator: torch.Generator) -> torch.Tensor:
        trained = self.trained
        known = f"this {self._owner()} was trained on {', '.join(trained)}"
        if particle is None:
            codes = torch.tensor([self.particles.index(p) for p in trained])
            return codes[torch.randint(len(codes), (n,), generator=generator)]
        if isinstance(particle, str):
            if particle not in self.particles:
                raise ValueError(f"particle: unknown {particle!r}; {known}")
            if particle not in trained:
                raise ValueError(f"particle: {particle!r} was not in the training showers; {known}")
            return torch.full((n,), self.particles.index(particle), dtype=torch.int64)
        if isinstance(particle, torch.Tensor):
            if particle.shape != (n,) or particle.is_floating_point() or particle.dtype == torch.bool:
                raise ValueError(f"particle: expected ({n},) integer labels, got {particle.dtype} "
                                 f"{tuple(particle.shape)}")
            labels = particle.detach().long().cpu()
            valid = self.trained_particles.cpu()
            bad = (labels < 0) | (labels >= len(self.particles))
            bad |= ~valid[labels.clamp(0, len(self.particles) - 1)]
            if bool(bad.any()):
                raise ValueError(f"particle: label {int(labels[bad][0])} is not a trained particle; {known} "
                                 f"(labels {[self.particles.index(p) for p in trained]})")
            return labels
        raise ValueError(f"particle: expected a particle name, a ({n},) label tensor or None, got "
                         f"{type(particle).__name__}")

    def sample(
        self,
        n: int,
        *,
        energy: tuple[float, float] | torch.Tensor | None = None,
        particle: str | torch.Tensor | None = None,
        seed: int = 0,
        batch_size: int = 10_000,
    ) -> Samples:
        """Draw ``n`` showers in inference mode; the same seed and batch_size give the same showers.

        Args:
            energy: (low, high) GeV, drawn uniformly (as ``simulate.showers``), or an (n,) tensor of GeV;
                None: the trained range. Every energy must lie in the trained range (:attr:`energy_range`).
            particle: a name of ``particles``, an (n,) tensor of labels, or None: uniformly among the
                trained particles.
            seed: seeds every draw (energies, labels, latent codes, cells).
            batch_size: showers per batch (bounds memory).

        Returns:
            :class:`Samples` (images (n, n_cells) float32 MeV, labels (n,) int64, energy (n,) float64 GeV).
        """
        if self.energy_range is None:
            raise ValueError(f"{self.name}: not trained; call fit, or load a trained file")
        for arg, value, minimum in (("n", n, 0), ("batch_size", batch_size, 1), ("seed", seed, 0)):
            if not _is_int(value, minimum):
                raise ValueError(f"{arg}: expected an int >= {minimum}, got {value!r}")
        generator = torch.Generator().manual_seed(seed)
        energy = self._sample_energy(n, energy, generator)
        labels = self._sample_labels(n, particle, generator)
        images = torch.zeros(n, self.geometry.n_cells)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for start in range(0, n, batch_size):
                    part = slice(start, start + batch_size)
                    e = energy[part].to(self.device, torch.float32)
                    images[part] = self.generate(labels[part].to(self.device), e, generator).cpu()
        finally:
            self.train(was_training)
        return Samples(images, labels, energy)

    # ---- files ---------------------------------------------------------------------------------
    def _payload(self, state: dict | None = None, best_epoch: int | None = None) -> dict:
        return {
            "format": _MAGIC, "version": FILE_FORMAT, "method": self.name, "geometry": self.geometry.to_dict(),
            "hparams": self.hparams, "state": self._state() if state is None else state,
            "history": self.history, "best_epoch": self.best_epoch if state is None else best_epoch,
        }

    def save(self, path: str | Path) -> Path:
        """Write method name, geometry, hyper-parameters, weights, buffers and history to ``path`` atomically;
        returns it. Read it back with :func:`load`."""
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self._payload(), tmp)
        return path

    def extra_repr(self) -> str:
        return f"geometry={self.geometry.name!r}, particles={self.particles}"


def read_payload(path: str | Path) -> dict:
    """The generator payload of a file written by :meth:`Generator.save` or of a fit checkpoint (its best
    weights so far). Keys "method", "geometry", "hparams", "state", "history", "best_epoch"; a file
    that is neither raises :class:`GeneratorFileError` naming ``path``."""
    return _model_file.read_payload(path, kind="generator", magic=_MAGIC, version=FILE_FORMAT,
                                    error=GeneratorFileError)


def load(path: str | Path, *, method: str | None = None,
         geometry: str | _geometry.Geometry | None = None) -> Generator:
    """The generator saved in ``path`` (by :meth:`Generator.save`, or a fit checkpoint), in eval mode on the CPU.

    ``method`` and ``geometry``, when given, must match the file's. Every failure (not a generator
    file, an unknown or other method, another geometry, a state that does not fit) raises a one-line
    :class:`GeneratorFileError` naming the file.
    """
    payload = read_payload(path)
    model = _model_file.rebuild(path, payload, kind="generator", registry=REGISTRY, error=GeneratorFileError,
                                method=method, geometry=geometry)
    model.history = list(payload.get("history", []))
    model.best_epoch = payload.get("best_epoch")
    model.source = Path(path)
    return model.eval()
