"""``pix2pix``: train on simulation translated to real by a Pix2Pix fitted on paired showers.

The translator (:class:`~sim2real_fast.translate.Pix2Pix`) learns from ``run.paired``: the same events
through the sim detector and the real one (at most ``translate_events`` pairs, one draw for both
members). In `sim2real run` a simulated preset makes them with
:func:`~sim2real_fast.simulate.paired_showers`; with the user's files they come from ``--pairs``
(real pairs need e.g. test-beam events simulated one by one; collision data give none). The
classifier then trains on the labelled simulation translated, as every translation method does.
"""

import torch

from .base import register
from .translated import TranslatedSource, _draw


@register
class Pix2PixSource(TranslatedSource):
    name = translator_name = "pix2pix"
    sees = frozenset({"target", "paired"})
    summary = ("trains on the simulation translated to real by a Pix2Pix fitted on paired sim and real showers "
               "(the same events through both detectors)")

    def training_showers(self, run, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sim, real = run.paired
        index = _draw(len(sim), self.config.translate_events, generator)
        labels = sim.labels[index] if sim.labelled else None
        return sim.inputs[index], real.inputs[index], labels
