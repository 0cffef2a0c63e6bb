"""Few-shot adaptation: the handful of labelled target events it may use."""

from __future__ import annotations

import torch

__all__ = ["k_shot_indices"]


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
