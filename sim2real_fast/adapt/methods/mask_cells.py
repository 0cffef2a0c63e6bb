"""``mask_cells``: a label-free trivial baseline that zeroes the cells the real detector reads differently.

From the unlabelled real events and the labelled simulation (N_r and N_s events) it compares, cell by
cell, the occupancy o (fraction of events with a non-zero reading) and the mean energy m (MeV, over all
events). A cell is masked when its occupancies differ by more than ``mask_occupancy`` (absolute) and by
more than ``mask_z`` binomial standard deviations, or when its mean energies differ by more than
``mask_energy`` (relative to the larger) and by more than ``mask_z`` standard errors. Dead cells (o = 0 in
real data), hot and noisy cells are what it finds. The mask is the model's ``input_scale`` buffer, so the
cells read 0 in both domains, in training, evaluation and the exported model alike.
"""

from __future__ import annotations

import torch

from .base import Method, register

__all__ = ["MaskCells", "departing_cells"]


def departing_cells(source: torch.Tensor, target: torch.Tensor, *, occupancy: float, energy: float,
                    z: float) -> torch.Tensor:
    """(n_cells,) bool: cells whose occupancy or mean energy departs between (N_s, n_cells) and (N_t, n_cells) MeV."""
    if source.dim() != 2 or target.dim() != 2 or source.shape[1] != target.shape[1]:
        raise ValueError(f"departing_cells: expected (N, n_cells) source and target, got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    if len(source) < 2 or len(target) < 2:
        raise ValueError("departing_cells: needs at least 2 events per domain")
    stats = []
    for x in (source.double(), target.double()):
        n = len(x)
        o = (x > 0).double().mean(0)
        m, v = x.mean(0), x.var(0)
        stats.append((n, o, m, v))
    (ns, os_, ms, vs), (nt, ot, mt, vt) = stats
    pooled = (ns * os_ + nt * ot) / (ns + nt)
    o_sigma = torch.sqrt(pooled * (1 - pooled) * (1 / ns + 1 / nt)).clamp_min(1e-12)
    by_occupancy = ((ot - os_).abs() > occupancy) & ((ot - os_).abs() > z * o_sigma)
    m_sigma = torch.sqrt(vs / ns + vt / nt).clamp_min(1e-12)
    relative = (mt - ms).abs() / torch.maximum(ms.abs(), mt.abs()).clamp_min(1e-12)
    by_energy = (relative > energy) & ((mt - ms).abs() > z * m_sigma)
    return by_occupancy | by_energy


@register
class MaskCells(Method):
    name, order = "mask_cells", 2
    sees = frozenset({"target"})
    summary = "zeroes, in both domains, the cells whose occupancy or mean energy in unlabelled real data departs from sim"

    def prepare(self, run) -> None:
        scale = getattr(run.model, "input_scale", None)
        if not isinstance(scale, torch.Tensor) or scale.shape != run.labelled.inputs.shape[1:]:
            raise ValueError(f"mask_cells: the model needs an input_scale buffer of shape "
                             f"{tuple(run.labelled.inputs.shape[1:])} (CaloCNN has one)")
        c = self.config
        self.mask = departing_cells(run.labelled.inputs, run.target.inputs, occupancy=c.mask_occupancy,
                                    energy=c.mask_energy, z=c.mask_z)
        scale[self.mask] = 0.0

    def epoch_record(self) -> dict:
        return {"masked_cells": int(self.mask.sum())}
