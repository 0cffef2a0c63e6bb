"""Self-training: which unlabelled target events get the model's prediction as their label."""

from __future__ import annotations

import torch

__all__ = ["select_pseudo_labels"]


def select_pseudo_labels(
    probs: torch.Tensor, *, threshold: float = 0.9, class_balance: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The confident events of (N, C) class probabilities and their predicted classes.

    An event is kept when its largest probability is >= ``threshold``. With ``class_balance``,
    every class keeps only its most confident events, as many as the rarest kept class has
    (a class nobody is confident about does not count, so it does not empty the set); ties in
    confidence go to the lower index.

    Returns:
        (index, labels): (K,) int64 event indices in increasing order and their (K,) int64 labels.
    """
    if probs.dim() != 2:
        raise ValueError(f"select_pseudo_labels: probs must be (N, C), got {tuple(probs.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"select_pseudo_labels: threshold must be in [0, 1], got {threshold!r}")
    confidence, labels = probs.max(1)
    kept = confidence >= threshold
    if class_balance and bool(kept.any()):
        counts = torch.bincount(labels[kept], minlength=probs.shape[1])
        quota = int(counts[counts > 0].min())
        keep = torch.zeros_like(kept)
        for c in labels[kept].unique().tolist():
            members = torch.nonzero(kept & (labels == c)).squeeze(1)
            order = torch.sort(confidence[members], descending=True, stable=True).indices
            keep[members[order[:quota]]] = True
        kept = keep
    index = torch.nonzero(kept).squeeze(1)
    return index, labels[index]
