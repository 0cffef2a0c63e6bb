"""Shower files for image translation: a domain from a file or folder, and the CycleGAN folder layout.

pytorch-CycleGAN-and-pix2pix reads ``<dataroot>/trainA`` and ``trainB`` (``testA``/``testB`` for
``--phase test``), each a folder of 8-bit RGB png/jpg images. :func:`read_layout` reads the same layout,
but here the folders hold shower files of cell energies in MeV; an image file (png, jpg, ...) is
refused with a message saying so, as 8 bits cannot hold a calorimeter's dynamic range. Pix2Pix's
aligned layout (one ``train/`` folder of side-by-side A|B images) becomes ``trainA``/``trainB`` with
the same events in the same order (``paired=True`` checks it); :func:`write_layout` writes such a pair,
e.g. from :func:`sim2real_fast.simulate.paired_showers`.

File kinds, by extension (one kind per folder; a folder's files are read in sorted name order, files
whose names start with "." and subfolders are skipped):

==================  ==========================================================================
``.root``           event trees (:func:`sim2real_fast.io.read_showers`: ``hit_cell``, ``hit_energy``,
                    optional ``label`` and ``energy`` branches)
``.h5``, ``.hdf5``  CaloGAN (``layer_0/1/2``, :func:`~sim2real_fast.io.read_calogan`) or CaloChallenge
                    (``showers``, :func:`~sim2real_fast.io.read_calochallenge`), told by their datasets
``.npy``            (N, n_cells) or (N, rows, cols) images in MeV (no labels, no incident energies)
==================  ==========================================================================

A domain comes back as a :class:`~sim2real_fast.adapt.Domain`: ``inputs`` (N, n_cells) float32 MeV,
``labels`` (N,) int64 and ``energy`` (N,) float32 incident GeV where every file holds them, else None.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .. import geometry as _geometry
from .. import io
from ..adapt import Domain
from ..geometry import Geometry
from ..io.hdf5 import _open as _open_hdf5
from ..io.root import _open as _open_root, _tree

__all__ = ["read_domain", "read_layout", "write_layout"]

_KINDS = {".root": "root", ".h5": "hdf5", ".hdf5": "hdf5", ".npy": "npy"}
_IMAGES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".webp"}
_WRITERS = {"root": ".root", "npy": ".npy"}


def _kind(file: Path) -> str:
    suffix = file.suffix.lower()
    if suffix in _IMAGES:
        raise ValueError(
            f"{file}: 8-bit image files are not read; the domain folders hold shower files of cell energies in MeV "
            f"({', '.join(sorted(_KINDS))})"
        )
    if suffix not in _KINDS:
        raise ValueError(f"{file}: unknown file kind {suffix or '(no extension)'!r}; expected one of {sorted(_KINDS)}")
    return _KINDS[suffix]


def _files(path: Path) -> tuple[list[Path], str]:
    """The shower files of a file or folder (sorted by name) and their one kind."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not path.is_dir():
        return [path], _kind(path)
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path}: the folder holds no shower files ({', '.join(sorted(_KINDS))})")
    kinds: dict[str, list[str]] = {}
    for file in files:
        kinds.setdefault(_kind(file), []).append(file.name)
    if len(kinds) > 1:
        listed = "; ".join(f"{kind}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''}" for kind, names in kinds.items())
        raise ValueError(f"{path}: mixed file kinds ({listed}); keep one kind per folder")
    return files, next(iter(kinds))


def _wrong_geometry(file: Path, got: int, geometry: Geometry) -> ValueError:
    return ValueError(f"{file}: {got} cells per shower, geometry {geometry.name!r} has {geometry.n_cells}; "
                      f"pass the files' geometry=")


def _read_root(file: Path, geometry: Geometry, tree: str) -> io.Showers:
    with _open_root(str(file)) as handle:
        branches = set(_tree(handle, str(file), tree).keys())
    try:
        return io.read_showers(
            file, geometry=geometry, tree=tree,
            label_branch="label" if "label" in branches else None,
            incident_energy_branch="energy" if "energy" in branches else None,
        )
    except IndexError as error:  # a cell index outside the geometry: the file is of another one
        raise ValueError(f"{error}; the file is not of geometry {geometry.name!r}: pass its geometry=") from None


