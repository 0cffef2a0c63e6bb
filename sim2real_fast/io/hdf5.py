"""HDF5 through h5py: CaloGAN and CaloChallenge showers (read and write), CMS HCAL DQM occupancy maps.

=============  =========================================================================================
CaloGAN        ``layer_0`` (N, 3, 96), ``layer_1`` (N, 12, 12), ``layer_2`` (N, 12, 6) MeV;
               ``energy`` (N, 1) incident GeV; ``overflow`` (N, 3) MeV (written as given or zeros, not read)
CaloChallenge  ``showers`` (N, voxels) MeV, ``incident_energies`` (N, 1) **MeV** (GeV in Showers)
HCAL DQM       ``{RecHitTask,DigiTask}_Occupancy_depth_depth{1..7}``, each (LS, 72 iphi, 84 ieta)
=============  =========================================================================================

Our writers add a ``label`` (N,) int64 dataset when the showers have labels (other readers ignore it).
Showers are read in chunks of 10,000 and pass through :func:`sim2real_fast.hits_to_image` as their
non-zero cells, so ``normalize``, ``threshold``, ``calibration``, ``dead`` and ``bad_energy`` mean what
they mean for ROOT files (:func:`sim2real_fast.io.read_showers`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .. import geometry as _geometry
from ..geometry import Geometry
from . import _convert
from ._atomic import atomic_path
from ._errors import CorruptFileError, missing_key
from ._lazy import require
from ._paths import check_file
from .containers import OccupancyMaps, Showers

__all__ = ["read_calochallenge", "read_calogan", "read_hcal_dqm", "write_calochallenge", "write_calogan", "write_hcal_dqm"]

_CHUNK = 10_000
_CALOCHALLENGE_BY_VOXELS = {
    368: "calochallenge-ds1-photons",
    533: "calochallenge-ds1-pions",
    6480: "calochallenge-ds2",
    40500: "calochallenge-ds3",
}
HCAL_TASKS = ("RecHitTask", "DigiTask")


def _open(path):
    h5py = require("h5py")
    file = check_file(path)
    try:
        return file, h5py.File(file, "r")
    except OSError as error:
        raise CorruptFileError(f"{file}: cannot be read as an HDF5 file ({error})") from error


def _dataset(handle, file: str, name: str, shape: tuple, what: str):
    """The dataset ``name``; shape checked against ``shape`` (None = any size there, shown as N; a str = any, shown as it)."""
    if name not in handle:
        raise missing_key("dataset", name, file, list(handle.keys()))
    expected = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
    try:
        data = handle[name]
    except (KeyError, OSError) as error:  # a dangling soft or external link
        raise CorruptFileError(f"{file}: cannot open dataset {name!r}, expected {what} of shape {expected} ({error})") from error
    if not isinstance(data, require("h5py").Dataset):
        raise TypeError(f"{file}: {name!r} is a {type(data).__name__}, expected a dataset of {what} of shape {expected}")
    ok = len(data.shape) == len(shape) and all(s is None or isinstance(s, str) or s == d for s, d in zip(shape, data.shape))
    if not ok or data.dtype.kind not in "biuf":
        raise ValueError(f"{file}: dataset {name!r} must be {what} of shape {expected}, got {data.dtype} {data.shape}")
    return data


def _read(data, start: int, stop: int, file: str) -> np.ndarray:
    try:
        return data[start:stop]
    except OSError as error:
        raise CorruptFileError(f"{file}: cannot read dataset {data.name!r} ({error})") from error


def _incident(raw: np.ndarray, scale: float, where: str, start: int) -> torch.Tensor:
    values = raw.reshape(raw.shape[0]).astype(np.float64)
    _convert.check_finite(values, where, start)
    return torch.from_numpy(values / scale)


def _labels(handle, file: str, n: int) -> torch.Tensor:
    if "label" not in handle:
        return torch.full((n,), -1, dtype=torch.int64)
    raw = _dataset(handle, file, "label", (n,), "integer labels")[:]
    if raw.dtype.kind not in "iu":
        raise ValueError(f"{file}: dataset 'label' must hold integers, got {raw.dtype}")
    return torch.from_numpy(raw.astype(np.int64))


def _showers(file, dense_chunks, geometry, labels, normalize, threshold, calibration, dead, bad_energy, where) -> Showers:
    """(start, images (n, n_cells) MeV, incident GeV) chunks -> Showers, through hits_to_image."""
    _convert.check_options(normalize, bad_energy)
    options = {"normalize": normalize, "threshold": threshold, "calibration": calibration, "dead": dead}
    images, energies, n_bad = [torch.zeros(0, geometry.n_cells)], [torch.zeros(0, dtype=torch.float64)], 0
    for start, dense, incident in dense_chunks:
        offsets, cell, energy = _convert.dense_to_hits(dense)
        offsets, cell, energy, bad = _convert.apply_bad_energy(
            offsets, cell, _convert.energy_array(energy, where), policy=bad_energy, where=where, entry_start=start
        )
        images.append(_convert.images_from_hits(offsets, cell, energy, incident, geometry=geometry, where=where, **options))
        energies.append(incident)
        n_bad += bad
    _convert.warn_bad(n_bad, bad_energy, where)
    return Showers(
        torch.cat(images), labels, torch.cat(energies), geometry, normalize, (file,), **_convert.counts(bad_energy, n_bad)
    )


def read_calogan(
    path: str | os.PathLike,
    *,
    normalize: str | None = None,
    threshold: float = 0.0,
    calibration: torch.Tensor | None = None,
    dead: torch.Tensor | None = None,
    bad_energy: str = "error",
) -> Showers:
    """A CaloGAN HDF5 file -> :class:`Showers` in the ``calogan`` geometry: images (N, 504) float32 (MeV unless
    normalised), energy (N,) GeV from ``energy``, labels from a ``label`` dataset or -1. Options as
    :func:`sim2real_fast.io.read_showers`."""
    geometry = _geometry.get("calogan")
    file, handle = _open(path)
    with handle:
        first = _dataset(handle, file, "layer_0", (None, 3, 96), "layer_0 energies (MeV)")
        n = first.shape[0]
        layers = [first] + [
            _dataset(handle, file, layer.name, (n, layer.rows, layer.cols), f"{layer.name} energies (MeV)")
            for layer in geometry.layers[1:]
        ]
        one_per_event = "energy" in handle and handle["energy"].shape == (n,)  # (N,) as some derived files have
        energy = _dataset(handle, file, "energy", (n,) if one_per_event else (n, 1), "incident energies (GeV)")
        where = f"{file}: datasets layer_0/layer_1/layer_2"
        chunks = (
            (
                start,
                np.concatenate([_read(d, start, start + _CHUNK, file).reshape(-1, d.shape[1] * d.shape[2]) for d in layers], axis=1),
                _incident(_read(energy, start, start + _CHUNK, file), 1.0, f"{file}: dataset 'energy'", start),
            )
            for start in range(0, n, _CHUNK)
        )
        return _showers(file, chunks, geometry, _labels(handle, file, n), normalize, threshold, calibration, dead, bad_energy, where)


def read_calochallenge(
    path: str | os.PathLike,
    *,
    geometry: str | Geometry | None = None,
    normalize: str | None = None,
    threshold: float = 0.0,
    calibration: torch.Tensor | None = None,
    dead: torch.Tensor | None = None,
    bad_energy: str = "error",
) -> Showers:
    """A CaloChallenge HDF5 file -> :class:`Showers`: images (N, voxels) float32, energy (N,) GeV (the file's
    ``incident_energies`` are MeV and are divided by 1000).

    ``geometry=None`` infers it from the voxel count: 368 ds1-photons, 533 ds1-pions, 6480 ds2, 40500 ds3.
    Other options as :func:`sim2real_fast.io.read_showers`.
    """
    file, handle = _open(path)
    with handle:
        showers = _dataset(handle, file, "showers", (None, "voxels"), "voxel energies (MeV)")
        n, voxels = showers.shape
        if geometry is None:
            if voxels not in _CALOCHALLENGE_BY_VOXELS:
                raise ValueError(
                    f"{file}: cannot infer the CaloChallenge geometry from {voxels} voxels (known: "
                    f"{_CALOCHALLENGE_BY_VOXELS}); pass geometry="
                )
            geometry = _CALOCHALLENGE_BY_VOXELS[voxels]
        geometry = _geometry.get(geometry)
        if geometry.n_cells != voxels:
            raise ValueError(f"{file}: dataset 'showers' has {voxels} voxels, geometry {geometry.name!r} has {geometry.n_cells}")
        incident = _dataset(handle, file, "incident_energies", (n, 1), "incident energies (MeV)")
        chunks = (
            (
                start,
                _read(showers, start, start + _CHUNK, file),
                _incident(_read(incident, start, start + _CHUNK, file), _convert.MEV_PER_GEV, f"{file}: dataset 'incident_energies'", start),
            )
            for start in range(0, n, _CHUNK)
        )
        where = f"{file}: dataset 'showers'"
        return _showers(file, chunks, geometry, _labels(handle, file, n), normalize, threshold, calibration, dead, bad_energy, where)


def _writable(function: str, showers, energy, labels, geometry) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Geometry]:
    if isinstance(showers, Showers):
        if energy is not None or labels is not None:
            raise TypeError(f"{function}: energy and labels come from the Showers; do not pass them too")
        if showers.normalize is not None:
            raise ValueError(f"{function}: the images are normalised ({showers.normalize!r}); write raw MeV energies")
        images, energy, labels, geometry = showers.images, showers.energy, showers.labels, showers.geometry
    elif energy is None:
        raise TypeError(f"{function}: images need energy (N,) incident GeV")
    else:
        images = showers
    geometry = _geometry.get(geometry)
    images, energy = _convert.as_numpy(images), _convert.as_numpy(energy)
    if images.ndim != 2 or images.shape[1] != geometry.n_cells or images.dtype.kind != "f":
        raise ValueError(f"{function}: images must be float (N, {geometry.n_cells}) for geometry {geometry.name!r}, got {images.dtype} {images.shape}")
    if energy.shape != (images.shape[0],):
        raise ValueError(f"{function}: energy must be ({images.shape[0]},) incident GeV, got {energy.shape}")
    if labels is not None:
        labels = _convert.as_numpy(labels)
        if labels.shape != (images.shape[0],) or labels.dtype.kind not in "iu":
            raise ValueError(f"{function}: labels must be ({images.shape[0]},) integers, got {labels.dtype} {labels.shape}")
        if (labels == -1).all():
            labels = None
    return images, energy.astype(np.float64), labels, geometry


def _write(path, datasets: dict, compression) -> None:
    h5py = require("h5py")
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as out:
            for name, value in datasets.items():
                if value is not None:
                    out.create_dataset(name, data=value, compression=compression)


def write_calogan(path, showers, energy=None, *, labels=None, overflow=None, compression: str | None = None) -> None:
    """Write CaloGAN HDF5: ``showers`` a raw-MeV :class:`Showers` of the calogan geometry, or images (N, 504)
    MeV with ``energy`` (N,) GeV (and optional ``labels``). ``overflow`` (N, 3) MeV, zeros by default.
    ``compression``: an h5py filter such as "gzip". Atomic (temporary file, renamed at the end)."""
    images, energy, labels, geometry = _writable("write_calogan", showers, energy, labels, "calogan")
    if geometry.name != "calogan":
        raise ValueError(f"write_calogan: expected the calogan geometry, got {geometry.name!r}")
    n = images.shape[0]
    overflow = np.zeros((n, 3), images.dtype) if overflow is None else np.asarray(overflow)
    if overflow.shape != (n, 3):
        raise ValueError(f"write_calogan: overflow must be ({n}, 3) MeV, got {overflow.shape}")
    layers = geometry.split_layers(torch.from_numpy(images))
    datasets = {layer.name: x.numpy() for layer, x in zip(geometry.layers, layers)}
    _write(path, {**datasets, "energy": energy[:, None], "overflow": overflow, "label": labels}, compression)


def write_calochallenge(path, showers, energy=None, *, labels=None, geometry=None, compression: str | None = None) -> None:
    """Write CaloChallenge HDF5: ``showers`` (N, voxels) MeV and ``incident_energies`` (N, 1) **MeV** (energy
    is given in GeV and multiplied by 1000). ``showers``: a raw-MeV :class:`Showers` or images with ``energy``
    (N,) GeV and ``geometry`` (inferred from the voxel count when None). Atomic."""
    if geometry is None and not isinstance(showers, Showers):
        voxels = showers.shape[-1]
        if voxels not in _CALOCHALLENGE_BY_VOXELS:
            raise ValueError(f"write_calochallenge: {voxels} voxels is no CaloChallenge dataset; pass geometry=")
        geometry = _CALOCHALLENGE_BY_VOXELS[voxels]
    images, energy, labels, _ = _writable("write_calochallenge", showers, energy, labels, geometry)
    _write(path, {"showers": images, "incident_energies": energy[:, None] * _convert.MEV_PER_GEV, "label": labels}, compression)


def read_hcal_dqm(path: str | os.PathLike, *, task: str = "RecHitTask") -> OccupancyMaps:
    """CMS HCAL DQM occupancy HDF5 (HCALDQM/ML4DQM layout) -> :class:`OccupancyMaps` in the ``hcal`` geometry.

    Reads ``{task}_Occupancy_depth_depth{1..7}``, each (LS, 72 iphi, 84 ieta), into maps (LS, 7 * 72 * 84)
    float32 (depth by depth; ``maps.layers()`` gives them back). ``task``: "RecHitTask" or "DigiTask".
    The file stores no lumi-section numbers: ``lumi_sections`` are the indices 0..LS-1.
    """
    if task not in HCAL_TASKS:
        raise ValueError(f"read_hcal_dqm: task must be one of {HCAL_TASKS}, got {task!r}")
    geometry = _geometry.get("hcal")
    file, handle = _open(path)
    with handle:
        names = tuple(f"{task}_Occupancy_depth_{layer.name}" for layer in geometry.layers)
        first = _dataset(handle, file, names[0], (None, 72, 84), "occupancies (LS, 72 iphi, 84 ieta)")
        data = [first] + [_dataset(handle, file, name, first.shape, "occupancies (LS, 72 iphi, 84 ieta)") for name in names[1:]]
        maps = np.concatenate([_read(d, 0, d.shape[0], file).reshape(d.shape[0], -1) for d in data], axis=1)
    return OccupancyMaps(torch.from_numpy(maps.astype(np.float32)), torch.arange(maps.shape[0]), geometry, names, (file,))


def write_hcal_dqm(
    path: str | os.PathLike,
    maps: OccupancyMaps | torch.Tensor | np.ndarray,
    *,
    task: str = "RecHitTask",
    labels=None,
    compression: str | None = None,
) -> None:
    """HCAL occupancy maps (LS, 42336) in the ``hcal`` geometry -> the HCALDQM/ML4DQM HDF5 layout.

    Writes ``{task}_Occupancy_depth_depth{1..7}`` (LS, 72 iphi, 84 ieta) float32, as :func:`read_hcal_dqm`
    reads them, plus ``label`` (LS,) int64 when given (e.g. an injected fault's type; not in real files).
    """
    if task not in HCAL_TASKS:
        raise ValueError(f"write_hcal_dqm: task must be one of {HCAL_TASKS}, got {task!r}")
    geometry = _geometry.get("hcal")
    values = maps.maps if isinstance(maps, OccupancyMaps) else maps
    values = _convert.as_numpy(values)
    if values.ndim != 2 or values.shape[1] != geometry.n_cells or values.dtype.kind not in "biuf":
        raise ValueError(f"write_hcal_dqm: maps must be numbers (LS, {geometry.n_cells}) in the hcal geometry, got {values.dtype} {values.shape}")
    n = values.shape[0]
    datasets = {
        f"{task}_Occupancy_depth_{layer.name}": layer_maps.numpy().astype(np.float32)
        for layer, layer_maps in zip(geometry.layers, geometry.split_layers(torch.from_numpy(values)))
    }
    if labels is not None:
        labels = _convert.as_numpy(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise ValueError(f"write_hcal_dqm: labels must be ({n},) integers, got {labels.dtype} {labels.shape}")
        datasets["label"] = labels.astype(np.int64)
    _write(path, datasets, compression)
