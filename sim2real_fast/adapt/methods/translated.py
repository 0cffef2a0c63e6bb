"""The base of the image-translation methods: the classifier trains on simulation translated to look real.

``prepare`` trains the translator ``translator_name`` of :data:`sim2real_fast.translate.REGISTRY`
(default hyper-parameters, on the model's geometry) on the labelled simulation and the
unlabelled real inputs, (N, n_cells) MeV each: at most ``config.translate_events`` showers of each
domain (drawn with ``config.seed``), ``config.translate_epochs`` epochs (None: the translator's
``default_epochs``), seeded with ``config.seed``, with the real data's zero suppression as its output
threshold (:func:`~sim2real_fast.translate.zero_suppression`: per layer, the smallest non-zero real cell energy), on the CPU whatever the model's device (deterministic,
so a resumed fit translates to the same showers). A translator class with a true ``needs_sim_labels``
also gets ``sim_labels=`` the labels of its simulated showers. :meth:`~TranslatedSource.source_transform`
then translates (eval mode, deterministic): the trainer applies it once to the whole labelled
simulation before training, and :class:`~sim2real_fast.adapt.FitResult` to simulated validation events;
real events are read as they are. The global random stream is left as it was, so with the same seed the
classifier trains exactly as ``source_only`` would on the translated showers.

``prepare`` runs on every call of :func:`~sim2real_fast.adapt.fit`, a resumed one too (before the
checkpoint is read): the translator is trained again, to the same weights with the same thread count.
That costs the whole translator training each time: ``cyclegan`` at the defaults (6 epochs over
20,000 + 20,000 showers, 1,878 steps) 6.6 minutes on 2 quiet CPU threads, 12.5 on one busy thread
(benchmarks/speed.py and benchmarks/translation.py, 2026-12-07); ``simgan`` and ``pix2pix`` about half
of that. Translating 20,000 showers takes a few seconds.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import Method

__all__ = ["TranslatedSource"]


def _draw(n: int, limit: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of at most ``limit`` of ``n`` events: all of them in order, or a random subset."""
    return torch.arange(n) if n <= limit else torch.randperm(n, generator=generator)[:limit]


class TranslatedSource(Method):
    """Trains on the labelled simulation translated by the translator ``translator_name`` (one per subclass).

    ``order`` -1 puts a translation first in a combination's name (``"cyclegan+mmd"``); two translations
    do not combine. ``transforms_first``: the other methods of a combination (``rescale_layers``,
    ``mask_cells``, ``simclr``) compute their statistics on the translated simulation.

    Attributes (after :meth:`prepare`):
        translator: the trained :class:`~sim2real_fast.translate.Translator`, in eval mode.
    """

    translator_name: ClassVar[str]
    order = -1
    transforms_first = True
    sees = frozenset({"target"})

    def prepare(self, run) -> None:
        from ... import translate  # translate imports adapt.checkpoint: imported at the top, it would be circular

        others = [m.name for m in run.methods if isinstance(m, TranslatedSource) and m is not self]
        if others:
            raise ValueError(f"method {run.name!r}: {self.name} combines with no other translation ({others[0]})")
        geometry = getattr(run.model, "geometry", None)
        if geometry is None:
            raise ValueError(f"{self.name}: the model has no .geometry to build the translator on")
        cls = translate.REGISTRY[self.translator_name]
        c = self.config
        sim, real, sim_labels = self.training_showers(run, torch.Generator().manual_seed(c.seed))
        labels = {"sim_labels": sim_labels} if getattr(cls, "needs_sim_labels", False) else {}
        with torch.random.fork_rng(devices=[]):
            self.translator = cls(geometry, threshold_mev=translate.zero_suppression(run.target.inputs, geometry))
            self.translator.fit(sim, real, epochs=c.translate_epochs, seed=c.seed, **labels)
        self.reported = False

    def training_showers(self, run, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sim (N, n_cells), real (M, n_cells), sim labels (N,)): at most ``translate_events`` labelled
        simulated and unlabelled real showers, each drawn on its own."""
        limit = self.config.translate_events
        sim_index = _draw(len(run.labelled), limit, generator)
        real_index = _draw(len(run.target), limit, generator)
        return run.labelled.inputs[sim_index], run.target.inputs[real_index], run.labelled.labels[sim_index]

    def source_transform(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.translator.translate(inputs)

    def epoch_record(self) -> dict:
        if self.reported:
            return {}
        self.reported = True
        last = self.translator.history[-1]
        losses = {k: round(float(v), 6) for k, v in last.items() if k not in ("epoch", "lr", "seconds")}
        return {"translator": {"epochs": len(self.translator.history), **losses}}

    def state(self) -> dict:
        return {"reported": self.reported}

    def load_state(self, state: dict | None) -> None:
        self.reported = state["reported"]
