"""Pure-PyTorch ``hits_to_image``: the oracle of the compiled kernel and its fallback."""

from __future__ import annotations

import torch

_OP = "sim2real_fast.hits_to_image"


def check_hit_values(offsets: torch.Tensor, cell: torch.Tensor, n_cells: int) -> None:
    """Raises for the first bad event: non-monotonic offsets (ValueError) or an out-of-range cell (IndexError).

    offsets (N + 1,) int64, cell (H,) int; event e owns hits ``offsets[e]:offsets[e + 1]``. An event
    with bad offsets is reported before any later one; its hits are not looked at.
    """
    n_events, n_hits = offsets.numel() - 1, cell.numel()
    if n_events < 1:
        return
    offsets = offsets.cpu()
    start, stop = offsets[:-1], offsets[1:]
    bad_offsets = ((stop < start) | (start < 0) | (stop > n_hits)).nonzero()
    first_bad = int(bad_offsets[0]) if bad_offsets.numel() else n_events
    lo, hi = int(offsets[0]), int(offsets[first_bad])
    if first_bad > 0 and hi > lo:
        cells = cell[lo:hi].cpu()
        bad_cell = ((cells < 0) | (cells >= n_cells)).nonzero()
        if bad_cell.numel():
            hit = lo + int(bad_cell[0])
            event = int(torch.searchsorted(offsets[: first_bad + 1], hit, right=True)) - 1
            raise IndexError(
                f"{_OP}: event {event}: cell index {int(cell[hit])} of hit {hit} is out of range [0, {n_cells})"
            )
    if first_bad < n_events:
        e = first_bad
        raise ValueError(
            f"{_OP}: event {e}: offsets[{e}] = {int(offsets[e])}, offsets[{e + 1}] = {int(offsets[e + 1])}; "
            f"offsets must be non-decreasing and within [0, {n_hits}] (the number of hits)"
        )


def hits_to_image(
    offsets: torch.Tensor,
    cell: torch.Tensor,
    energy: torch.Tensor,
    *,
    n_cells: int,
    calibration: torch.Tensor | None = None,
    dead: torch.Tensor | None = None,
    threshold: float = 0.0,
    normalize: str | None = None,
    incident_energy: torch.Tensor | None = None,
) -> torch.Tensor:
    """Jagged hits -> dense (N, n_cells) images; see :func:`sim2real_fast.hits_to_image` for the definition.

    Differentiable w.r.t. ``energy`` through autograd (index_add, where, log1p, division).
    """
    check_hit_values(offsets, cell, n_cells)
    n_events = offsets.numel() - 1
    start, stop = int(offsets[0]), int(offsets[-1])
    counts = (offsets[1:] - offsets[:-1]).to(energy.device)
    event = torch.repeat_interleave(torch.arange(n_events, device=energy.device), counts)
    flat = event * n_cells + cell[start:stop].to(energy.device).long()
    image = energy.new_zeros(n_events * n_cells).index_add(0, flat, energy[start:stop]).view(n_events, n_cells)
    if calibration is not None:
        image = image * calibration
    keep = ~(image < threshold)  # NaN stays NaN
    if dead is not None:
        keep = keep & ~dead
    image = torch.where(keep, image, torch.zeros((), dtype=image.dtype, device=image.device))
    if normalize == "log1p":
        image = torch.log1p(image)
    elif normalize == "sum":
        total = image.sum(1, keepdim=True)
        image = image / torch.where(total != 0, total, torch.ones_like(total))
    elif normalize == "incident":
        image = image / incident_energy.unsqueeze(1)
    return image