def _read_hdf5(file: Path, geometry: Geometry) -> io.Showers:
    name, handle = _open_hdf5(file)
    with handle:
        datasets = set(handle.keys())
    if "showers" in datasets:
        return io.read_calochallenge(file, geometry=geometry)
    if "layer_0" in datasets:
        showers = io.read_calogan(file)
        if showers.geometry.n_cells != geometry.n_cells:
            raise _wrong_geometry(file, showers.geometry.n_cells, geometry)
        return showers
    raise ValueError(f"{name}: neither a CaloGAN ('layer_0', 'layer_1', 'layer_2') nor a CaloChallenge ('showers') "
                     f"file; datasets: {sorted(datasets)}")


def _read_npy(file: Path, geometry: Geometry) -> torch.Tensor:
    maps = io.read_npy_maps(file, geometry=geometry).maps
    bad = ~torch.isfinite(maps) | (maps < 0)
    if bool(bad.any()):
        event, cell = (int(i) for i in bad.nonzero()[0])
        raise io.BadEnergyError(f"{file}: event {event} cell {cell} is {float(maps[event, cell])} MeV; "
                                f"expected finite energies >= 0")
    return maps


def _read_file(file: Path, kind: str, geometry: Geometry, tree: str):
    """(images (N, n_cells) float32 MeV, labels (N,) int64 or None, energy (N,) float64 GeV or None)."""
    if kind == "npy":
        return _read_npy(file, geometry), None, None
    showers = _read_root(file, geometry, tree) if kind == "root" else _read_hdf5(file, geometry)
    labels = None if bool((showers.labels < 0).any()) else showers.labels
    energy = None if bool(showers.energy.isnan().any()) else showers.energy
    return showers.images, labels, energy


def _joined(parts: list) -> torch.Tensor | None:
    return None if any(p is None for p in parts) else torch.cat(parts)


def read_domain(
    path: str | os.PathLike,
    *,
    geometry: str | Geometry,
    tree: str = "events",
    name: str | None = None,
) -> Domain:
    """The showers of a file, or of a folder of files of one kind, as a :class:`~sim2real_fast.adapt.Domain`.

    Args:
        path: a ``.root``, ``.h5``/``.hdf5`` or ``.npy`` file, or a folder of such files (one kind, read
            in sorted name order and joined).
        geometry: the cells' geometry; a file of another geometry is a ValueError naming it.
        tree: the event tree of ROOT files.
        name: the domain's name (default: ``path`` as given).

    Returns a Domain: inputs (N, n_cells) float32 MeV; labels (N,) int64 when every file has them (a
    ``label`` branch or dataset, no -1), else None; energy (N,) float32 incident GeV when every file
    has them (npy files have none), else None.
    """
    geometry = _geometry.get(geometry)
    path = Path(path)
    files, kind = _files(path)
    images, labels, energies = [], [], []
    for file in files:
        image, label, energy = _read_file(file, kind, geometry, tree)
        images.append(image)
        labels.append(label)
        energies.append(energy)
    energy = _joined(energies)
    return Domain(torch.cat(images), _joined(labels), None if energy is None else energy.float(),
                  str(path) if name is None else name)


def _phase_folder(root: Path, phase: str, side: str) -> Path:
    if not isinstance(phase, str) or not phase or os.sep in phase or "/" in phase:
        raise ValueError(f"phase: expected a folder prefix such as 'train' or 'test', got {phase!r}")
    return root / f"{phase}{side}"


def _check_paired(a: Domain, b: Domain, folder_a: Path, folder_b: Path) -> None:
    if len(a) != len(b):
        raise ValueError(f"paired: {folder_a} holds {len(a)} events and {folder_b} {len(b)}; "
                         f"paired folders need the same events in the same order")
    fields = [(field, unit) for field, unit in (("labels", ""), ("energy", " GeV"))
              if getattr(a, field) is not None and getattr(b, field) is not None]
    differ = torch.zeros(len(a), dtype=torch.bool)
    for field, _ in fields:
        differ |= getattr(a, field) != getattr(b, field)
    if bool(differ.any()):
        event = int(differ.nonzero()[0])
        values = lambda d: ", ".join(f"{field} {getattr(d, field)[event].item():g}{unit}" for field, unit in fields)  # noqa: E731
        raise ValueError(f"paired: event {event} has {values(a)} in {folder_a} and {values(b)} in {folder_b}; "
                         f"paired folders need the same events in the same order")


