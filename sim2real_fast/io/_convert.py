"""Flat hit buffers (NumPy) -> torch, the bad-energy policy, and the call to hits_to_image. No loop over events."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ..geometry import Geometry
from ..ops import hits_to_image
from ..ops.hits_to_image import NORMALIZATIONS
from ._errors import BadEnergyError

BAD_ENERGY = ("error", "drop", "clip")
MEV_PER_GEV = 1000.0


def check_options(normalize, bad_energy) -> None:
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if bad_energy not in BAD_ENERGY:
        raise ValueError(f"bad_energy must be one of {BAD_ENERGY}, got {bad_energy!r}")


def as_numpy(value) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a NumPy array, without a copy where possible."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def native(array: np.ndarray) -> np.ndarray:
    """The array in native byte order (torch.from_numpy refuses big-endian), copied only when needed."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        return array.astype(array.dtype.newbyteorder("="))
    return array


def signed(array: np.ndarray) -> np.ndarray:
    """Unsigned integers wider than a byte -> int64 (torch supports few operations on uint16/32/64)."""
    return array.astype(np.int64) if array.dtype.kind == "u" and array.dtype.itemsize > 1 else array


def cell_tensor(cell: np.ndarray, where: str) -> torch.Tensor:
    """Integer cell indices -> int32/int64 tensor (int32 and int64 without a copy)."""
    if cell.dtype.kind not in "iu":
        raise TypeError(f"{where}: expected integer cell indices (int32/int64/unsigned), got {cell.dtype}")
    if cell.dtype not in (np.int32, np.int64):
        cell = cell.astype(np.int32 if cell.dtype.itemsize < 4 else np.int64)
    return torch.from_numpy(native(cell))


def energy_array(energy: np.ndarray, where: str) -> np.ndarray:
    """float32/float64 kept; float16 and integers -> float32."""
    if energy.dtype.kind not in "fiu":
        raise TypeError(f"{where}: expected numeric hit energies (float32/float64), got {energy.dtype}")
    if energy.dtype not in (np.float32, np.float64):
        energy = energy.astype(np.float32)
    return native(energy)


def apply_bad_energy(offsets: np.ndarray, cell: np.ndarray, energy: np.ndarray, *, policy: str, where: str, entry_start: int):
    """Check hit energies for NaN, inf or < 0 and apply ``policy``; returns (offsets, cell, energy, n_bad).

    offsets (N + 1,) may start above 0; only hits in [offsets[0], offsets[-1]) are looked at. The
    arrays come back unchanged when every energy is fine, else rebased to start at 0.
    """
    start, stop = int(offsets[0]), int(offsets[-1])
    hits = energy[start:stop]
    bad = ~np.isfinite(hits) | (hits < 0)
    n_bad = int(np.count_nonzero(bad))
    if n_bad == 0:
        return offsets, cell, energy, 0
    if policy == "error":
        first = int(np.argmax(bad))
        event = int(np.searchsorted(offsets, start + first, side="right")) - 1
        raise BadEnergyError(
            f"{where}: entry {entry_start + event} has hit energy {float(hits[first])} (hit {start + first - int(offsets[event])} "
            f"of the entry; {n_bad} NaN/infinite/negative hits among entries {entry_start}-"
            f"{entry_start + len(offsets) - 2}); pass bad_energy='drop' to drop such hits or 'clip' to set them to 0"
        )
    offsets = offsets - start
    cell = cell[start:stop]
    if policy == "clip":
        return offsets, cell, np.where(bad, hits.dtype.type(0), hits), n_bad
    keep = ~bad
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept_before[offsets], cell[keep], hits[keep], n_bad


def check_finite(values: np.ndarray, where: str, entry_start: int) -> None:
    """NaN (or inf) in a label / incident-energy branch is always an error."""
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            entry = entry_start + int(np.argmax(bad))
            raise BadEnergyError(f"{where}: entry {entry} is {float(values[entry - entry_start])}; expected finite values")


def images_from_hits(
    offsets: np.ndarray,
    cell: np.ndarray,
    energy: np.ndarray,
    incident_gev: torch.Tensor,
    *,
    geometry: Geometry,
    normalize: str | None,
    threshold: float,
    calibration,
    dead,
    where: str,
) -> torch.Tensor:
    """(N + 1,) offsets, (H,) cells, (H,) MeV energies -> (N, n_cells) float32 images via hits_to_image."""
    offsets_t = torch.from_numpy(native(offsets)).long()
    cell_t = cell_tensor(cell, f"{where} (cell index)")
    energy_t = torch.from_numpy(energy)
    incident = None
    if normalize == "incident":
        if bool((~(incident_gev > 0)).any()):
            raise ValueError(f"{where}: normalize='incident' needs incident energies > 0 GeV")
        incident = incident_gev.to(energy_t.dtype) * MEV_PER_GEV  # hits are MeV, incident energies GeV
    try:
        images = hits_to_image(
            offsets_t, cell_t, energy_t, n_cells=geometry.n_cells, calibration=calibration, dead=dead,
            threshold=threshold, normalize=normalize, incident_energy=incident,
        )
    except IndexError as error:
        raise IndexError(f"{where}: {error} (geometry {geometry.name!r}; event numbers count from this step's first entry)") from None
    return images.float()


def dense_to_hits(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, n_cells) dense energies -> (offsets, cell, energy) of the non-zero cells (NaN counts as non-zero)."""
    row, col = np.nonzero(images != 0)
    counts = np.bincount(row, minlength=images.shape[0])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return offsets, col.astype(np.int32), images[row, col]


def warn_bad(n_bad: int, policy: str, where: str) -> None:
    if n_bad:
        verb = "dropped" if policy == "drop" else "set to 0"
        warnings.warn(f"{where}: {n_bad} NaN/infinite/negative hit energies {verb} (bad_energy={policy!r})", stacklevel=3)


def counts(policy: str, n_bad: int) -> dict:
    return {"n_dropped": n_bad if policy == "drop" else 0, "n_clipped": n_bad if policy == "clip" else 0}
