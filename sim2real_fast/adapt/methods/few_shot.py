"""``few_shot``: fine-tuning on k labelled real events per class beside the source batches (so it does not forget)."""

from __future__ import annotations

import torch

from .base import Extra, Method, Stage, register


def k_shot_indices(labels: torch.Tensor, k: int, *, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``k`` random events of every class present in (N,) int64 ``labels`` (all of a rarer class).

    Returns (<= k * n_classes,) int64 indices, grouped by class in increasing class order.
    """
    if labels.dim() != 1:
        raise ValueError(f"k_shot_indices: labels must be (N,), got {tuple(labels.shape)}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k_shot_indices: k must be a positive int, got {k!r}")
    picks = []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator)[:k]])
    return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.int64)


@register
class FewShot(Method):
    name, order = "few_shot", 8
    sees = frozenset({"target_labelled"})
    summary = "fine-tuning on k labelled real events per class, with source batches beside them"

    def stages(self):
        c = self.config
        return (Stage("few_shot", 20, c.few_shot_epochs, c.few_shot_lr, "few_shot"),)

    def prepare(self, run) -> None:
        index = k_shot_indices(run.target_labelled.labels, self.config.few_shot_k, generator=run.generator)
        run.shared["k_shot"] = run.target_labelled.subset(index)

    def extra(self, run, stage):
        if stage.name != "few_shot":
            return None
        return Extra(run.shared["k_shot"], "few_shot_ce", self.config.few_shot_weight)
