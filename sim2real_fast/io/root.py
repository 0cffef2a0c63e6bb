"""ROOT files through uproot/awkward: shower event trees, TH2 histograms, occupancy-map trees, result trees.

Event-tree schema (one entry per shower; the branch names are keyword options of every function):

=================  ================  ===============================================
branch             type              meaning
=================  ================  ===============================================
``hit_cell``       ``var * int``     flat cell index of each hit (see :mod:`sim2real_fast.geometry`)
``hit_energy``     ``var * float``   hit energy, MeV
``label``          ``int``           class label
``energy``         ``float``         incident energy, GeV
=================  ================  ===============================================

The hits of a whole step go to :func:`sim2real_fast.hits_to_image` as the awkward layout's offsets and
content buffers (``torch.from_numpy``, no loop over events, no copy for int32/int64 cells and
float32/float64 energies).
"""

from __future__ import annotations

import fnmatch
import os
import time
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from .. import geometry as _geometry
from ..geometry import Geometry, Layer
from . import _convert
from ._atomic import atomic_path
from ._errors import CorruptFileError, missing_key
from ._lazy import require
from ._paths import Paths, check_file, expand
from .containers import Histograms, Jagged, OccupancyMaps, Showers

__all__ = [
    "iterate_showers",
    "read_arrays",
    "read_maps",
    "read_showers",
    "read_th2",
    "write_maps_root",
    "write_results_root",
    "write_showers_root",
    "write_th2",
]

_TREE_CLASSES = ("TTree", "TNtuple", "TNtupleD", "ROOT::RNTuple")  # uproot reads RNTuples alike
_BASKET_ENTRIES = 10_000  # entries per basket written


# ---- files, trees, branches -------------------------------------------------------------------
def _open(file: str):
    uproot = require("uproot")
    check_file(file)
    _check_complete(file)
    try:
        return uproot.open(file)
    except Exception as error:  # uproot raises many types for a damaged file
        raise CorruptFileError(f"{file}: cannot be read as a ROOT file ({type(error).__name__}: {error})") from error


def _check_complete(file: str) -> None:
    """CorruptFileError when the file is shorter than its header's fEND (an interrupted copy or write: what is
    left may still open and read, silently incomplete). Files without a ROOT header are left to uproot."""
    with open(file, "rb") as stream:
        header = stream.read(20)  # "root", fVersion, fBEGIN, fEND (int32; int64 from version 1000000 on)
    if len(header) < 20 or header[:4] != b"root":
        return
    version = int.from_bytes(header[4:8], "big")
    end = int.from_bytes(header[12:20] if version >= 1_000_000 else header[12:16], "big")
    size = os.path.getsize(file)
    if size < end:
        raise CorruptFileError(f"{file}: truncated ROOT file: {size} bytes, its header says {end}")


def _classnames(handle, file: str) -> dict[str, str]:
    """Object path (no cycle) -> class name, every directory level."""
    try:
        names = handle.classnames()
    except Exception as error:
        raise CorruptFileError(f"{file}: cannot list the objects ({type(error).__name__}: {error})") from error
    return {key.rsplit(";", 1)[0]: cls for key, cls in names.items()}


def list_objects(path: str | os.PathLike) -> dict[str, str]:
    """The objects of a ROOT file, every directory level: ``{path (no cycle): class name}`` (``"TTree"``, ``"TH2F"``...)."""
    file = os.fspath(path)
    with _open(file) as handle:
        return _classnames(handle, file)


def _tree(handle, file: str, name: str):
    classes = _classnames(handle, file)
    if classes.get(name) not in _TREE_CLASSES:
        trees = [k for k, c in classes.items() if c in _TREE_CLASSES]
        if name in classes:
            raise TypeError(f"{file}: {name!r} is a {classes[name]}, not a TTree (trees: {trees})")
        raise missing_key("tree", name, file, trees)
    try:
        return handle[name]
    except Exception as error:
        raise CorruptFileError(f"{file}: cannot read tree {name!r} ({type(error).__name__}: {error})") from error


def _check_branches(tree, file: str, tree_name: str, branches: Sequence[str]) -> None:
    available = tree.keys()
    for branch in branches:
        if branch not in available:
            raise missing_key("branch", branch, f"{file}: tree {tree_name!r}", available)


