"""Faults injected into HCAL occupancy maps, simulated or real, from the counts alone.

The faults of :mod:`sim2real_fast.simulate.dqm` (the ML4DQM synthetic ones, same names and labels,
:data:`FAULTS`), one per faulty map, defined on an LS's hit counts c out of its n events so that the
same code serves simulated maps and real ones (where only the counts exist):

- ``dead_rbx``: a readout box (RBX: 4 iphi rows x one half of the barrel or of an endcap, all depths)
  reads 0;
- ``dead_region``: a rectangle of 3-10 x 3-10 cells of one depth, around a random active cell, reads 0;
- ``hot_channels``: 1-5 active cells below 0.95 n (barrel / endcap: HF cells already read n) read n;
- ``noisy_region``: a rectangle where a hit-less event gets a hit with probability 1/2:
  c -> c + Binomial(n - c, 1/2), mean c + (n - c) / 2; for c ~ Binomial(n, p) this is exactly the
  simulator's p -> p + (1 - p) / 2;
- ``degraded_gain``: an RBX where each hit survives with probability 1/2: c -> Binomial(c, 1/2),
  exactly the simulator's p -> p / 2.

A fault touches only the cells it can change: active cells (c > 0; a dead fault on an already dead
cell is no fault), for ``noisy_region`` not saturated (c < n). Its RBX or rectangle is placed around
such cells (an RBX with none is never picked), so every faulty map has at least one touched cell.
Which maps are faulty and with what is drawn first, from the seed and the number of maps alone.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import torch

from ..io import OccupancyMaps
from ..simulate.dqm import FAULTS, N_DEPTHS, N_IETA, N_IPHI
from .normalise import as_maps, event_counts

__all__ = ["FAULTS", "FAULT_TYPES", "FaultedMaps", "inject_faults"]

#: The fault names (all of :data:`FAULTS` but "good"), in label order.
FAULT_TYPES = tuple(name for name in FAULTS if name != "good")

N_CELLS = N_DEPTHS * N_IPHI * N_IETA
_HOT_BELOW = 0.95  # of the LS's events: hot channels are picked among the cells below it


class FaultedMaps(NamedTuple):
    """The output of :func:`inject_faults`."""

    maps: torch.Tensor  # (LS, 42336) float counts with the faults, hcal flat order
    labels: torch.Tensor  # (LS,) int64 fault label (FAULTS), 0 = good (untouched)
    channel_labels: torch.Tensor  # (LS, 42336) bool, the cells a fault touched
    events: torch.Tensor  # (LS,) the events per LS used (given, or each map's largest count)


@functools.lru_cache(maxsize=1)
def _rbx_cells() -> torch.Tensor:
    """(72, 42336) bool: the readout boxes, 18 groups of 4 iphi rows x (HE-, HB-, HB+, HE+), all depths."""
    row = torch.arange(N_IPHI)[None, :, None]
    col = torch.arange(N_IETA)[None, None, :]
    row0 = (torch.arange(N_IPHI // 4) * 4).repeat_interleave(4)[:, None, None]
    col0 = torch.tensor([13, 27, 42, 57]).repeat(N_IPHI // 4)[:, None, None]
    width = torch.tensor([14, 15, 15, 14]).repeat(N_IPHI // 4)[:, None, None]
    box = (row >= row0) & (row < row0 + 4) & (col >= col0) & (col < col0 + width)
    return box[:, None].expand(-1, N_DEPTHS, -1, -1).reshape(len(box), N_CELLS)


def _pick(weights: torch.Tensor, name: str, rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(k,) one index per row of ``weights`` (k, m) >= 0, in proportion; ValueError naming the LS of an empty row."""
    empty = weights.sum(1) == 0
    if empty.any():
        raise ValueError(f"maps: LS {rows[empty].tolist()} have no cell a {name} fault can touch (all zero?)")
    return torch.multinomial(weights.float(), 1, generator=g)[:, 0]


