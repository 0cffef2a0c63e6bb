"""Every hyper-parameter of the adaptation trainer, with its default and what it does."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["AdaptConfig"]

_MMD_ON = ("features", "logits")


@dataclass(frozen=True)
class AdaptConfig:
    """Hyper-parameters of :func:`~sim2real_fast.adapt.fit`.

    The method weights and thresholds ``dann_weight``, ``coral_weight``, ``mmd_weight``,
    ``pseudo_threshold`` and ``mask_occupancy`` were chosen by ``benchmarks/tune.py`` on the ``dev``
    detector only (its own instance and events, its labelled real validation split; results in
    benchmarks/tuning/RESULTS.md): each value of a small grid was trained once and the one whose
    label-free pick (``im``) scored best on dev's validation split was kept. On dev the gap is small
    (source_only 79.3%, target_oracle 80.3%) and the grid's differences are within about twice the
    validation split's standard error (0.4 points), so these are defaults, not optima. The CORAL loss
    is divided by 4d^2 (d = 64 features), hence weights of tens to hundreds. Without class balance
    self-training collapsed onto one class. SimCLR's gain comes from the augmented labelled batches
    (``simclr_augment_labelled``); one pretraining epoch is the default.

    An epoch is one pass over the labelled training domain (source, randomised source or, for
    ``target_oracle``, the labelled target) in batches of ``batch_size``; unlabelled target
    batches of the same size are drawn alongside (a fresh permutation each epoch, repeated as needed).

    Attributes:
        epochs: epochs of the "train" stage.
        batch_size: events per batch (source and target alike).
        lr: Adam learning rate of the "train" and "pseudo_label" stages.
        weight_decay: Adam weight decay (L2) of every stage.
        dann_weight: weight of the domain discriminator's cross-entropy (DANN).
        dann_gamma: gamma of the gradient-reversal schedule 2 / (1 + exp(-gamma p)) - 1, p = progress
            through the "train" stage (later stages use its final value).
        discriminator_hidden: width of the domain discriminator's two hidden layers.
        coral_weight: weight of the Deep CORAL loss between source and target features.
        mmd_weight: weight of the multi-kernel MMD^2 between source and target (summed over ``mmd_on``).
        mmd_on: what MMD compares: "features" (the model's features) and/or "logits".
        pseudo_threshold: smallest softmax confidence of a kept pseudo-label.
        pseudo_iterations: label-then-train rounds of the "pseudo_label" stage.
        pseudo_epochs: epochs per round, each a pass over the source with a batch of pseudo-labelled
            target events beside every source batch.
        pseudo_class_balance: keep per class only the most confident events, as many as the rarest
            kept class has (stops self-training from drifting to the easiest class).
        few_shot_k: labelled target events per class drawn for "few_shot".
        few_shot_epochs: epochs of the "few_shot" stage (passes over the source).
        few_shot_lr: Adam learning rate of the "few_shot" stage.
        few_shot_weight: weight of the k-shot cross-entropy against the source cross-entropy in a step.
        simclr_epochs: epochs of contrastive pretraining (passes over source + target events).
        simclr_temperature: NT-Xent temperature.
        simclr_projection: output size of SimCLR's projection head (its hidden width is n_features).
        simclr_lr: Adam learning rate of the pretraining.
        simclr_augment_labelled: with simclr, the labelled batches of the supervised stages are
            augmented too (the classifier then learns on the invariances the pretraining taught).
        mask_occupancy: ``mask_cells`` masks a cell whose real and sim occupancies (fraction of events
            with a non-zero reading) differ by more than this (absolute) and by ``mask_z`` sigma.
        mask_energy: ... or whose mean energies differ by more than this fraction of the larger one
            and by ``mask_z`` standard errors.
        mask_z: the significance both tests of ``mask_cells`` require.
        translate_epochs: epochs of the translator's training in the translation methods (``cyclegan``,
            ``simgan``, ``pix2pix``, ``style``); None: the translator's ``default_epochs``.
        translate_events: at most this many showers of each domain (``pix2pix``: pairs), drawn with
            ``seed``, train the translator; the whole labelled simulation is translated.
        seed: the seed of everything random inside fit (batch order, augmentations, k-shot draw, the
            translator's showers and training, initialisation of the discriminator and projection heads,
            dropout).
    """

    epochs: int = 4
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 0.0
    dann_weight: float = 3.0
    dann_gamma: float = 10.0
    discriminator_hidden: int = 64
    coral_weight: float = 300.0
    mmd_weight: float = 3.0
    mmd_on: tuple[str, ...] = ("features",)
    pseudo_threshold: float = 0.9
    pseudo_iterations: int = 2
    pseudo_epochs: int = 1
    pseudo_class_balance: bool = True
    few_shot_k: int = 10
    few_shot_epochs: int = 3
    few_shot_lr: float = 5e-4
    few_shot_weight: float = 1.0
    simclr_epochs: int = 1
    simclr_temperature: float = 0.2
    simclr_projection: int = 64
    simclr_lr: float = 2e-3
    simclr_augment_labelled: bool = True
    mask_occupancy: float = 0.02
    mask_energy: float = 0.5
    mask_z: float = 5.0
    translate_epochs: int | None = None
    translate_events: int = 20_000
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.mmd_on, str) or not isinstance(self.mmd_on, (list, tuple)):
            raise TypeError(f"AdaptConfig.mmd_on: expected a tuple of {_MMD_ON}, got {self.mmd_on!r}")
        object.__setattr__(self, "mmd_on", tuple(self.mmd_on))
        if not self.mmd_on or any(m not in _MMD_ON for m in self.mmd_on) or len(set(self.mmd_on)) != len(self.mmd_on):
            raise ValueError(f"AdaptConfig.mmd_on: expected distinct names from {_MMD_ON}, got {self.mmd_on!r}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int":
                low = 0 if field.name in ("seed", "pseudo_iterations", "few_shot_epochs", "simclr_epochs") else 1
                if not isinstance(value, int) or isinstance(value, bool) or value < low:
                    raise ValueError(f"AdaptConfig.{field.name}: expected an int >= {low}, got {value!r}")
            elif field.type == "int | None":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    raise ValueError(f"AdaptConfig.{field.name}: expected None or an int >= 1, got {value!r}")
            elif field.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise TypeError(f"AdaptConfig.{field.name}: expected a number, got {value!r}")
                object.__setattr__(self, field.name, float(value))
                positive = field.name.endswith(("lr", "temperature", "gamma"))
                if not (value > 0 if positive else value >= 0) or value == float("inf"):
                    raise ValueError(f"AdaptConfig.{field.name}: expected a finite number {'>' if positive else '>='} 0, "
                                     f"got {value!r}")
            elif field.type == "bool" and not isinstance(value, bool):
                raise TypeError(f"AdaptConfig.{field.name}: expected a bool, got {value!r}")
        if not 0.0 <= self.pseudo_threshold <= 1.0:
            raise ValueError(f"AdaptConfig.pseudo_threshold: expected a confidence in [0, 1], got {self.pseudo_threshold}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AdaptConfig:
        """The config with ``values`` replacing the defaults (e.g. a YAML mapping); unknown keys are an error."""
        if not isinstance(values, Mapping):
            raise TypeError(f"AdaptConfig.from_dict: expected a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"AdaptConfig: unknown option(s) {unknown}; expected names from {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Every option as plain Python values (``mmd_on`` as a list, so the dict writes as YAML or JSON)."""
        values = dataclasses.asdict(self)
        values["mmd_on"] = list(self.mmd_on)
        return values

    def replace(self, **changes: Any) -> AdaptConfig:
        return dataclasses.replace(self, **changes)

    def digest(self) -> str:
        """A short hash of every option (identifies the run a checkpoint belongs to)."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
