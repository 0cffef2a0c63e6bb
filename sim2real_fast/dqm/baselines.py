"""The two fault-detection baselines that need no training, both against a run's :class:`Reference`.

- :func:`ratio_scores`: the reference-ratio threshold, the classic DQM check: a channel's score is
  |ratio - 1| of its per-event occupancy to the reference's (:func:`ratio_to_reference`); thresholding
  it flags channels, thresholding the map score flags maps.
- :func:`zscore_scores`: a per-channel z-score, |rate - mean| / sigma, with sigma the larger of the
  reference LS's std and the binomial std of the LS, sqrt(p (1 - p) / n) with p the reference mean
  clipped to [floor, 1 - floor] (so a cell the reference never saw fire, or one that fires in every
  event, still has a std).

A map's score aggregates its channel scores (:data:`AGGREGATES`): ``"max"``, the largest (a single
hot channel suffices), or ``"top"``, the mean of the ``top`` largest (robust to one fluctuating cell).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..io import OccupancyMaps
from .normalise import Reference, ratio_to_reference, zscores

__all__ = ["AGGREGATES", "Scores", "ratio_scores", "zscore_scores"]

AGGREGATES = ("max", "top")


class Scores(NamedTuple):
    """Anomaly scores, higher is more anomalous."""

    maps: torch.Tensor  # (LS,) per-map score
    channels: torch.Tensor  # (LS, n_cells) per-channel score


def _aggregate(channels: torch.Tensor, aggregate: str, top: int) -> torch.Tensor:
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate: expected one of {AGGREGATES}, got {aggregate!r}")
    if aggregate == "max":
        return channels.amax(1)
    if not 1 <= top <= channels.shape[1]:
        raise ValueError(f"top: expected 1 to {channels.shape[1]} channels, got {top}")
    return channels.topk(top, 1).values.mean(1)


def ratio_scores(
    maps: OccupancyMaps | torch.Tensor,
    reference: Reference,
    *,
    events: torch.Tensor | None = None,
    aggregate: str = "max",
    top: int = 5,
) -> Scores:
    """Reference-ratio scores: per channel |ratio - 1| (0 where the cell and the reference are both silent)."""
    channels = (ratio_to_reference(maps, reference, events) - 1).abs()
    return Scores(_aggregate(channels, aggregate, top), channels)


def zscore_scores(
    maps: OccupancyMaps | torch.Tensor,
    reference: Reference,
    *,
    events: torch.Tensor | None = None,
    aggregate: str = "max",
    top: int = 5,
) -> Scores:
    """Per-channel z-scores against the reference: |rate - mean| / max(std, binomial std of the LS) (:func:`zscores`)."""
    channels = zscores(maps, reference, events).abs()
    return Scores(_aggregate(channels, aggregate, top), channels)