def read_layout(
    root: str | os.PathLike,
    *,
    geometry: str | Geometry,
    phase: str = "train",
    paired: bool = False,
    tree: str = "events",
) -> tuple[Domain, Domain]:
    """The domains A and B of the CycleGAN layout: ``<root>/<phase>A`` and ``<root>/<phase>B`` (see :func:`read_domain`).

    ``phase``: "train", "test" (or any prefix the layout uses, as the CycleGAN repo's ``--phase``).
    ``paired=True`` (Pix2Pix): A and B must hold the same number of events and, where both have them,
    the same labels and incident energies event by event; a mismatch is a ValueError naming both folders.
    The domains are named ``<phase>A`` and ``<phase>B``.
    """
    root = Path(root)
    folders = [_phase_folder(root, phase, side) for side in "AB"]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: no such folder (the layout is <root>/{phase}A and <root>/{phase}B)")
    a, b = (read_domain(folder, geometry=geometry, tree=tree, name=folder.name) for folder in folders)
    if paired:
        _check_paired(a, b, *folders)
    return a, b


def _writable(side: str, showers, geometry: Geometry, kind: str):
    """(images, labels or None, energy or None) of one side: images (N, n_cells), or showers with
    ``images``, ``labels`` and ``energy`` (SimulatedShowers, io.Showers)."""
    if isinstance(showers, (torch.Tensor, np.ndarray)):
        images, labels, energy = showers, None, None
        if kind == "root":
            raise TypeError(f"write_layout: {side}: images alone have no labels and incident energies for a ROOT "
                            f"event tree; pass SimulatedShowers or io.Showers, or kind='npy'")
    elif all(hasattr(showers, field) for field in ("images", "labels", "energy")):
        images, labels, energy = showers.images, showers.labels, showers.energy
        if getattr(showers, "normalize", None) is not None:
            raise ValueError(f"write_layout: {side}: the images are normalised ({showers.normalize!r}); write raw MeV energies")
    else:
        raise TypeError(f"write_layout: {side}: expected images (N, {geometry.n_cells}) or SimulatedShowers/io.Showers, "
                        f"got {type(showers).__name__}")
    if images.ndim != 2 or images.shape[1] != geometry.n_cells:
        raise ValueError(f"write_layout: {side}: images must be (N, {geometry.n_cells}) for geometry {geometry.name!r}, "
                         f"got {tuple(images.shape)}")
    return images, labels, energy


def write_layout(
    root: str | os.PathLike,
    a,
    b,
    *,
    geometry: str | Geometry,
    phase: str = "train",
    kind: str = "root",
    name: str = "showers",
) -> tuple[Path, Path]:
    """Write domains A and B as ``<root>/<phase>A/<name>.<kind>`` and ``<root>/<phase>B/...``; returns the two files.

    ``a``, ``b``: images (N, n_cells) MeV, or showers with labels and incident energies
    (:class:`~sim2real_fast.simulate.SimulatedShowers`, :class:`~sim2real_fast.io.Showers`; e.g. the
    members of :func:`~sim2real_fast.simulate.paired_showers`). ``kind``: "root" (event trees, via
    :func:`~sim2real_fast.io.write_showers_root`; needs labels and energies) or "npy" (images only).
    Folders are created; a folder that already holds other files is a ValueError (they would be read
    with the new one). Each file is written to a temporary file and renamed at the end.
    """
    if kind not in _WRITERS:
        raise ValueError(f"kind: expected one of {sorted(_WRITERS)}, got {kind!r}")
    geometry = _geometry.get(geometry)
    sides = [_writable(side, showers, geometry, kind) for side, showers in (("a", a), ("b", b))]
    root = Path(root)
    written = []
    for side, (images, labels, energy) in zip("AB", sides):
        folder = _phase_folder(root, phase, side)
        file = folder / f"{name}{_WRITERS[kind]}"
        others = sorted(p.name for p in folder.iterdir() if p != file and not p.name.startswith(".")) if folder.is_dir() else []
        if others:
            raise ValueError(f"write_layout: {folder} already holds {', '.join(others[:3])}{', ...' if len(others) > 3 else ''}; "
                             f"they would be read with the new file: use an empty folder")
        written.append((folder, file, images, labels, energy))
    for folder, file, images, labels, energy in written:
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "root":
            io.write_showers_root(file, images, labels, energy, geometry=geometry)
        else:
            io.write_npy_maps(file, images)
    return written[0][1], written[1][1]
