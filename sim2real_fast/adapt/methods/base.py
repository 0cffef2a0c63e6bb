"""The interface of an adaptation method, the stages of a fit, and the registry that names methods.

A method is one small class in its own file under ``adapt/methods/`` that registers itself with
:func:`register`. The trainer (:func:`~sim2real_fast.adapt.fit`) knows no method by name: it asks
every method of a combination, through the hooks below, what data it needs, which stages and heads
it adds, what it puts beside each labelled batch and which losses it adds to a supervised step.
A combination ``"a+b"`` is the union of its methods' stages, heads and losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

if TYPE_CHECKING:
    from torch import nn

    from ..config import AdaptConfig
    from ..domain import Domain
    from ..trainer import Step, _Run

__all__ = ["Extra", "Method", "REGISTRY", "Stage", "register", "train_stage"]

#: name -> method class, filled by :func:`register` as the method modules are imported.
REGISTRY: dict[str, type[Method]] = {}


@dataclass(frozen=True)
class Stage:
    """A stage of a fit: ``rounds`` x ``epochs`` epochs, run in increasing ``rank``.

    Attributes:
        name: the stage's name in histories and checkpoint files (``[a-z_]+``).
        rank: its place in the fit (pretrain 0, train 10, few_shot 20, pseudo_label 30).
        epochs: epochs per round.
        lr: Adam learning rate of the stage's optimiser.
        optimizer: stages with the same key share one optimiser (and its moments).
        rounds: rounds of the stage (the self-training iterations); ``Method.begin_epoch`` sees the round.
        owner: the method that runs the stage's epochs itself (``Method.run_epoch``); None: the
            trainer's supervised epoch.
    """

    name: str
    rank: int
    epochs: int
    lr: float
    optimizer: str
    rounds: int = 1
    owner: str | None = None


def train_stage(config: AdaptConfig) -> Stage:
    """The "train" stage every fit has: ``config.epochs`` supervised epochs at ``config.lr``."""
    return Stage("train", 10, config.epochs, config.lr, "train")


@dataclass(frozen=True)
class Extra:
    """Labelled events a method puts beside every labelled batch of a supervised stage."""

    domain: Domain
    loss: str  # the name of its cross-entropy in the history
    weight: float = 1.0


class Method:
    """One adaptation method. Subclasses set the class attributes and override the hooks they need.

    Class attributes:
        name: the name users write (``"dann"``); order: its place in a combination's canonical name.
        standalone: a reference that combines with no other method.
        sees: what it reads besides the labelled simulation: ``"target"`` (unlabelled real inputs),
            ``"target_labelled"`` (labelled real events), ``"randomized_source"``, ``"paired"``
            (the same events through both detectors).
        aligns: its losses need an unlabelled target batch beside every labelled batch.
        transforms_first: it prepares, and its ``source_transform`` applies to the labelled
            simulation, before the other methods prepare (an image translation: their statistics are
            then of the translated simulation).
        summary: one line for the README and ``--help``.
    """

    name: ClassVar[str]
    order: ClassVar[int]
    standalone: ClassVar[bool] = False
    sees: ClassVar[frozenset[str]] = frozenset()
    aligns: ClassVar[bool] = False
    transforms_first: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    def __init__(self, config: AdaptConfig) -> None:
        self.config = config

    def labelled(self, run: _Run) -> Domain | None:
        """A labelled domain that replaces the simulation as the training set (None: keep it)."""
        return None

    def source_transform(self, inputs: torch.Tensor) -> torch.Tensor:
        """The labelled simulation's inputs as this method trains on them (after :meth:`prepare`)."""
        return inputs

    def stages(self) -> tuple[Stage, ...]:
        """Stages this method adds to the "train" stage every fit has."""
        return ()

    def prepare(self, run: _Run) -> None:
        """Once per fit, before training (and before a resume restores state): statistics, draws."""

    def heads(self, run: _Run) -> dict[str, nn.Module]:
        """Helper modules trained in every supervised stage beside the model (e.g. a discriminator)."""
        return {}

    def stage_modules(self, run: _Run, stage: Stage) -> dict[str, nn.Module]:
        """Helper modules of a stage this method owns (trained only there)."""
        return {}

    def begin_epoch(self, run: _Run, stage: Stage, epoch: int, round_: int) -> None:
        """Before every epoch (``epoch`` counts within the stage, from 1; ``round_`` from 1)."""

    def extra(self, run: _Run, stage: Stage) -> Extra | None:
        """Labelled events beside every labelled batch of ``stage``."""
        return None

    def augment_labelled(self, run: _Run, inputs: torch.Tensor) -> torch.Tensor:
        """The labelled batch as the supervised step sees it."""
        return inputs

    def losses(self, run: _Run, step: Step) -> dict[str, tuple[float, torch.Tensor]]:
        """``{name: (weight, loss)}`` added to the cross-entropy of a supervised step."""
        return {}

    def run_epoch(self, run: _Run, stage: Stage, bar) -> dict:
        """One epoch of a stage this method owns; returns its history record ("steps", "loss", ...)."""
        raise NotImplementedError(f"{self.name} owns no stage")

    def steps(self, run: _Run) -> int:
        """Steps of one epoch of a stage this method owns (the progress bar's length)."""
        raise NotImplementedError(f"{self.name} owns no stage")

    def epoch_record(self) -> dict:
        """Numbers for the history of the epoch that just ended (and resets any running sums)."""
        return {}

    def state(self) -> dict | None:
        """What a resumed fit needs besides weights, optimisers and generators (tensors and plain values)."""
        return None

    def load_state(self, state: dict | None) -> None:
        """Restores :meth:`state`."""


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available by ``cls.name``."""
    if not getattr(cls, "name", "") or cls.name in REGISTRY:
        raise ValueError(f"register: method name {getattr(cls, 'name', None)!r} is missing or taken")
    REGISTRY[cls.name] = cls
    return cls
