"""The interface of a translator, its training loop, files, and the registry that names translators.

A translator is one class in its own file under ``translate/`` that subclasses :class:`Translator`
and registers itself with :func:`register`. The base class owns what every translator shares: the
energy codec (:class:`~.networks.ShowerCodec`), input checks, :meth:`Translator.fit` (seeding, epoch
order, a checkpoint after every epoch, resume), :meth:`Translator.translate` and
:meth:`Translator.save`, and the settings every translator shares (:meth:`Translator.set_training`;
:meth:`Translator.begin_epoch` applies the reference's linear decay to every optimiser). A subclass
checks its own settings (:func:`check_number`), builds its networks in ``__init__`` and implements
the hooks ``network``, ``start_fit`` (which fills ``_optimizers``), ``train_step`` and
``training_state`` / ``load_training_state``.

Data-parallel training (``torchrun``, :mod:`sim2real_fast.distributed`): every process draws the same
epoch order and runs its shard of each step's batch through ``train_step``, which takes its optimiser
steps with :meth:`Translator.step` (gradients summed over the processes, each weighted by its share
of the batch: the step of the whole batch's mean loss) and queries its image pools with
:meth:`Translator.query_pool` (the pool of the whole batch, the same in every process). A subclass
whose loss is a statistic of the batch gathers it (:func:`~sim2real_fast.distributed.gather`) and
takes a ``gathered`` step, as :class:`~.style.StyleTransfer` does. Only the first process writes
checkpoints.
"""

from __future__ import annotations

import abc
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .. import _model_file, distributed
from .. import geometry as _geometry
from ..adapt import checkpoint as _checkpoint
from ..io._atomic import atomic_path
from .networks import LayeredNetwork, ShowerCodec, energy_statistics

__all__ = [
    "FILE_FORMAT", "REGISTRY", "ImagePool", "Translator", "TranslatorFileError", "check_number", "linear_decay",
    "read_payload", "register",
]

#: name -> translator class, filled by :func:`register` as the translator modules are imported.
REGISTRY: dict[str, type[Translator]] = {}

#: Version of the file :meth:`Translator.save` writes (and of the checkpoints' run summary).
FILE_FORMAT = 1

_MAGIC = "sim2real_fast.translate"


class TranslatorFileError(ValueError):
    """A file that is not a translator, holds another method, or does not fit the expected geometry."""


def register(cls: type[Translator]) -> type[Translator]:
    """Class decorator: make ``cls`` available by ``cls.name`` (to :func:`sim2real_fast.translate.load`)."""
    if not getattr(cls, "name", "") or cls.name in REGISTRY:
        raise ValueError(f"register: translator name {getattr(cls, 'name', None)!r} is missing or taken")
    REGISTRY[cls.name] = cls
    return cls


def check_number(owner: str, name: str, value: float, *, zero: bool = False) -> float:
    """``value`` as a float, or a one-line ValueError unless it is a finite number > 0 (>= 0 with ``zero``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{owner}: {name} must be a finite number {'>=' if zero else '>'} 0, got {value!r}")
    return float(value)


def linear_decay(epoch: int, *, epochs: int, decay_epochs: int) -> float:
    """Learning-rate factor of the 1-based ``epoch``: the reference's ``linear`` policy.

    1 for the first ``epochs - decay_epochs`` epochs, then 1 - (epoch - constant) / (decay_epochs + 1):
    the reference (``n_epochs`` 100, ``n_epochs_decay`` 100) trains its last epoch at lr / 101.
    """
    if not 0 <= decay_epochs <= epochs or not 1 <= epoch <= epochs:
        raise ValueError(f"linear_decay: expected 1 <= epoch <= epochs and 0 <= decay_epochs <= epochs, "
                         f"got epoch={epoch}, epochs={epochs}, decay_epochs={decay_epochs}")
    return 1.0 - max(0, epoch - (epochs - decay_epochs)) / (decay_epochs + 1)


class ImagePool:
    """History of generated images shown to a discriminator (Shrivastava et al. 2017; CycleGAN's ImagePool).

    :meth:`query` takes a batch and returns one of the same shape: while the pool holds fewer than
    ``size`` images, each image is stored and returned; once full, each image is returned with
    probability 1/2, otherwise a uniformly chosen stored image is returned and replaced by it.
    ``size`` 0 returns the batch. Every query draws (B,) uniforms and (B,) slots from ``generator``.
    """

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"ImagePool: size must be an int >= 0, got {size!r}")
        self.size = size
        self.images: torch.Tensor | None = None
        self.count = 0

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, ...) generated images (detached) -> (B, ...) images for the discriminator."""
        if self.size == 0:
            return images
        images = images.detach()
        if self.images is None:
            self.images = images.new_zeros((self.size, *images.shape[1:]))
        swap = (torch.rand(len(images), generator=generator) > 0.5).tolist()
        slots = torch.randint(self.size, (len(images),), generator=generator).tolist()
        out = images.clone()
        for i in range(len(images)):
            if self.count < self.size:
                self.images[self.count] = images[i]
                self.count += 1
            elif swap[i]:
                out[i] = self.images[slots[i]]
                self.images[slots[i]] = images[i]
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "count": self.count,
                "images": None if self.images is None else self.images[: self.count].clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"ImagePool: state of a pool of size {state['size']}, this one has {self.size}")
        self.count, self.images = state["count"], None
        if state["images"] is not None:
            stored = state["images"]
            self.images = stored.new_zeros((self.size, *stored.shape[1:]))
            self.images[: self.count] = stored


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


