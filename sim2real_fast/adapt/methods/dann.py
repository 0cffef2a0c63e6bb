"""``dann``: a domain discriminator behind gradient reversal (Ganin et al., JMLR 2016)."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ...models import DomainDiscriminator
from ...ops import dann_alpha
from .base import Method, register


@register
class DANN(Method):
    name, order, aligns = "dann", 4, True
    sees = frozenset({"target"})
    summary = "domain discriminator behind the gradient reversal op, DANN schedule"

    def prepare(self, run) -> None:
        self._correct, self._total = 0, 0

    def heads(self, run):
        return {"discriminator": DomainDiscriminator(run.model.n_features, hidden=self.config.discriminator_hidden)}

    def losses(self, run, step):
        c = self.config
        discriminator = run.heads["discriminator"]
        # the reversal weight follows progress through the "train" stage, and stays at its end value after it
        progress = step.progress if step.stage.name == "train" else 1.0
        discriminator.set_alpha(dann_alpha(progress, gamma=c.dann_gamma))
        logits = discriminator(torch.cat([step.f_labelled, step.f_target]))
        domain = torch.cat([torch.zeros(len(step.f_labelled)), torch.ones(len(step.f_target))]).to(logits.device)
        self._correct += int(((logits.detach() > 0) == (domain > 0.5)).sum())
        self._total += len(domain)
        return {"dann": (c.dann_weight, F.binary_cross_entropy_with_logits(logits, domain))}

    def epoch_record(self) -> dict:
        record = {"domain_accuracy": self._correct / self._total} if self._total else {}
        self._correct, self._total = 0, 0
        return record
