"""Sparse calorimeter hits -> dense images (``torch.ops.sim2real_fast.hits_to_image``): wrapper, autograd."""

from __future__ import annotations

import numbers

import torch

from .. import _extension

#: The ``normalize`` options, in the op's vocabulary (None is the op's "none").
NORMALIZATIONS = (None, "log1p", "incident", "sum")

_OP = "sim2real_fast.hits_to_image"


def _vector(name: str, value, what: str) -> torch.Tensor:
    t = torch.as_tensor(value)
    if t.dim() != 1:
        raise ValueError(f"{_OP}: {name} must be 1-D ({what}), got shape {tuple(t.shape)}")
    return t


def _check_integer(name: str, t: torch.Tensor) -> None:
    if t.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{_OP}: {name} must be int32 or int64, got {t.dtype}")


def _per_cell(name: str, value, n_cells: int, energy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = _vector(name, value, f"one value per cell, n_cells = {n_cells}")
    if t.shape[0] != n_cells:
        raise ValueError(f"{_OP}: {name} must have n_cells = {n_cells} entries, got {t.shape[0]}")
    if t.device != energy.device:
        raise ValueError(f"{_OP}: {name} must be on the device of energy ({energy.device}), got {t.device}")
    return t.to(dtype)


def hits_to_image(
    offsets,
    cell,
    energy,
    *,
    n_cells: int,
    calibration=None,
    dead=None,
    threshold: float = 0.0,
    normalize: str | None = None,
    incident_energy=None,
) -> torch.Tensor:
    """Jagged calorimeter hits -> dense per-event images, (N, n_cells), in one fused pass.

    Args:
        offsets: (N + 1,) int64 (int32 is widened); event ``e`` owns hits ``offsets[e]:offsets[e + 1]``.
            Must be non-decreasing within ``[0, H]``; ``offsets[0]`` need not be 0 (a slice of an
            awkward array's offsets can be passed as is).
        cell: (H,) int32 or int64 flat cell index in ``[0, n_cells)`` (see :mod:`sim2real_fast.geometry`).
        energy: (H,) float32 or float64 hit energy (float16/bfloat16 are computed in float32).
        n_cells: number of cells of the geometry (``geometry.n_cells``).
        calibration: optional (n_cells,) factors, multiplied into each cell's summed energy.
        dead: optional (n_cells,) bool mask; dead cells read 0.
        threshold: zero suppression: a cell whose calibrated energy is below ``threshold`` reads 0
            (with the default 0.0, negative noise sums are suppressed; NaN is kept).
        normalize: ``None`` (energies), ``"log1p"`` (``log(1 + E)``), ``"sum"`` (each image divided by
            its total after suppression; an empty image stays 0) or ``"incident"`` (divided by
            ``incident_energy``).
        incident_energy: (N,) energies in the unit of ``energy``; needed by ``normalize="incident"``.

    Duplicate cells in an event add up. The order is: sum hits per cell, times calibration, dead
    cells and cells below threshold to 0, normalise. Differentiable w.r.t. ``energy``. An
    out-of-range cell index (IndexError) or bad offsets (ValueError) names the first bad event;
    nothing is written out of bounds. Arrays that are not tensors (NumPy) are converted without a
    copy where possible. Returns ``energy``'s dtype on ``energy``'s device.
    """
    offsets = _vector("offsets", offsets, "N + 1 event offsets")
    cell = _vector("cell", cell, "one flat cell index per hit")
    energy = _vector("energy", energy, "one energy per hit")
    _check_integer("offsets", offsets)
    _check_integer("cell", cell)
    if offsets.shape[0] < 1:
        raise ValueError(f"{_OP}: offsets must have N + 1 >= 1 entries, got an empty tensor")
    if not energy.dtype.is_floating_point:
        raise TypeError(f"{_OP}: energy must be a floating-point tensor (float32 or float64), got {energy.dtype}")
    if cell.shape[0] != energy.shape[0]:
        raise ValueError(f"{_OP}: cell and energy must have one entry per hit, got {cell.shape[0]} and {energy.shape[0]}")
    if not isinstance(n_cells, numbers.Integral) or isinstance(n_cells, bool) or n_cells < 0:
        raise ValueError(f"{_OP}: n_cells must be a non-negative int, got {n_cells!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"{_OP}: normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if not isinstance(threshold, numbers.Real):
        raise TypeError(f"{_OP}: threshold must be a float, got {type(threshold).__name__}")
    for name, t in (("offsets", offsets), ("cell", cell)):
        if t.device != energy.device:
            raise ValueError(f"{_OP}: {name} must be on the device of energy ({energy.device}), got {t.device}")
    if energy.dtype in (torch.float16, torch.bfloat16):
        energy = energy.float()
    offsets = offsets.long()
    n_events = offsets.shape[0] - 1
    if calibration is not None:
        calibration = _per_cell("calibration", calibration, n_cells, energy, energy.dtype)
        if calibration.requires_grad:
            raise ValueError(f"{_OP}: not differentiable w.r.t. calibration; pass calibration.detach()")
    if dead is not None:
        dead = _per_cell("dead", dead, n_cells, energy, torch.bool)
    if (normalize == "incident") != (incident_energy is not None):
        raise ValueError(f"{_OP}: incident_energy must be given exactly when normalize='incident'")
    if incident_energy is not None:
        incident_energy = torch.as_tensor(incident_energy)
        if incident_energy.dim() == 2 and incident_energy.shape[1] == 1:  # CaloChallenge's (N, 1)
            incident_energy = incident_energy[:, 0]
        if incident_energy.shape != (n_events,):
            raise ValueError(f"{_OP}: incident_energy must be (N,) = ({n_events},), got {tuple(incident_energy.shape)}")
        if incident_energy.device != energy.device:
            raise ValueError(f"{_OP}: incident_energy must be on {energy.device}, got {incident_energy.device}")
        if incident_energy.requires_grad:
            raise ValueError(f"{_OP}: not differentiable w.r.t. incident_energy; pass incident_energy.detach()")
        incident_energy = incident_energy.to(energy.dtype)
    if not _extension.HAS_EXTENSION:
        from ..reference import hits_to_image as reference_hits_to_image

        return reference_hits_to_image(
            offsets, cell, energy, n_cells=n_cells, calibration=calibration, dead=dead,
            threshold=float(threshold), normalize=normalize, incident_energy=incident_energy,
        )
    return torch.ops.sim2real_fast.hits_to_image(
        offsets, cell, energy, n_cells, calibration, dead, float(threshold), normalize or "none", incident_energy
    )


if _extension.HAS_EXTENSION:

    @torch.library.register_fake("sim2real_fast::hits_to_image")
    def _hits_to_image_fake(offsets, cell, energy, n_cells, calibration, dead, threshold, normalize, incident_energy):
        return energy.new_empty((offsets.shape[0] - 1, n_cells))

    @torch.library.register_fake("sim2real_fast::_hits_to_image_backward")
    def _hits_to_image_backward_fake(grad, offsets, cell, energy, *rest):
        return torch.empty_like(energy, memory_format=torch.contiguous_format)

    def _setup_context(ctx, inputs, output):
        offsets, cell, energy, n_cells, calibration, dead, threshold, normalize, incident_energy = inputs
        ctx.save_for_backward(offsets, cell, energy, calibration, dead, incident_energy)
        ctx.options = (n_cells, threshold, normalize)

    def _backward(ctx, grad):
        offsets, cell, energy, calibration, dead, incident_energy = ctx.saved_tensors
        n_cells, threshold, normalize = ctx.options
        grad_energy = None
        if ctx.needs_input_grad[2]:
            grad_energy = torch.ops.sim2real_fast._hits_to_image_backward(
                grad, offsets, cell, energy, n_cells, calibration, dead, threshold, normalize, incident_energy
            )
        return None, None, grad_energy, None, None, None, None, None, None

    torch.library.register_autograd("sim2real_fast::hits_to_image", _backward, setup_context=_setup_context)