def _rbx(eligible: torch.Tensor, name: str, rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(k, 42336) bool: a random RBX holding eligible cells per map, its eligible cells."""
    boxes = _rbx_cells()
    has = (eligible.float() @ boxes.float().T) > 0
    return boxes[_pick(has, name, rows, g)] & eligible


def _rectangle(eligible: torch.Tensor, name: str, rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(k, 42336) bool: a 3-10 x 3-10 rectangle of one depth around a random eligible cell, rows wrapping in iphi."""
    k = len(eligible)
    centre = _pick(eligible, name, rows, g)
    depth, row, col = centre // (N_IPHI * N_IETA), centre // N_IETA % N_IPHI, centre % N_IETA
    height = torch.randint(3, 11, (k,), generator=g)
    width = torch.randint(3, 11, (k,), generator=g)
    col0 = torch.minimum((col - width // 2).clamp_min(0), N_IETA - width)
    row0 = (row - height // 2) % N_IPHI
    view = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    d = torch.arange(N_DEPTHS)[None, :, None, None]
    r = torch.arange(N_IPHI)[None, None, :, None]
    c = torch.arange(N_IETA)[None, None, None, :]
    box = (d == view(depth)) & (((r - view(row0)) % N_IPHI) < view(height))
    box = box & (c >= view(col0)) & (c < view(col0 + width))
    return box.reshape(k, N_CELLS) & eligible


def _hot(eligible: torch.Tensor, name: str, rows: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """(k, 42336) bool: 1-5 random eligible cells per map."""
    _pick(eligible, name, rows, g)  # checks that every map has a candidate
    score = torch.rand(eligible.shape, generator=g) * eligible
    n_hot = torch.randint(1, 6, (len(eligible),), generator=g)
    threshold = score.topk(5, 1).values.gather(1, (n_hot - 1)[:, None])
    return (score >= threshold) & (score > 0)


def inject_faults(
    maps: OccupancyMaps | torch.Tensor,
    *,
    faults: Sequence[str] | None = FAULT_TYPES,
    fault_fraction: float = 0.5,
    seed: int = 0,
    events: torch.Tensor | None = None,
) -> FaultedMaps:
    """HCAL occupancy maps (LS, 42336) with a fault in about ``fault_fraction`` of them (see the module docstring).

    Args:
        maps: good maps, counts per cell in the ``hcal`` geometry (simulated, or real from
            :func:`sim2real_fast.io.read_hcal_dqm`).
        faults: the fault types to inject (names from :data:`FAULTS`), each faulty map picks one
            uniformly; None or () leaves every map good and unchanged.
        seed: the same seed (and maps) gives the same faults.
        events: (LS,) events per LS, the count a hot channel reads and the n of the noisy region;
            None estimates them as each map's largest count (see
            :func:`~sim2real_fast.dqm.normalise.event_counts`).

    Returns CPU tensors (the random draws are the CPU generator's).
    """
    maps = as_maps(maps, N_CELLS).cpu().clone()
    kinds = list(faults or ())
    unknown = [f for f in kinds if f not in FAULT_TYPES]
    if unknown:
        raise ValueError(f"faults: unknown {unknown}; expected names from {list(FAULT_TYPES)}")
    if not 0 <= fault_fraction <= 1:
        raise ValueError(f"fault_fraction: expected a probability in [0, 1], got {fault_fraction}")
    events = event_counts(maps, None if events is None else torch.as_tensor(events).cpu())
    n = len(maps)
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(n, dtype=torch.long)
    touched = torch.zeros(n, N_CELLS, dtype=torch.bool)
    if not kinds:
        return FaultedMaps(maps, labels, touched, events)
    faulty = torch.rand(n, generator=g) < fault_fraction
    pick = torch.randint(len(kinds), (n,), generator=g)
    labels = torch.where(faulty, torch.tensor([FAULTS[k] for k in kinds])[pick], 0)

    active = maps > 0
    for name, place in (("dead_rbx", _rbx), ("dead_region", _rectangle), ("hot_channels", _hot),
                        ("noisy_region", _rectangle), ("degraded_gain", _rbx)):
        rows = (labels == FAULTS[name]).nonzero()[:, 0]
        if len(rows) == 0:
            continue
        counts, n_events = maps[rows], events[rows, None]
        eligible = active[rows]
        if name == "hot_channels":
            eligible = eligible & (counts < _HOT_BELOW * n_events)
        elif name == "noisy_region":
            eligible = eligible & (counts < n_events)
        cells = place(eligible, name, rows, g)
        if name in ("dead_rbx", "dead_region"):
            counts[cells] = 0
        elif name == "hot_channels":
            counts = torch.where(cells, n_events, counts)
        elif name == "noisy_region":
            counts[cells] += torch.binomial(n_events.expand_as(counts)[cells] - counts[cells],
                                            torch.full_like(counts[cells], 0.5), generator=g)
        else:
            counts[cells] = torch.binomial(counts[cells], torch.full_like(counts[cells], 0.5), generator=g)
        maps[rows] = counts
        touched[rows] = cells
    return FaultedMaps(maps, labels, touched, events)
