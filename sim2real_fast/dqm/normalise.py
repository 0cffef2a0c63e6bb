"""The normalisations of DQM occupancy maps, each an explicit choice (issue 13).

Maps are (LS, n_cells) hit counts per lumi-section (LS): the number of the LS's events with a hit in
the cell. The choices (:data:`NORMALISATIONS`, :func:`normalise`):

- ``"raw"``: the counts as they are;
- ``"events"``: per-event occupancy, counts / the LS's event count (:func:`event_counts`);
- ``"median"``: counts / the map's median over its active (non-zero) cells;
- ``"reference"``: the per-event occupancy over a reference's (:func:`build_reference`), the classic
  DQM ratio (:func:`ratio_to_reference`), 1 where nothing changed;
- ``"zscore"``: the signed per-channel z-score against a reference (:func:`zscores`), 0 where nothing
  changed beyond the reference's spread.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..io import OccupancyMaps

__all__ = [
    "NORMALISATIONS",
    "Reference",
    "as_maps",
    "build_reference",
    "event_counts",
    "normalise",
    "per_event",
    "per_median",
    "ratio_to_reference",
    "zscores",
]

NORMALISATIONS = ("raw", "events", "median", "reference", "zscore")


class Reference(NamedTuple):
    """A run's reference, from good LS (:func:`build_reference`).

    mean: (n_cells,) mean per-event occupancy (counts / events) over the reference LS.
    std: (n_cells,) its standard deviation over the reference LS (0 with one LS).
    floor: the smallest rate the reference can resolve, one hit over all its events (1 / sum of events):
        the rate taken for cells it never saw fire.
    n_maps: the number of reference LS.
    """

    mean: torch.Tensor
    std: torch.Tensor
    floor: float
    n_maps: int

    @property
    def active(self) -> torch.Tensor:
        """(n_cells,) bool: the cells that fired in the reference."""
        return self.mean > 0


def as_maps(maps: OccupancyMaps | torch.Tensor, n_cells: int | None = None) -> torch.Tensor:
    """(LS, n_cells) floating counts from a tensor or :class:`~sim2real_fast.io.OccupancyMaps`; ValueError
    unless 2-D, finite and >= 0 (and ``n_cells`` wide when given)."""
    if isinstance(maps, OccupancyMaps):
        maps = maps.maps
    if not isinstance(maps, torch.Tensor) or maps.dim() != 2 or (n_cells is not None and maps.shape[1] != n_cells):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps: expected a (LS, {n_cells or 'n_cells'}) tensor of counts, got {shape}")
    if not maps.is_floating_point():
        maps = maps.float()
    if not (torch.isfinite(maps).all() and (maps >= 0).all()):
        raise ValueError("maps: expected finite counts >= 0, got NaN, infinite or negative values")
    return maps


def event_counts(maps: OccupancyMaps | torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
    """(LS,) events per LS: ``events`` when given (checked: one per LS, >= the map's largest count), else
    estimated as each map's largest count (HCAL's HF cells fire in every event, so they read the LS's
    event count; run 306138's per-LS maxima are its event counts)."""
    maps = as_maps(maps)
    largest = maps.amax(1) if maps.shape[1] else maps.new_zeros(len(maps))
    if events is None:
        return largest
    events = torch.as_tensor(events, dtype=maps.dtype, device=maps.device)
    if tuple(events.shape) != (len(maps),) or not (events >= largest).all():
        raise ValueError(f"events: expected ({len(maps)},) event counts per LS, each >= its map's largest count")
    return events


def per_event(maps: OccupancyMaps | torch.Tensor, events: torch.Tensor | None = None) -> torch.Tensor:
    """(LS, n_cells) per-event occupancy in [0, 1]: counts / :func:`event_counts` (an LS of 0 events reads 0)."""
    maps = as_maps(maps)
    return maps / event_counts(maps, events).clamp_min(1)[:, None]


def per_median(maps: OccupancyMaps | torch.Tensor) -> torch.Tensor:
    """(LS, n_cells) counts / the map's median over its non-zero cells (an all-zero map stays 0)."""
    maps = as_maps(maps)
    median = torch.where(maps > 0, maps, torch.nan).nanmedian(1).values.nan_to_num(1.0)
    return maps / median[:, None]


def build_reference(maps: OccupancyMaps | torch.Tensor, events: torch.Tensor | None = None) -> Reference:
    """The :class:`Reference` of good LS: the mean and std over them of the per-event occupancy (:func:`per_event`)."""
    maps = as_maps(maps)
    if len(maps) == 0:
        raise ValueError("maps: the reference needs at least one LS, got none")
    rates = per_event(maps, events)
    std = rates.std(0) if len(maps) > 1 else torch.zeros_like(rates[0])
    floor = 1.0 / max(float(event_counts(maps, events).sum()), 1.0)
    return Reference(rates.mean(0), std, floor, len(maps))


def ratio_to_reference(
    maps: OccupancyMaps | torch.Tensor, reference: Reference, events: torch.Tensor | None = None
) -> torch.Tensor:
    """(LS, n_cells) per-event occupancy / the reference's mean; the mean is floored at ``reference.floor``,
    so a cell the reference never saw fire reads its rate / floor when it fires, and 1 when it reads 0
    (nothing changed)."""
    rates = per_event(maps, events)
    if tuple(reference.mean.shape) != (rates.shape[1],):
        raise ValueError(f"reference: expected a mean of ({rates.shape[1]},) cells, got {tuple(reference.mean.shape)}")
    mean = reference.mean.to(rates)
    ratio = rates / mean.clamp_min(reference.floor)
    return torch.where((mean == 0) & (rates == 0), 1.0, ratio)


def zscores(
    maps: OccupancyMaps | torch.Tensor, reference: Reference, events: torch.Tensor | None = None
) -> torch.Tensor:
    """(LS, n_cells) signed z-scores (rate - mean) / sigma of the per-event occupancy against the reference.

    sigma is the larger of the reference LS's std and the binomial std of the LS, sqrt(p (1 - p) / n),
    with p the reference mean clipped to [floor, 1 - floor], so a cell the reference never saw fire, or
    one that fires in every event, still has a std.
    """
    rates = per_event(maps, events)
    if tuple(reference.mean.shape) != (rates.shape[1],):
        raise ValueError(f"reference: expected a mean of ({rates.shape[1]},) cells, got {tuple(reference.mean.shape)}")
    n = event_counts(maps, events).clamp_min(1)[:, None]
    mean, std = reference.mean.to(rates), reference.std.to(rates)
    p = mean.clamp(reference.floor, 1 - reference.floor)
    return (rates - mean) / torch.maximum(std, torch.sqrt(p * (1 - p) / n))


def normalise(
    maps: OccupancyMaps | torch.Tensor,
    how: str,
    *,
    events: torch.Tensor | None = None,
    reference: Reference | None = None,
) -> torch.Tensor:
    """(LS, n_cells) maps normalised as ``how`` (:data:`NORMALISATIONS`); ``"reference"`` and ``"zscore"``
    need ``reference``."""
    if how not in NORMALISATIONS:
        raise ValueError(f"how: expected one of {NORMALISATIONS}, got {how!r}")
    if how == "raw":
        return as_maps(maps)
    if how == "events":
        return per_event(maps, events)
    if how == "median":
        return per_median(maps)
    if reference is None:
        raise ValueError(f"reference: how={how!r} needs a Reference (build_reference of good LS)")
    if how == "zscore":
        return zscores(maps, reference, events)
    return ratio_to_reference(maps, reference, events)