def _steps(tree, file: str, tree_name: str, branches, *, step_size, entry_start=None, entry_stop=None):
    """Yields (arrays, first entry, seconds spent in uproot) per step; read errors name the file.

    Branch names are checked before, so what uproot raises here comes from the data (decompression,
    deserialisation of a damaged or truncated file).
    """
    steps = tree.iterate(
        list(branches), step_size=step_size, entry_start=entry_start, entry_stop=entry_stop,
        library="ak", report=True, how=dict,
    )
    while True:
        start = time.perf_counter()
        try:
            arrays, report = next(steps)
        except StopIteration:
            return
        except Exception as error:
            raise CorruptFileError(f"{file}: tree {tree_name!r}: cannot read the data ({type(error).__name__}: {error})") from error
        yield arrays, report.tree_entry_start, time.perf_counter() - start


# ---- awkward layouts -> flat NumPy buffers -----------------------------------------------------
def _jagged_buffers(array, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A ``var * number`` awkward array -> (offsets (N + 1,), content (H',)) NumPy views of its layout."""
    ak = require("awkward")
    layout = ak.to_layout(array)
    if isinstance(layout, ak.contents.ListArray):
        layout = layout.to_ListOffsetArray64(False)
    if not (isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.NumpyArray)
            and layout.content.data.ndim == 1 and layout.parameter("__array__") is None):  # strings are lists of chars
        raise TypeError(f"{where}: expected a jagged array of numbers (var * number), got type {ak.type(array)}")
    return np.asarray(layout.offsets.data), np.asarray(layout.content.data)


def _flat_values(array, where: str) -> np.ndarray:
    """One number per entry -> (N,) NumPy array."""
    ak = require("awkward")
    layout = ak.to_layout(array)
    if not (isinstance(layout, ak.contents.NumpyArray) and layout.data.ndim == 1):
        raise TypeError(f"{where}: expected one number per entry, got type {ak.type(array)}")
    return np.asarray(layout.data)


def _as_array(array, where: str) -> torch.Tensor | Jagged:
    """A branch's awkward array -> (N, ...) tensor (numbers, fixed-size arrays) or :class:`Jagged` (var * number)."""
    ak = require("awkward")
    layout = ak.to_layout(array)
    if isinstance(layout, (ak.contents.ListOffsetArray, ak.contents.ListArray)) and not isinstance(layout.content, ak.contents.NumpyArray):
        raise TypeError(f"{where}: expected numbers, fixed-size arrays or jagged numbers, got type {ak.type(array)}")
    if isinstance(layout, (ak.contents.ListOffsetArray, ak.contents.ListArray)) and layout.parameter("__array__") is None:
        offsets, content = _jagged_buffers(array, where)
        start, stop = int(offsets[0]), int(offsets[-1])
        return Jagged(torch.from_numpy(_convert.native(offsets - start).astype(np.int64)),
                      torch.from_numpy(_convert.signed(_convert.native(content[start:stop])).copy()))
    try:
        values = ak.to_numpy(array, allow_missing=False)
    except Exception as error:
        raise TypeError(f"{where}: expected numbers, fixed-size arrays or jagged numbers, got type {ak.type(array)}") from error
    if values.dtype.kind not in "biuf":
        raise TypeError(f"{where}: expected numeric values, got type {ak.type(array)}")
    return torch.from_numpy(np.ascontiguousarray(_convert.signed(_convert.native(values))))


# ---- showers ----------------------------------------------------------------------------------
def _showers_from_step(arrays, entry_start: int, read_seconds: float, *, file, tree, names, geometry, options) -> Showers:
    cell_branch, energy_branch, label_branch, incident_branch = names
    start = time.perf_counter()
    where = f"{file}: tree {tree!r} branch"
    cell_offsets, cell = _jagged_buffers(arrays[cell_branch], f"{where} {cell_branch!r}")
    energy_offsets, energy = _jagged_buffers(arrays[energy_branch], f"{where} {energy_branch!r}")
    if cell.dtype.kind not in "iu":
        raise TypeError(f"{where} {cell_branch!r}: expected integer cell indices (var * int32/int64), got var * {cell.dtype}")
    energy = _convert.energy_array(energy, f"{where} {energy_branch!r}")
    if not np.array_equal(cell_offsets, energy_offsets):
        cell_counts, energy_counts = np.diff(cell_offsets), np.diff(energy_offsets)
        if not np.array_equal(cell_counts, energy_counts):
            entry = entry_start + int(np.argmax(cell_counts != energy_counts))
            raise ValueError(
                f"{file}: tree {tree!r}: entry {entry} has {cell_counts[entry - entry_start]} {cell_branch!r} and "
                f"{energy_counts[entry - entry_start]} {energy_branch!r} values; expected one cell per hit energy"
            )
        cell = cell[cell_offsets[0]:cell_offsets[-1]]
        energy = energy[energy_offsets[0]:energy_offsets[-1]]
        cell_offsets = cell_offsets - cell_offsets[0]
    offsets, cell, energy, n_bad = _convert.apply_bad_energy(
        cell_offsets, cell, energy, policy=options["bad_energy"], where=f"{where} {energy_branch!r}", entry_start=entry_start
    )
    n_events = len(offsets) - 1
    if label_branch is None:
        labels = torch.full((n_events,), -1, dtype=torch.int64)
    else:
        raw = _flat_values(arrays[label_branch], f"{where} {label_branch!r}")
        _convert.check_finite(raw, f"{where} {label_branch!r}", entry_start)
        if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
            raise TypeError(f"{where} {label_branch!r}: expected integer labels, got non-integral {raw.dtype} values")
        labels = torch.from_numpy(_convert.native(raw).astype(np.int64))
    if incident_branch is None:
        incident = torch.full((n_events,), float("nan"), dtype=torch.float64)
    else:
        raw = _flat_values(arrays[incident_branch], f"{where} {incident_branch!r}")
        _convert.check_finite(raw, f"{where} {incident_branch!r}", entry_start)
        incident = torch.from_numpy(_convert.native(raw).astype(np.float64))
    converted = time.perf_counter()
    images = _convert.images_from_hits(
        offsets, cell, energy, incident, geometry=geometry, where=f"{where} {cell_branch!r}", **options["image"]
    )
    done = time.perf_counter()
    return Showers(
        images, labels, incident, geometry, options["image"]["normalize"], (file,), **_convert.counts(options["bad_energy"], n_bad),
        timings={"read": read_seconds, "convert": converted - start, "hits_to_image": done - converted},
    )


def _shower_options(geometry, normalize, threshold, calibration, dead, bad_energy):
    _convert.check_options(normalize, bad_energy)
    return _geometry.get(geometry), {
        "bad_energy": bad_energy,
        "image": {"normalize": normalize, "threshold": threshold, "calibration": calibration, "dead": dead},
    }


_MEMORY_UNITS = {"B": 1, "KB": 1024, "KIB": 1024, "MB": 1024**2, "MIB": 1024**2, "GB": 1024**3, "GIB": 1024**3,
                 "TB": 1024**4, "TIB": 1024**4}
_IMAGE_COPIES = 2  # a step's images: the (N, n_cells) float32 output and one intermediate of the conversion


def _entries_per_step(ttree, branches, step_size, n_cells: int):
    """``step_size`` as entries. A memory size ("100 MB", powers of 1024 as uproot reads them) bounds what a
    step decodes: the branches' uncompressed bytes per entry plus its dense images, which uproot's own
    memory step (the branches alone) leaves out, though each event's image can be far larger than its hits."""
    if not isinstance(step_size, str):
        return step_size
    text = step_size.replace(" ", "").upper()
    unit = next((u for u in sorted(_MEMORY_UNITS, key=len, reverse=True) if text.endswith(u)), None)
    try:
        budget = float(text[: -len(unit)] if unit else text) * _MEMORY_UNITS[unit or "B"]
    except ValueError:
        raise ValueError(f"step_size: expected entries or a memory size such as '100 MB', got {step_size!r}") from None
    hits = sum(ttree[b].uncompressed_bytes for b in branches) / max(ttree.num_entries, 1)
    return max(1, int(budget // (hits + _IMAGE_COPIES * 4 * n_cells)))


def _file_showers(file, *, tree, names, geometry, options, step_size, entry_start=None, entry_stop=None) -> Iterator[Showers]:
    """Showers batches of one file (entries [entry_start, entry_stop)), one per step."""
    handle = _open(file)
    with handle:
        ttree = _tree(handle, file, tree)
        branches = [b for b in names if b is not None]
        _check_branches(ttree, file, tree, branches)
        step_size = _entries_per_step(ttree, branches, step_size, geometry.n_cells)
        for arrays, first, seconds in _steps(ttree, file, tree, branches, step_size=step_size,
                                             entry_start=entry_start, entry_stop=entry_stop):
            yield _showers_from_step(arrays, first, seconds, file=file, tree=tree, names=names, geometry=geometry, options=options)


def _num_entries(file: str, tree: str) -> int:
    with _open(file) as handle:
        return _tree(handle, file, tree).num_entries


def iterate_showers(
    path: Paths,
    *,
    geometry: str | Geometry = "calogan",
    tree: str = "events",
    step_size: int | str = "100 MB",
    normalize: str | None = None,
    threshold: float = 0.0,
    calibration: torch.Tensor | None = None,
    dead: torch.Tensor | None = None,
    bad_energy: str = "error",
    cell_branch: str = "hit_cell",
    energy_branch: str = "hit_energy",
    label_branch: str | None = "label",
    incident_energy_branch: str | None = "energy",
) -> Iterator[Showers]:
    """Streams event trees as :class:`Showers` batches, one per ``uproot`` step (``step_size``: entries or "100 MB").

    Same options as :func:`read_showers`; each batch is converted by one ``hits_to_image`` call, so files
    larger than memory stream. With ``bad_energy="drop"``/``"clip"`` each batch that had bad hits warns
    and counts them in ``n_dropped``/``n_clipped``.
    """
    files = expand(path)
    geometry, options = _shower_options(geometry, normalize, threshold, calibration, dead, bad_energy)
    names = (cell_branch, energy_branch, label_branch, incident_energy_branch)
    for file in files:
        for batch in _file_showers(file, tree=tree, names=names, geometry=geometry, options=options, step_size=step_size):
            _convert.warn_bad(batch.n_dropped + batch.n_clipped, bad_energy, f"{file}: tree {tree!r}")
            yield batch


def read_showers(
    path: Paths,
    *,
    geometry: str | Geometry = "calogan",
    tree: str = "events",
    step_size: int | str = "100 MB",
    normalize: str | None = None,
    threshold: float = 0.0,
    calibration: torch.Tensor | None = None,
    dead: torch.Tensor | None = None,
    bad_energy: str = "error",
    cell_branch: str = "hit_cell",
    energy_branch: str = "hit_energy",
    label_branch: str | None = "label",
    incident_energy_branch: str | None = "energy",
) -> Showers:
    """Read shower event trees into dense images: (N, n_cells) float32, labels (N,), incident energy (N,) GeV.

    Args:
        path: a file, a glob (sorted; no match is a FileNotFoundError naming the pattern) or a list of them.
        geometry: preset name, description file or Geometry; cell indices must be in [0, n_cells).
        tree: the TTree's name (a path inside the file, e.g. ``"dir/events"``).
        step_size: entries per step, or a memory size such as ``"100 MB"`` that bounds a step's decoded
            hits and dense images together (uproot's own memory step counts the hits alone).
        normalize: None (MeV), "log1p" (log(1 + E/MeV)), "sum" (fraction of the image total) or
            "incident" (fraction of the incident energy: hit MeV / (1000 * incident GeV)).
        threshold, calibration, dead: zero suppression (MeV), per-cell factors (n_cells,) and dead-cell mask
            (n_cells,) bool, applied by :func:`sim2real_fast.hits_to_image` before normalisation.
        bad_energy: NaN, infinite or negative hit energies: "error" (BadEnergyError, a ValueError, naming the
            file, tree, branch and entry), "drop" (the hits are removed) or "clip" (set to 0); "drop"/"clip"
            warn once and count them in ``n_dropped``/``n_clipped``. NaN labels/incident energies are errors.
        cell_branch, energy_branch: the jagged hit branches (integer cells; float energies in MeV).
        label_branch, incident_energy_branch: scalar branches; None when the tree has none (labels -1,
            energies NaN).

    An empty tree gives empty Showers ((0, n_cells) images). The result's ``timings`` split the time
    into reading (decompression, deserialisation), conversion and ``hits_to_image``.
    """
    files = expand(path)
    geometry, options = _shower_options(geometry, normalize, threshold, calibration, dead, bad_energy)
    names = (cell_branch, energy_branch, label_branch, incident_energy_branch)
    batches = [
        batch
        for file in files
        for batch in _file_showers(file, tree=tree, names=names, geometry=geometry, options=options, step_size=step_size)
    ]
    if not batches:
        return Showers(
            torch.zeros(0, geometry.n_cells), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64),
            geometry, normalize, tuple(files),
        )
    showers = batches[0] if len(batches) == 1 else Showers.cat(batches)
    showers.sources = tuple(files)
    _convert.warn_bad(showers.n_dropped + showers.n_clipped, bad_energy, f"{len(files)} file(s), tree {tree!r}")
    return showers


# ---- generic branches --------------------------------------------------------------------------
def read_arrays(path: str | os.PathLike, branches: Sequence[str] | None = None, *, tree: str = "events") -> dict:
    """Numeric branches of one tree -> {name: tensor (N, ...)} for fixed-size branches, {name: :class:`Jagged`}
    for jagged ones (``var * number``; offsets from 0, so they go to ``hits_to_image`` as they are).

    ``branches=None`` reads every branch. Reads result trees written by :func:`write_results_root`.
    """
    file = os.fspath(path)
    with _open(file) as handle:
        ttree = _tree(handle, file, tree)
        names = list(ttree.keys()) if branches is None else list(branches)
        _check_branches(ttree, file, tree, names)
        try:
            arrays = ttree.arrays(names, library="ak", how=dict)
        except Exception as error:
            raise CorruptFileError(f"{file}: tree {tree!r}: cannot read the data ({type(error).__name__}: {error})") from error
        return {name: _as_array(arrays[name], f"{file}: tree {tree!r} branch {name!r}") for name in names}


# ---- histograms and occupancy maps -------------------------------------------------------------
def _th2_values(histogram, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    values = np.asarray(histogram.values(flow=False)).T  # uproot: [x, y] -> image [y, x]
    x_edges, y_edges = (torch.from_numpy(np.asarray(axis.edges(flow=False), dtype=np.float64)) for axis in histogram.axes)
    return torch.from_numpy(np.ascontiguousarray(values)).to(dtype), x_edges, y_edges


def _stack(names, parts, where) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shapes = {name: tuple(p[0].shape) for name, p in zip(names, parts)}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"{where}: histograms of different binning cannot be stacked, (ny, nx) = {shapes}; select one binning")
    return tuple(torch.stack([p[i] for p in parts]) for i in range(3))


def read_th2(path: str | os.PathLike, names: str | Sequence[str] | None = None, *, dtype: torch.dtype = torch.float32) -> Histograms:
    """TH2 histograms of one file -> :class:`Histograms`: values (N, ny, nx) without under/overflow, names, edges.

    ``names``: None (every TH2 in the file, subdirectories included, in file order), a name (``"dir/h"``),
    a glob-like pattern (``"gen_*"``) or a list of names. All must share one (ny, nx) binning.
    """
    file = os.fspath(path)
    with _open(file) as handle:
        classes = _classnames(handle, file)
        th2 = [name for name, cls in classes.items() if cls.startswith("TH2")]
        if names is None:
            selected = th2
        elif isinstance(names, str) and set("*?[") & set(names):
            selected = fnmatch.filter(th2, names)
            if not selected:
                raise missing_key("TH2 histogram matching", names, file, th2)
        else:
            selected = [names] if isinstance(names, str) else list(names)
            for name in selected:
                if name in classes and name not in th2:
                    raise TypeError(f"{file}: {name!r} is a {classes[name]}, not a TH2")
                if name not in th2:
                    raise missing_key("TH2 histogram", name, file, th2)
        if not selected:
            raise missing_key("TH2 histogram", "*", file, th2)
        try:
            parts = [_th2_values(handle[name], dtype) for name in selected]
        except Exception as error:
            raise CorruptFileError(f"{file}: cannot read the histograms ({type(error).__name__}: {error})") from error
    values, x_edges, y_edges = _stack(selected, parts, file)
    return Histograms(values, tuple(selected), x_edges, y_edges, file)


def _map_branch(ttree, where: str) -> torch.Tensor:
    """One map per entry of a branch (fixed-size array or TH2) -> (LS, rows, cols) float32."""
    try:
        raw = ttree.array(library="np")
    except Exception as error:
        raise CorruptFileError(f"{where}: cannot read the data ({type(error).__name__}: {error})") from error
    if raw.dtype == object:
        if not all(hasattr(h, "values") and type(h).__name__.startswith("Model_TH2") for h in raw):
            kinds = {type(h).__name__ for h in raw}
            raise TypeError(f"{where}: expected a fixed-size array or a TH2 per entry, got {sorted(kinds)}")
        if len(raw) == 0:
            raise ValueError(f"{where}: the tree has no entries")
        return _stack([f"entry {i}" for i in range(len(raw))], [_th2_values(h, torch.float32) for h in raw], where)[0]
    if raw.dtype.kind in "biuf" and raw.ndim == 3:
        return torch.from_numpy(np.ascontiguousarray(_convert.native(raw))).float()
    if raw.dtype.kind in "biuf" and raw.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(_convert.native(raw))).float().unsqueeze(1)
    raise TypeError(f"{where}: expected a fixed-size array (e.g. float[rows][cols]) or a TH2 per entry, got {raw.dtype} of shape {raw.shape}")


def read_maps(
    path: str | os.PathLike,
    *,
    tree: str,
    branch: str | Sequence[str] | None = None,
    geometry: str | Geometry | None = None,
    lumi_section_branch: str | None = None,
) -> OccupancyMaps:
    """A tree with one map per entry -> :class:`OccupancyMaps`, maps (LS, n_cells) float32.

    ``branch``: a branch holding one map per entry (a fixed-size array such as ``float[rows][cols]``, or a
    TH2), or a list of such branches, one per layer, in order; None takes the ``geometry``'s layer names
    (the layout :func:`write_maps_root` writes). ``geometry``: None for one layer per branch named after it
    (a TH2 gives ny x nx), or a geometry whose layers have the branches' shapes (a single branch may also
    hold all the geometry's cells, e.g. (7 * 72, 84) for ``hcal``). ``lumi_section_branch``: integer
    lumi-section numbers; entry indices 0..LS-1 otherwise.
    """
    file = os.fspath(path)
    if branch is None:
        if geometry is None:
            raise ValueError(f"read_maps({file!r}): give branch= (one or a list), or geometry= to read its layer names")
        branches = [layer.name for layer in _geometry.get(geometry).layers]
    else:
        branches = [branch] if isinstance(branch, str) else list(branch)
    where = f"{file}: tree {tree!r}"
    with _open(file) as handle:
        ttree = _tree(handle, file, tree)
        _check_branches(ttree, file, tree, branches + ([lumi_section_branch] if lumi_section_branch else []))
        layers = [_map_branch(ttree[name], f"{where} branch {name!r}") for name in branches]
        try:
            numbers = ttree[lumi_section_branch].array(library="np") if lumi_section_branch else None
        except Exception as error:
            raise CorruptFileError(f"{where}: cannot read {lumi_section_branch!r} ({type(error).__name__}: {error})") from error
    shapes = [tuple(values.shape[1:]) for values in layers]
    if len({values.shape[0] for values in layers}) > 1:
        raise ValueError(f"{where}: branches {branches} have different entry counts")
    if geometry is None:
        geometry = Geometry(
            f"{tree}/{'+'.join(branches)}",
            tuple(Layer(name.replace("/", "_"), *shape) for name, shape in zip(branches, shapes)),
            f"{os.path.basename(file)}: tree {tree!r} branches {branches}",
        )
    geometry = _geometry.get(geometry)
    if len(branches) > 1 and shapes != list(geometry.layer_shapes):
        raise ValueError(f"{where}: branches {branches} hold maps of {shapes}; geometry {geometry.name!r} has layers {list(geometry.layer_shapes)}")
    values = torch.cat([v.flatten(1) for v in layers], 1)
    if values.shape[1] != geometry.n_cells:
        raise ValueError(f"{where}: maps of {shapes} = {values.shape[1]} cells do not fit geometry {geometry.name!r} ({geometry.n_cells} cells)")
    if numbers is None:
        lumi_sections = torch.arange(values.shape[0])
    elif numbers.dtype.kind not in "iu" or numbers.ndim != 1:
        raise TypeError(f"{file}: tree {tree!r} branch {lumi_section_branch!r}: expected one integer per entry, got {numbers.dtype} {numbers.shape}")
    else:
        lumi_sections = torch.from_numpy(_convert.native(numbers).astype(np.int64))
    return OccupancyMaps(values, lumi_sections, geometry, tuple(branches), (file,))


# ---- writers -----------------------------------------------------------------------------------
def _jagged_fields(cell_branch: str, energy_branch: str):
    """Hit branches sharing a prefix ("hit_cell", "hit_energy") are written as one record: one counter "nhit"."""
    cell_prefix, _, cell_field = cell_branch.partition("_")
    energy_prefix, _, energy_field = energy_branch.partition("_")
    if cell_prefix == energy_prefix and cell_field and energy_field and cell_field != energy_field:
        return cell_prefix, cell_field, energy_field
    return None


def _branch_type(value):
    """uproot mktree type of a chunk's column: an awkward type, or a NumPy dtype (with its inner shape)."""
    if isinstance(value, np.ndarray):
        return np.dtype((value.dtype, value.shape[1:])) if value.ndim > 1 else value.dtype
    return require("awkward").type(value).content


def _write_tree(file_handle, tree: str, n: int, make_chunk) -> None:
    """A TTree of ``n`` entries in baskets of _BASKET_ENTRIES; ``make_chunk(start, stop)`` gives {branch: data}."""
    first = make_chunk(0, min(_BASKET_ENTRIES, n))
    written = file_handle.mktree(tree, {name: _branch_type(value) for name, value in first.items()})
    for start in range(0, n, _BASKET_ENTRIES):
        written.extend(first if start == 0 else make_chunk(start, min(start + _BASKET_ENTRIES, n)))


def write_showers_root(
    path: str | os.PathLike,
    showers: Showers | torch.Tensor | np.ndarray,
    labels=None,
    energy=None,
    *,
    geometry: str | Geometry = "calogan",
    tree: str = "events",
    cell_branch: str = "hit_cell",
    energy_branch: str = "hit_energy",
    label_branch: str = "label",
    incident_energy_branch: str = "energy",
    compression=None,
) -> None:
    """Write showers as an event tree (the schema of :func:`read_showers`); only non-zero cells become hits.

    ``showers``: a :class:`Showers` with raw (MeV) images, or images (N, n_cells) MeV with ``labels`` (N,)
    int and ``energy`` (N,) incident GeV. Hits come out in increasing cell order, cells int32, energies in
    the images' float dtype; ``hit_cell``/``hit_energy`` share one counter branch ``nhit``. The file is
    written to a temporary file and renamed at the end. ``compression``: an uproot compression
    (default uproot's, ZLIB level 1).
    """
    uproot, ak = require("uproot"), require("awkward")
    if isinstance(showers, Showers):
        if labels is not None or energy is not None:
            raise TypeError("write_showers_root: labels and energy come from the Showers; do not pass them too")
        if showers.normalize is not None:
            raise ValueError(f"write_showers_root: the images are normalised ({showers.normalize!r}); write raw MeV energies")
        images, labels, energy, geometry = showers.images, showers.labels, showers.energy, showers.geometry
    elif labels is None or energy is None:
        raise TypeError("write_showers_root: images need labels (N,) and energy (N,) incident GeV")
    else:
        images = showers
    geometry = _geometry.get(geometry)
    images = _convert.as_numpy(images)
    if images.ndim != 2 or images.shape[1] != geometry.n_cells or images.dtype.kind != "f":
        raise ValueError(f"write_showers_root: images must be float (N, {geometry.n_cells}) for geometry {geometry.name!r}, got {images.dtype} {images.shape}")
    n = images.shape[0]
    labels, energy = _convert.as_numpy(labels), _convert.as_numpy(energy)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(f"write_showers_root: labels must be ({n},) integers, got {labels.dtype} {labels.shape}")
    if energy.shape != (n,) or energy.dtype.kind not in "fiu":
        raise ValueError(f"write_showers_root: energy must be ({n},) numbers (GeV), got {energy.dtype} {energy.shape}")
    offsets, cell, values = _convert.dense_to_hits(images)
    counts = np.diff(offsets)
    record = _jagged_fields(cell_branch, energy_branch)

    def chunk(start, stop):
        lo, hi = offsets[start], offsets[stop]
        cells = ak.unflatten(cell[lo:hi], counts[start:stop])
        hit_energies = ak.unflatten(values[lo:hi], counts[start:stop])
        if record:
            prefix, cell_field, energy_field = record
            hits = {prefix: ak.zip({cell_field: cells, energy_field: hit_energies})}
        else:
            hits = {cell_branch: cells, energy_branch: hit_energies}
        return {**hits, label_branch: labels[start:stop].astype(np.int64), incident_energy_branch: energy[start:stop].astype(np.float64)}

    with atomic_path(path) as tmp:
        kwargs = {} if compression is None else {"compression": compression}
        with uproot.recreate(tmp, **kwargs) as out:
            _write_tree(out, tree, n, chunk)


def write_results_root(path: str | os.PathLike, results: Mapping[str, object], *, tree: str = "results", compression=None) -> None:
    """Per-event results (predictions, scores, ...) as a tree to use as a ROOT friend of the event tree.

    ``results``: {branch: (N,) or (N, k) numbers} (tensors or arrays), all with the N entries of the
    event tree, in its entry order. In ROOT: ``events->AddFriend("results", "results.root");
    events->Draw("hit_energy", "results.score > 0.5")``. Read back with ``read_arrays(path, tree="results")``.
    """
    uproot = require("uproot")
    if not results:
        raise ValueError("write_results_root: results must hold at least one array")
    arrays = {name: _convert.as_numpy(value) for name, value in results.items()}
    n = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    for name, a in arrays.items():
        if a.ndim not in (1, 2) or a.dtype.kind not in "biuf":
            raise ValueError(f"write_results_root: {name!r} must be (N,) or (N, k) numbers, got {a.dtype} {a.shape}")
    if len(set(n.values())) != 1:
        raise ValueError(f"write_results_root: all arrays need the same number of entries, got {n}")
    (entries,) = set(n.values())
    with atomic_path(path) as tmp:
        kwargs = {} if compression is None else {"compression": compression}
        with uproot.recreate(tmp, **kwargs) as out:
            _write_tree(out, tree, entries, lambda a, b: {k: np.ascontiguousarray(v[a:b]) for k, v in arrays.items()})


def _maps_and_geometry(function: str, maps, geometry, lumi_sections):
    """(LS, n_cells) maps as NumPy float32, the Geometry, and (LS,) int64 lumi-section numbers."""
    if isinstance(maps, OccupancyMaps):
        geometry = maps.geometry if geometry is None else geometry
        lumi_sections = maps.lumi_sections if lumi_sections is None else lumi_sections
        maps = maps.maps
    if geometry is None:
        raise TypeError(f"{function}: maps given as an array need geometry=")
    geometry = _geometry.get(geometry)
    values = _convert.as_numpy(maps)
    if values.ndim != 2 or values.shape[1] != geometry.n_cells or values.dtype.kind not in "biuf":
        raise ValueError(f"{function}: maps must be numbers (LS, {geometry.n_cells}) for geometry {geometry.name!r}, got {values.dtype} {values.shape}")
    n = values.shape[0]
    numbers = np.arange(n, dtype=np.int64) if lumi_sections is None else _convert.as_numpy(lumi_sections).astype(np.int64)
    if numbers.shape != (n,):
        raise ValueError(f"{function}: lumi_sections must be ({n},), got {numbers.shape}")
    return values.astype(np.float32, copy=False), geometry, numbers


def write_maps_root(
    path: str | os.PathLike,
    maps: OccupancyMaps | torch.Tensor | np.ndarray,
    *,
    geometry: str | Geometry | None = None,
    lumi_sections=None,
    labels=None,
    tree: str = "maps",
    compression=None,
) -> None:
    """Occupancy maps as a tree of fixed-size arrays: one entry per lumi-section, one branch per layer.

    ``maps``: :class:`OccupancyMaps`, or (LS, n_cells) with ``geometry``. Branches: ``<layer name>``
    float32[rows][cols] (``hcal``: ``depth1``..``depth7`` of [72][84]), ``lumi_section`` int64 and, when
    given, ``label`` (LS,) int64 (e.g. an injected fault's type). Read back with
    ``read_maps(path, tree=tree, geometry=geometry, lumi_section_branch="lumi_section")``.
    """
    uproot = require("uproot")
    values, geometry, numbers = _maps_and_geometry("write_maps_root", maps, geometry, lumi_sections)
    n = values.shape[0]
    columns = {layer.name: part.reshape(n, layer.rows, layer.cols)
               for layer, part in zip(geometry.layers, np.split(values, np.cumsum([l.n_cells for l in geometry.layers])[:-1], axis=1))}
    columns["lumi_section"] = numbers
    if labels is not None:
        labels = _convert.as_numpy(labels)
        if labels.shape != (n,) or labels.dtype.kind not in "iu":
            raise ValueError(f"write_maps_root: labels must be ({n},) integers, got {labels.dtype} {labels.shape}")
        columns["label"] = labels.astype(np.int64)
    with atomic_path(path) as tmp:
        kwargs = {} if compression is None else {"compression": compression}
        with uproot.recreate(tmp, **kwargs) as out:
            _write_tree(out, tree, n, lambda a, b: {k: np.ascontiguousarray(v[a:b]) for k, v in columns.items()})


def write_th2(
    path: str | os.PathLike,
    maps: OccupancyMaps | torch.Tensor | np.ndarray,
    *,
    geometry: str | Geometry | None = None,
    lumi_sections=None,
    name: str = "ls{lumi_section}_{layer}",
    compression=None,
) -> None:
    """Occupancy maps as TH2F histograms, one per lumi-section and layer, as DQM files hold them.

    Histogram names come from ``name`` (``{lumi_section}``, ``{layer}``: ``ls12_depth1``); x runs over
    a layer's columns (ieta for ``hcal``), y over its rows (iphi), unit-width bins from 0. Read back one
    layer with ``read_th2(path, "ls*_depth1")`` (values (LS, rows, cols)).
    """
    uproot = require("uproot")
    values, geometry, numbers = _maps_and_geometry("write_th2", maps, geometry, lumi_sections)
    layers = geometry.split_layers(torch.from_numpy(values))
    with atomic_path(path) as tmp:
        kwargs = {} if compression is None else {"compression": compression}
        with uproot.recreate(tmp, **kwargs) as out:
            for i, ls in enumerate(numbers):
                for layer, images in zip(geometry.layers, layers):
                    x_edges = np.arange(layer.cols + 1, dtype=np.float64)
                    y_edges = np.arange(layer.rows + 1, dtype=np.float64)
                    out[name.format(lumi_section=int(ls), layer=layer.name)] = (images[i].numpy().T, x_edges, y_edges)
