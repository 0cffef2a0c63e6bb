"""NumPy ``.npy`` occupancy maps (the ML4DQM layout: (LS, 64 ieta, 72 iphi))."""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import geometry as _geometry
from ..geometry import Geometry, Layer
from . import _convert
from ._atomic import atomic_path
from ._errors import CorruptFileError
from ._paths import check_file
from .containers import OccupancyMaps

__all__ = ["read_npy_maps", "write_npy_maps"]


def read_npy_maps(path: str | os.PathLike, *, geometry: str | Geometry | None = None) -> OccupancyMaps:
    """A (LS, rows, cols) or (LS, n_cells) ``.npy`` array -> :class:`OccupancyMaps` (maps (LS, n_cells) float32).

    ``geometry=None`` makes a one-layer (rows x cols) grid named after the file (ML4DQM: 64 ieta x 72 iphi);
    (LS, n_cells) arrays need one. ``lumi_sections`` are the indices 0..LS-1.
    """
    file = check_file(path)
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CorruptFileError(f"{file}: cannot be read as a .npy array ({error})") from error
    if isinstance(array, np.lib.npyio.NpzFile):
        names = array.files
        array.close()
        raise CorruptFileError(f"{file}: is a .npz archive (arrays {names}), expected one .npy array of maps")
    if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
        raise ValueError(f"{file}: expected numeric maps of shape (LS, rows, cols) or (LS, n_cells), got {array.dtype} {array.shape}")
    if geometry is None:
        if array.ndim == 2:
            raise ValueError(f"{file}: (LS, n_cells) = {array.shape} maps need geometry= to say how the cells are laid out")
        stem = os.path.basename(file).removesuffix(".npy")
        geometry = Geometry(stem, (Layer("map", array.shape[1], array.shape[2]),), f"{os.path.basename(file)}: (LS, rows, cols)")
    geometry = _geometry.get(geometry)
    cells = int(np.prod(array.shape[1:]))
    if cells != geometry.n_cells:
        raise ValueError(f"{file}: maps of {array.shape[1:]} = {cells} cells do not fit geometry {geometry.name!r} ({geometry.n_cells} cells)")
    maps = torch.from_numpy(np.ascontiguousarray(array.reshape(array.shape[0], -1), dtype=np.float32))
    return OccupancyMaps(maps, torch.arange(array.shape[0]), geometry, ("map",), (file,))


def write_npy_maps(path: str | os.PathLike, maps: OccupancyMaps | torch.Tensor | np.ndarray) -> None:
    """Write maps as ``.npy``: (LS, rows, cols) for a one-layer geometry, (LS, n_cells) otherwise. Atomic."""
    if isinstance(maps, OccupancyMaps):
        layers = maps.geometry.layers
        array = _convert.as_numpy(maps.maps)
        if len(layers) == 1:
            array = array.reshape(len(maps), layers[0].rows, layers[0].cols)
    else:
        array = _convert.as_numpy(maps)
        if array.ndim not in (2, 3) or array.dtype.kind not in "biuf":
            raise ValueError(f"write_npy_maps: expected numeric (LS, rows, cols) or (LS, n_cells) maps, got {array.dtype} {array.shape}")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            np.save(out, array, allow_pickle=False)