class Translator(nn.Module, metaclass=abc.ABCMeta):
    """A sim -> real translator of (N, n_cells) showers in MeV on one geometry.

    Subclasses set the class attributes, build their networks in ``__init__`` (after
    ``super().__init__``), and implement the abstract hooks below. Every keyword of a subclass'
    ``__init__`` goes into ``hparams`` (JSON-ready values; ``log_scale`` and ``threshold_mev`` also
    configure the codec): :func:`~sim2real_fast.translate.load` rebuilds the translator as
    ``cls(geometry, **hparams)`` and loads the weights.

    Class attributes:
        name: the name users write (``"cyclegan"``); registered by :func:`register`.
        summary: one line for ``--help`` and the README.
        paired: trains on (sim[i], real[i]) pairs (Pix2Pix), else on unpaired samples.
        invertible: ``translate(..., reverse=True)`` maps real to sim.
        default_epochs, default_batch_size: :meth:`fit`'s defaults.

    Attributes:
        geometry: the :class:`~sim2real_fast.geometry.Geometry` of every input and output.
        codec: the :class:`~.networks.ShowerCodec` (log view, zero suppression, energies).
        hparams: the keywords of ``__init__`` (without ``geometry``).
        history: one dict per trained epoch ("epoch", "seconds", "lr" and the mean losses).
        source: the file the translator was loaded from, or None.
    """

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    paired: ClassVar[bool] = False
    invertible: ClassVar[bool] = False
    default_epochs: ClassVar[int] = 10
    default_batch_size: ClassVar[int] = 64

    def __init__(self, geometry: str | _geometry.Geometry, *, hparams: dict) -> None:
        super().__init__()
        self.geometry = _geometry.get(geometry)
        self.hparams = dict(hparams)
        self.codec = ShowerCodec(self.geometry, log_scale=hparams.get("log_scale", 10.0),
                                 threshold_mev=hparams.get("threshold_mev", 1.0))
        self.history: list[dict] = []
        self.source: Path | None = None
        self._share = 1.0  # this process's share of the step's batch (data-parallel training)

    # ---- hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def network(self, reverse: bool = False) -> nn.Module:
        """The generator :meth:`translate` applies: sim -> real, or real -> sim with ``reverse``."""

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Initialise every network from ``generator`` (the start of :meth:`fit`): children other than
        the codec in registration order, each by its ``reset_parameters(generator)``."""
        for child in self.children():
            if child is not self.codec:
                child.reset_parameters(generator)

    @abc.abstractmethod
    def start_fit(self, *, epochs: int) -> None:
        """Build the optimisers and any other training state (after :meth:`reset_parameters`)."""

    def begin_epoch(self, epoch: int, *, epochs: int) -> float:
        """Before the 1-based ``epoch``: ``lr`` times :func:`linear_decay` (the last ``floor(decay_fraction x
        epochs)`` epochs decay) on every optimiser of ``_optimizers``; returns that lr for the history."""
        lr = self.lr * linear_decay(epoch, epochs=epochs, decay_epochs=math.floor(self.decay_fraction * epochs))
        for optimizer in self._optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def set_training(self, *, energy_weight: float, energy_tolerance: float, lr: float, beta1: float,
                     decay_fraction: float) -> None:
        """Checks and keeps the settings every translator shares: the energy term's weight and tolerance,
        Adam's ``lr`` and ``beta1`` and the schedule's ``decay_fraction``."""
        owner = type(self).__name__
        self.energy_weight = check_number(owner, "energy_weight", energy_weight, zero=True)
        self.energy_tolerance = check_number(owner, "energy_tolerance", energy_tolerance, zero=True)
        self.lr = check_number(owner, "lr", lr)
        if not (isinstance(beta1, (int, float)) and 0 <= beta1 < 1):
            raise ValueError(f"{owner}: beta1 must be in [0, 1), got {beta1!r}")
        if not (isinstance(decay_fraction, (int, float)) and 0 <= decay_fraction <= 1):
            raise ValueError(f"{owner}: decay_fraction must be in [0, 1], got {decay_fraction!r}")
        self.beta1, self.decay_fraction = float(beta1), float(decay_fraction)

    @abc.abstractmethod
    def train_step(self, sim: torch.Tensor, real: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """One step on encoded batches (B, L, R, C) (:meth:`ShowerCodec.encode`); returns the losses (detached).

        Optimiser steps through :meth:`step`, pool queries through :meth:`query_pool`; in data-parallel
        training the batches are this process's shard of the step's."""

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, *, gathered: bool = False) -> None:
        """One step of ``optimizer`` on ``loss``, a mean over the showers of this process's batch: zero_grad,
        backward, the gradients summed over the processes weighted by their share of the step's showers
        (:func:`~sim2real_fast.distributed.average_gradients`: the gradient of the whole batch's mean), step.

        ``gathered``: ``loss`` holds a loss of gathered batches (:func:`~sim2real_fast.distributed.gather`),
        the same in every process; the gradients are then averaged plainly, and the means over this
        process's showers in ``loss`` must be multiplied by its share of the batch times the number of
        processes (as :class:`~.style.StyleTransfer` does). One process: the plain step either way."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients([p for group in optimizer.param_groups for p in group["params"]],
                                      weight=None if gathered else self._share)
        optimizer.step()

    def query_pool(self, pool: ImagePool, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``pool.query`` of this process's (B, ...) generated images. In data-parallel training every process
        queries its pool with the step's whole batch (gathered) and keeps its own rows: the pools and
        ``generator`` stay the same in every process, and equal to those of one process."""
        return distributed.shard(pool.query(distributed.gather(images.detach()), generator))

    @abc.abstractmethod
    def training_state(self) -> dict:
        """What a resumed fit needs besides the weights and generators: optimisers, pools (tensors and plain values)."""

    @abc.abstractmethod
    def load_training_state(self, state: dict) -> None:
        """Restores :meth:`training_state`."""

    # ---- use -----------------------------------------------------------------------------------
    def check_images(self, arg: str, images: torch.Tensor) -> torch.Tensor:
        """Raises unless ``images`` is a floating (N, n_cells) tensor of this translator's geometry."""
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"{arg}: expected a tensor of cell energies in MeV, got {type(images).__name__}")
        if images.dim() != 2 or images.shape[1] != self.geometry.n_cells:
            model = f" (model {self.source})" if self.source is not None else ""
            raise ValueError(
                f"{arg}: expected (N, {self.geometry.n_cells}) cell energies of geometry {self.geometry.name!r}"
                f"{model}, got {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise TypeError(f"{arg}: expected a floating tensor (MeV), got {images.dtype}")
        return images

    def translate(self, images: torch.Tensor, *, batch_size: int = 512, reverse: bool = False) -> torch.Tensor:
        """(N, n_cells) MeV -> (N, n_cells) float32 MeV on the input's device, in eval mode without gradients.

        Outputs are non-negative, zero-suppressed (a cell below its ``threshold_mev`` reads 0) and
        0 where the padded view has no cell. ``reverse=True`` maps real to sim (``invertible`` translators).
        """
        self.check_images("images", images)
        if not _is_int(batch_size, 1):
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
        if reverse and not self.invertible:
            raise ValueError(f"reverse: {self.name} translates sim to real only")
        network = self.network(reverse)
        device = self.codec.mask.device
        if len(images) == 0:
            return images.new_zeros(images.shape, dtype=torch.float32)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                outputs = [
                    self.codec.decode(network(self.codec.encode(chunk.to(device)))).to(images.device)
                    for chunk in images.split(batch_size)
                ]
        finally:
            self.train(was_training)
        return torch.cat(outputs)

    def generate(self, network: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, L, R, C) x -> the zero-suppressed image ``codec.suppress(network(x))`` (training-time view)."""
        return self.codec.suppress(network(x))

    # ---- training ------------------------------------------------------------------------------
    def fit(
        self,
        sim: torch.Tensor,
        real: torch.Tensor,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = False,
        seed: int = 0,
    ) -> Translator:
        """Train from scratch (weights initialised from ``seed``) on sim and real showers; returns self.

        The networks' layer-energy standardisation (:meth:`~.networks.LayeredNetwork.set_energy_statistics`)
        is taken from sim and real together before the first epoch.

        Args:
            sim, real: (N, n_cells) and (M, n_cells) cell energies in MeV (paired translators: N = M,
                row i of each a pair); moved batch by batch to the translator's device.
            epochs: passes over max(N, M) showers (the smaller set is cycled); None: ``default_epochs``.
            batch_size: showers of each domain per step; None: ``default_batch_size``.
            checkpoint_dir: a folder (created if missing) that gets a checkpoint after every epoch
                (atomic writes; the adaptation trainer's names, ``001_train_e1.pt``, ...); in data-parallel
                training the first process writes them and every process resumes from them.
            resume: continue after the last checkpoint in ``checkpoint_dir``: the same call gives
                the same weights as an uninterrupted run (same device and thread count); a finished
                run loads its last checkpoint.
            progress: a tqdm bar over the steps (stderr).
            seed: seeds the initialisation, the epoch order and every draw of the training.
        """
        epochs = self.default_epochs if epochs is None else epochs
        batch_size = self.default_batch_size if batch_size is None else batch_size
        for arg, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seed", seed, 0)):
            if not _is_int(value, minimum):
                raise ValueError(f"fit: {arg} must be an int >= {minimum}, got {value!r}")
        for arg, images in (("sim", sim), ("real", real)):
            self.check_images(arg, images)
            if not bool(torch.isfinite(images).all()):
                raise ValueError(f"fit: {arg} holds NaN or infinite energies")
        if len(sim) == 0 or len(real) == 0:
            raise ValueError(f"fit: sim and real need showers, got {len(sim)} and {len(real)}")
        if self.paired and len(sim) != len(real):
            raise ValueError(f"fit: {self.name} trains on pairs; sim has {len(sim)} showers, real {len(real)}")
        total, processes = max(len(sim), len(real)), distributed.world_size()
        last = (total - 1) % batch_size + 1
        if last < processes:
            raise ValueError(f"fit: {processes} processes split every step's showers, but the last step of {total} "
                             f"showers in batches of {batch_size} holds {last}; change batch_size or the showers")
        folder = None if checkpoint_dir is None else Path(checkpoint_dir)
        if resume and folder is None:
            raise ValueError("fit: resume=True needs the checkpoint_dir of the run to continue")
        files: list[Path] = []
        if folder is not None:
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(f"fit: checkpoint_dir {folder} exists and is not a folder")
            if distributed.is_main():
                folder.mkdir(parents=True, exist_ok=True)
            files = _checkpoint.checkpoint_files(folder) if folder.is_dir() else []
            if files and not resume:
                raise FileExistsError(f"fit: checkpoint_dir {folder} already holds checkpoints ({files[-1].name}); "
                                      "pass resume=True to continue that run, or use an empty folder")
        run = {"format": FILE_FORMAT, "method": self.name, "geometry": self.geometry.to_dict(),
               "hparams": self.hparams, "epochs": epochs, "batch_size": batch_size, "seed": seed,
               "sizes": [len(sim), len(real)]}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            self.reset_parameters(generator)
            mean, std = energy_statistics(self.geometry, sim, real)
            for module in self.modules():
                if isinstance(module, LayeredNetwork):
                    module.set_energy_statistics(mean, std)
            self.history = []
            self.start_fit(epochs=epochs)
            done = 0
            if files:
                done = self._restore(_checkpoint.read_checkpoint(files[-1]), run, files[-1], generator)
            distributed.check_resume(done, folder, owner="fit", device=self.codec.mask.device)
            distributed.broadcast_parameters(self)
            self._train(sim, real, run, done, folder, generator, progress)
        self.eval()
        return self

    def _train(self, sim, real, run, done, folder, generator, progress) -> None:
        epochs, batch_size = run["epochs"], run["batch_size"]
        device = self.codec.mask.device
        steps = math.ceil(max(len(sim), len(real)) / batch_size)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=steps * epochs, initial=steps * done, desc=self.name, unit=" steps", disable=None)
        try:
            for epoch in range(done + 1, epochs + 1):
                start = time.perf_counter()
                self.train()
                lr = self.begin_epoch(epoch, epochs=epochs)
                sums: dict[str, float] = {}
                for sim_index, real_index in self._epoch_order(len(sim), len(real), batch_size, generator):
                    sim_part, real_part = distributed.shard(sim_index), distributed.shard(real_index)
                    self._share = len(sim_part) / len(sim_index)
                    a = self.codec.encode(sim[sim_part].to(device))
                    b = self.codec.encode(real[real_part].to(device))
                    for key, value in self.train_step(a, b, generator).items():
                        sums[key] = sums.get(key, 0.0) + float(value) * self._share
                    if bar is not None:
                        bar.update()
                summed = torch.tensor([list(sums.values())], dtype=torch.float64, device=device)
                sums = dict(zip(sums, distributed.gather(summed).sum(0).tolist()))
                record = {"epoch": epoch, "lr": lr, **{k: v / steps for k, v in sums.items()}}
                record["seconds"] = time.perf_counter() - start
                self.history.append(record)
                if folder is not None and distributed.is_main():
                    path = folder / _checkpoint.checkpoint_name(epoch, "train", epoch)
                    _checkpoint.write_checkpoint(path, {
                        "run": run, "epoch": epoch, "translator": self._payload(),
                        "training": self.training_state(), "generator": generator.get_state(),
                        "torch_rng": torch.get_rng_state(),
                    })
        finally:
            if bar is not None:
                bar.close()

    def _epoch_order(self, n_sim: int, n_real: int, batch_size: int,
                     generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of (sim, real) indices over max(n_sim, n_real) showers; each domain a fresh
        permutation per pass, the smaller one cycled; paired translators use one order for both."""
        total = max(n_sim, n_real)

        def stream(n: int) -> torch.Tensor:
            parts = [torch.randperm(n, generator=generator) for _ in range(math.ceil(total / n))]
            return torch.cat(parts)[:total]

        sim_order = stream(n_sim)
        real_order = sim_order if self.paired else stream(n_real)
        return list(zip(sim_order.split(batch_size), real_order.split(batch_size)))

    def _restore(self, payload: dict, run: dict, path: Path, generator: torch.Generator) -> int:
        if payload.get("run") != run:
            raise ValueError(f"fit: checkpoint {path} belongs to another run; resume with the same translator, "
                             "data sizes, epochs, batch_size and seed, or use another checkpoint_dir")
        self.load_state_dict(payload["translator"]["state"])
        self.history = list(payload["translator"]["history"])
        self.load_training_state(payload["training"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        return payload["epoch"]

    # ---- files ---------------------------------------------------------------------------------
    def _payload(self) -> dict:
        return {
            "format": _MAGIC, "version": FILE_FORMAT, "method": self.name, "geometry": self.geometry.to_dict(),
            "hparams": self.hparams, "state": {k: v.detach().cpu().clone() for k, v in self.state_dict().items()},
            "history": self.history,
        }

    def save(self, path: str | Path) -> Path:
        """Write method name, geometry, hyper-parameters, weights and history to ``path`` atomically; returns it.

        Read it back with :func:`sim2real_fast.translate.load`.
        """
        path = Path(path)
        with atomic_path(path) as tmp:
            torch.save(self._payload(), tmp)
        return path

    def extra_repr(self) -> str:
        return f"geometry={self.geometry.name!r}"


def read_payload(path: str | Path) -> dict:
    """The translator payload of a file written by :meth:`Translator.save` or of a fit checkpoint.

    Keys "method", "geometry", "hparams", "state", "history"; a file that is neither raises
    :class:`TranslatorFileError` naming ``path``.
    """
    return _model_file.read_payload(path, kind="translator", magic=_MAGIC, version=FILE_FORMAT,
                                    error=TranslatorFileError)
