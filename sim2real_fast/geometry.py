"""Detector geometries: flat cell index <-> (layer, row, col), per-layer images and padded images.

A :class:`Geometry` is an ordered tuple of :class:`Layer` grids. The flat cell index runs over the
layers in order and row-major within a layer: cell = layer_offsets[layer] + row * cols + col
(CaloGAN: layer_0 is cells 0-287, layer_1 288-431, layer_2 432-503).

Presets (:func:`get`, :func:`available`):

- ``calogan``: layer_0 3 x 96 cells of 160 x 5 mm, layer_1 12 x 12 of 40 x 40 mm, layer_2 12 x 6 of
  40 x 80 mm, 90 / 347 / 43 mm deep, medium ``pb_lar`` (Paganini et al., arXiv:1705.02355); the HDF5 keys ``layer_0/1/2``
  are (N, rows, cols), so ``torch.cat([layer_0.flatten(1), ...], 1)`` is the flat order.
- ``calochallenge-ds1-photons`` (368 voxels), ``calochallenge-ds1-pions`` (533), ``calochallenge-ds2``
  (45 x 16 x 9 = 6480), ``calochallenge-ds3`` (45 x 50 x 18 = 40500): parsed from CaloChallenge/homepage
  ``code/binning_dataset_{1_photons,1_pions,2,3}.xml`` by :func:`from_calochallenge_xml` and shipped as
  ``_geometries/<name>.json``. Layers are cylindrical: rows = alpha bins, cols = r bins, so the
  challenge's order "r fastest, then alpha, then layer" is the row-major rule. Layers the XML lists
  with no voxels (``r_edges="0"``) hold no data and are left out; each kept layer keeps its XML id
  in its name (``layer_12``), as CaloChallenge's ``relevantLayers`` do. The XMLs have no depths or
  materials; the shipped files add them so that the showers can be simulated:

  - ds2, ds3 (Geant4 example Par04): 90 periods of 1.4 mm W + 0.3 mm Si read out in 45 layers of two
    periods, ``depth_mm`` 3.4 each, ``medium`` ``w_si`` (0.81 X0 a layer, 36 X0 in all).
  - ds1 (ATLAS barrel at |eta| 0.20-0.25, depths times cosh(0.225) = 1.025): ``layer_0`` presampler,
    11.3 mm of ``lar``; ``layer_1/2/3`` EMB1-3, 4.3 / 16 / 2 X0 of ``pb_lar`` = 68.6 / 255.2 / 31.9 mm;
    ``layer_12/13/14`` TileBar0-2, 1.5 / 4.1 / 1.8 lambda_I of ``fe_scint`` = 298.5 / 815.8 / 358.2 mm
    (ATLAS TDRs). The ~2 X0 of material in front of the presampler and the cryostat between EMB3 and
    the tiles are not described (no dead material).

  Regenerate with::

      ds1 = {"layer_0": (11.3, "lar"), "layer_1": (68.6, "pb_lar"), "layer_2": (255.2, "pb_lar"),
             "layer_3": (31.9, "pb_lar"), "layer_12": (298.5, "fe_scint"), "layer_13": (815.8, "fe_scint"),
             "layer_14": (358.2, "fe_scint")}
      depth, medium = {k: d for k, (d, _) in ds1.items()}, {k: m for k, (_, m) in ds1.items()}
      for name, xml in {"ds1-photons": "1_photons", "ds1-pions": "1_pions", "ds2": "2", "ds3": "3"}.items():
          extra = dict(depth_mm=depth, medium=medium) if name.startswith("ds1") else dict(depth_mm=3.4, medium="w_si")
          geometry = from_calochallenge_xml(f"{xml_dir}/binning_dataset_{xml}.xml", name=f"calochallenge-{name}", **extra)
          geometry.to_json(f"sim2real_fast/_geometries/calochallenge-{name}.json")

- ``hcal``: CMS HCAL DQM occupancy maps as in ML4DQM's 2017 HDF5 file, 7 layers ``depth1``..``depth7``
  of 72 iphi rows x 84 ieta cols: the file's per-depth (LS, 72 iphi, 84 ieta) arrays flatten without
  a transpose. No cell sizes (the grid is in ieta/iphi, not mm).

User geometries come from a dict, JSON or YAML file with the keys of :meth:`Geometry.to_dict`::

    {"name": "mine", "source": "optional text", "medium": "pb_lar",        # medium: optional default
     "layers": [{"name": "front", "rows": 8, "cols": 8, "cell_size": [20, 20], "depth_mm": 100},
                {"name": "back", "rows": 4, "cols": 4, "cell_size": [60, 60], "depth_mm": 400,
                 "medium": "fe_scint"},                                   # a layer's own medium
                {"name": "ring", "rows": 16, "cols": 3, "kind": "cylindrical", "r_edges": [0, 5, 20, 80]}]}

``rows``, ``cols`` and ``name`` are required; ``cell_size`` [row, col] (mm, Cartesian only),
``r_edges`` (cols + 1 increasing mm, cylindrical only), ``depth_mm`` (> 0) and ``medium`` (a
lower-case name) are optional. :func:`sim2real_fast.simulate.showers` needs ``depth_mm`` on every
layer (and ``cell_size`` on Cartesian ones); a layer's medium is its own ``medium``, else the
geometry's, else ``pb_lar``, and must name one of ``sim2real_fast.simulate.medium.MEDIA``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

__all__ = ["Geometry", "GeometryError", "Layer", "available", "from_calochallenge_xml", "get"]

_KINDS = ("cartesian", "cylindrical")


class GeometryError(ValueError):
    """A malformed geometry description or an unknown geometry name."""


def _require(ok: bool, key: str, expected: str, got: Any) -> None:
    if not ok:
        raise GeometryError(f"{key}: expected {expected}, got {got!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Layer:
    """One layer: a rows x cols grid of cells.

    ``cell_size`` is (row_size, col_size) in mm and ``depth_mm`` the thickness, None where unknown.
    ``medium`` names the layer's material (a key of :data:`sim2real_fast.simulate.medium.MEDIA`, e.g.
    ``"pb_lar"``); None: the geometry's ``medium``. ``kind="cylindrical"`` layers (CaloChallenge) have
    rows = alpha bins over [-pi, pi) and cols = r bins with edges ``r_edges`` (cols + 1 values, mm).
    """

    name: str
    rows: int
    cols: int
    cell_size: tuple[float, float] | None = None
    depth_mm: float | None = None
    kind: str = "cartesian"
    r_edges: tuple[float, ...] | None = None
    medium: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name)
        _require(_is_int(self.rows) and self.rows > 0, "rows", "a positive int", self.rows)
        _require(_is_int(self.cols) and self.cols > 0, "cols", "a positive int", self.cols)
        _require(self.kind in _KINDS, "kind", f"one of {_KINDS}", self.kind)
        if self.cell_size is not None:
            size = tuple(self.cell_size) if isinstance(self.cell_size, (list, tuple)) else None
            ok = size is not None and len(size) == 2 and all(_is_number(s) and s > 0 for s in size)
            _require(ok, "cell_size", "[row_size, col_size], two positive numbers in mm", self.cell_size)
            object.__setattr__(self, "cell_size", tuple(float(s) for s in size))
        if self.depth_mm is not None:
            ok = _is_number(self.depth_mm) and self.depth_mm > 0
            _require(ok, "depth_mm", "a positive number (mm)", self.depth_mm)
            object.__setattr__(self, "depth_mm", float(self.depth_mm))
        _check_medium(self.medium)
        if self.kind == "cylindrical":
            edges = self.r_edges
            ok = (
                isinstance(edges, (list, tuple))
                and len(edges) == self.cols + 1
                and all(_is_number(e) for e in edges)
                and edges[0] >= 0
                and all(a < b for a, b in zip(edges, edges[1:]))
            )
            _require(ok, "r_edges", f"{self.cols + 1} increasing numbers >= 0 (cols + 1, mm)", edges)
            _require(self.cell_size is None, "cell_size", "null for a cylindrical layer", self.cell_size)
            object.__setattr__(self, "r_edges", tuple(float(e) for e in edges))
        else:
            _require(self.r_edges is None, "r_edges", "null for a cartesian layer", self.r_edges)

    @property
    def n_cells(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Geometry:
    """An immutable detector layout. Flat index = layer_offsets[layer] + row * cols + col.

    Tensor methods accept any leading batch dims, run on the input's device, and never loop over
    events; the reshuffles (split/join, to/from padded) are differentiable.
    """

    name: str
    layers: tuple[Layer, ...]
    source: str = ""
    medium: str | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name != "", "name", "a non-empty string", self.name)
        _require(isinstance(self.source, str), "source", "a string", self.source)
        _check_medium(self.medium)
        layers = tuple(self.layers) if isinstance(self.layers, (list, tuple)) else ()
        _require(len(layers) > 0, "layers", "a non-empty list of layers", self.layers)
        for i, layer in enumerate(layers):
            _require(isinstance(layer, Layer), f"layers[{i}]", "a Layer", layer)
        names = [layer.name for layer in layers]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        _require(duplicate is None, "layers[].name", "unique layer names", duplicate)
        object.__setattr__(self, "layers", layers)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def layer_shapes(self) -> tuple[tuple[int, int], ...]:
        return tuple((layer.rows, layer.cols) for layer in self.layers)

    @cached_property
    def layer_offsets(self) -> tuple[int, ...]:
        """Start cell of each layer, and n_cells last (length n_layers + 1)."""
        offsets = [0]
        for layer in self.layers:
            offsets.append(offsets[-1] + layer.n_cells)
        return tuple(offsets)

    @property
    def n_cells(self) -> int:
        return self.layer_offsets[-1]

    @property
    def padded_shape(self) -> tuple[int, int, int]:
        """(n_layers, max_rows, max_cols) of :meth:`to_padded`."""
        return (self.n_layers, max(r for r, _ in self.layer_shapes), max(c for _, c in self.layer_shapes))

    @cached_property
    def _tables(self) -> torch.Tensor:
        """(4, n_cells) int64 on the CPU: layer, row, col and flat padded position of every cell."""
        _, max_rows, max_cols = self.padded_shape
        parts = []
        for i, layer in enumerate(self.layers):
            local = torch.arange(layer.n_cells)
            row, col = local // layer.cols, local % layer.cols
            padded_position = (i * max_rows + row) * max_cols + col
            parts.append(torch.stack([torch.full_like(local, i), row, col, padded_position]))
        return torch.cat(parts, 1)

    @cached_property
    def _device_tables(self) -> dict[torch.device, torch.Tensor]:
        return {}

    def __getstate__(self) -> dict:
        """Pickle the description only; the index tables are rebuilt on first use."""
        return {"name": self.name, "layers": self.layers, "source": self.source, "medium": self.medium}

    def layer_media(self) -> tuple[str | None, ...]:
        """Each layer's medium name: its own ``medium``, else the geometry's (None where neither names one)."""
        return tuple(layer.medium or self.medium for layer in self.layers)

    def _table(self, device: torch.device) -> torch.Tensor:
        device = torch.device(device)
        if device not in self._device_tables:
            self._device_tables[device] = self._tables.to(device)
        return self._device_tables[device]

    # ---- indices -----------------------------------------------------------------------------
    def cell_to_position(self, cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer cell indices (any shape) -> (layer, row, col) int64 tensors of the same shape."""
        _check_integer("cell", cell)
        bad = (cell < 0) | (cell >= self.n_cells)
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            raise IndexError(
                f"cell index {int(cell[where])} at position {where} is out of range [0, {self.n_cells}) "
                f"for geometry {self.name!r}"
            )
        layer, row, col, _ = self._table(cell.device)[:, cell.long()]
        return layer, row, col

    def position_to_cell(self, layer: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """Broadcastable integer (layer, row, col) -> int64 flat cell indices."""
        for arg, value in (("layer", layer), ("row", row), ("col", col)):
            _check_integer(arg, value)
        layer, row, col = torch.broadcast_tensors(layer.long(), row.long(), col.long())
        shapes = torch.tensor(self.layer_shapes, device=layer.device)
        offsets = torch.tensor(self.layer_offsets, device=layer.device)
        rows, cols = shapes[layer.clamp(0, self.n_layers - 1)].unbind(-1)
        bad = (layer < 0) | (layer >= self.n_layers) | (row < 0) | (row >= rows) | (col < 0) | (col >= cols)
        if bool(bad.any()):
            where = tuple(int(i) for i in bad.nonzero()[0])
            got = (int(layer[where]), int(row[where]), int(col[where]))
            raise IndexError(
                f"(layer, row, col) = {got} at position {where} is outside geometry {self.name!r} "
                f"(layer shapes {self.layer_shapes})"
            )
        return offsets[layer] + row * cols + col

    # ---- views -------------------------------------------------------------------------------
    def split_layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(..., n_cells) -> one (..., rows, cols) view per layer."""
        self._check_cells("images", images)
        sizes = [layer.n_cells for layer in self.layers]
        return [x.unflatten(-1, shape) for x, shape in zip(images.split(sizes, -1), self.layer_shapes)]

    def join_layers(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        """One (..., rows, cols) tensor per layer -> (..., n_cells)."""
        if len(layers) != self.n_layers:
            raise ValueError(
                f"join_layers: expected {self.n_layers} layers for {self.name!r}, got {len(layers)}"
            )
        for layer, x, shape in zip(self.layers, layers, self.layer_shapes):
            if tuple(x.shape[-2:]) != shape:
                raise ValueError(
                    f"join_layers: layer {layer.name!r} must end in {shape}, got {tuple(x.shape)}"
                )
        return torch.cat([x.flatten(-2) for x in layers], -1)

    def to_padded(self, images: torch.Tensor) -> torch.Tensor:
        """(..., n_cells) -> (..., n_layers, max_rows, max_cols), zeros where no cell is."""
        self._check_cells("images", images)
        position = self._table(images.device)[3]
        flat = images.new_zeros(*images.shape[:-1], math.prod(self.padded_shape))
        return flat.index_copy(-1, position, images).unflatten(-1, self.padded_shape)

    def from_padded(self, padded: torch.Tensor) -> torch.Tensor:
        """(..., n_layers, max_rows, max_cols) -> (..., n_cells); the padding is ignored."""
        if padded.dim() < 3 or tuple(padded.shape[-3:]) != self.padded_shape:
            raise ValueError(
                f"padded: expected (..., {', '.join(map(str, self.padded_shape))}) for geometry "
                f"{self.name!r}, got {tuple(padded.shape)}"
            )
        return padded.flatten(-3).index_select(-1, self._table(padded.device)[3])

    def padding_mask(self, *, device: torch.device | str | None = None) -> torch.Tensor:
        """(n_layers, max_rows, max_cols) bool, True where a real cell is."""
        mask = torch.zeros(math.prod(self.padded_shape), dtype=torch.bool, device=device)
        mask[self._table(mask.device)[3]] = True
        return mask.view(self.padded_shape)

    def cell_centres(self, *, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """(n_cells, 2) centre of every cell in its layer's coordinates.

        Cartesian layers: (row, col) position in mm from the layer's centre (the beam axis), so
        layers of different granularity share one frame. Cylindrical layers: (alpha, r) at the bin
        centres, alpha in rad with bins spanning [-pi, pi) and r in mm, as CaloChallenge's XMLHandler.
        """
        centres = []
        for layer in self.layers:
            if layer.kind == "cylindrical":
                alpha_edges = torch.linspace(-math.pi, math.pi, layer.rows + 1, dtype=torch.float64)
                r_edges = torch.tensor(layer.r_edges, dtype=torch.float64)
                first, second = (alpha_edges[1:] + alpha_edges[:-1]) / 2, (r_edges[1:] + r_edges[:-1]) / 2
            elif layer.cell_size is None:
                raise ValueError(
                    f"cell_centres: geometry {self.name!r} layer {layer.name!r} has no cell_size; "
                    "give cell_size [row_size, col_size] in mm in its description"
                )
            else:
                row_size, col_size = layer.cell_size
                first = (torch.arange(layer.rows, dtype=torch.float64) - (layer.rows - 1) / 2) * row_size
                second = (torch.arange(layer.cols, dtype=torch.float64) - (layer.cols - 1) / 2) * col_size
            centres.append(torch.stack(torch.meshgrid(first, second, indexing="ij"), -1).reshape(-1, 2))
        return torch.cat(centres).to(dtype=dtype or torch.get_default_dtype(), device=device)

    def feature_coordinates(self, *, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """(n_cells, 2) coordinates (x, y) of every cell centre for shower centroids and widths.

        Cartesian layers with a cell_size: x = the column centre, y = the row centre, in mm from the
        layer's centre (:meth:`cell_centres` as (col, row)). Cartesian layers without one (``hcal``):
        x = col - (cols - 1) / 2, y = row - (rows - 1) / 2, in cells. Cylindrical layers
        (CaloChallenge): x = r cos(alpha), y = r sin(alpha) in mm at the bin centres, as
        CaloChallenge's XMLHandler (its eta and phi). Computed in float64 and cached per device and dtype.
        """
        return self._coordinates(torch.device(device or "cpu"), dtype or torch.get_default_dtype()).clone()

    @cached_property
    def _feature_coordinates(self) -> torch.Tensor:
        parts = []
        for layer in self.layers:
            rows = torch.arange(layer.rows, dtype=torch.float64)
            cols = torch.arange(layer.cols, dtype=torch.float64)
            if layer.kind == "cylindrical":
                alpha_edges = torch.linspace(-math.pi, math.pi, layer.rows + 1, dtype=torch.float64)
                r_edges = torch.tensor(layer.r_edges, dtype=torch.float64)
                alpha, r = (alpha_edges[1:] + alpha_edges[:-1]) / 2, (r_edges[1:] + r_edges[:-1]) / 2
                alpha, r = torch.meshgrid(alpha, r, indexing="ij")
                x, y = r * torch.cos(alpha), r * torch.sin(alpha)
            else:
                row_size, col_size = layer.cell_size or (1.0, 1.0)
                y, x = torch.meshgrid(
                    (rows - (layer.rows - 1) / 2) * row_size, (cols - (layer.cols - 1) / 2) * col_size, indexing="ij"
                )
            parts.append(torch.stack([x, y], -1).reshape(-1, 2))
        return torch.cat(parts)

    @cached_property
    def _device_coordinates(self) -> dict[tuple[torch.device, torch.dtype], torch.Tensor]:
        return {}

    def _coordinates(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The cached :meth:`feature_coordinates` on ``device`` in ``dtype`` (shared: do not modify)."""
        key = (torch.device(device), dtype)
        if key not in self._device_coordinates:
            self._device_coordinates[key] = self._feature_coordinates.to(device=key[0], dtype=dtype)
        return self._device_coordinates[key]

    def _check_cells(self, arg: str, images: torch.Tensor) -> None:
        if images.dim() < 1 or images.shape[-1] != self.n_cells:
            raise ValueError(
                f"{arg}: expected (..., {self.n_cells}) cells for geometry {self.name!r}, "
                f"got {tuple(images.shape)}"
            )

    # ---- descriptions ------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready description; None fields are left out."""
        layers = []
        for layer in self.layers:
            entry = {f.name: getattr(layer, f.name) for f in fields(Layer)}
            entry = {k: list(v) if isinstance(v, tuple) else v for k, v in entry.items() if v is not None}
            layers.append(entry)
        description = {"name": self.name, "source": self.source, "medium": self.medium, "layers": layers}
        return {k: v for k, v in description.items() if v is not None}

    @classmethod
    def from_dict(cls, description: dict, *, origin: str = "<dict>") -> Geometry:
        """Build from :meth:`to_dict`'s format; errors name ``origin`` (the file) and the key."""
        try:
            _require(isinstance(description, dict), "top level", "a mapping", type(description).__name__)
            _reject_unknown(description, ("name", "source", "medium", "layers"), "")
            _require("name" in description, "name", "a geometry name", None)
            raw_layers = description.get("layers")
            _require(isinstance(raw_layers, list) and raw_layers, "layers", "a non-empty list", raw_layers)
            layers = []
            for i, raw in enumerate(raw_layers):
                _require(isinstance(raw, dict), f"layers[{i}]", "a mapping", raw)
                _reject_unknown(raw, tuple(f.name for f in fields(Layer)), f"layers[{i}].")
                for key in ("name", "rows", "cols"):
                    _require(key in raw, f"layers[{i}].{key}", "a value (required)", None)
                try:
                    layers.append(Layer(**raw))
                except GeometryError as error:
                    raise GeometryError(f"layers[{i}].{error}") from None
            return cls(description["name"], tuple(layers), description.get("source", ""), description.get("medium"))
        except GeometryError as error:
            raise GeometryError(f"{origin}: {error}") from None

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Geometry:
        path = Path(path)
        try:
            description = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise GeometryError(f"{path}: not valid JSON: {error}") from None
        return cls.from_dict(description, origin=str(path))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> Geometry:
        try:
            import yaml
        except ImportError:
            raise ImportError("reading YAML geometries needs PyYAML: pip install pyyaml") from None
        path = Path(path)
        try:
            description = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise GeometryError(f"{path}: not valid YAML: {error}") from None
        return cls.from_dict(description, origin=str(path))

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON, one layer per line, atomically (temp file + os.replace)."""
        description = self.to_dict()
        header = json.dumps({k: v for k, v in description.items() if k != "layers"}, indent=2)[:-2]
        layers = ",\n".join("    " + json.dumps(layer) for layer in description["layers"])
        text = f'{header},\n  "layers": [\n{layers}\n  ]\n}}\n'
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                file.write(text)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def _reject_unknown(mapping: dict, known: tuple[str, ...], prefix: str) -> None:
    unknown = next((key for key in mapping if key not in known), None)
    if unknown is not None:
        raise GeometryError(f"{prefix}{unknown}: unknown key; expected one of {', '.join(known)}")


def _check_medium(medium: Any) -> None:
    """A medium is named by a lower-case identifier (the simulator checks the name is known)."""
    ok = medium is None or (isinstance(medium, str) and medium.isidentifier() and medium == medium.lower())
    _require(ok, "medium", 'a medium name such as "pb_lar", "w_si", "fe_scint" or "lar"', medium)


def _check_integer(arg: str, value: torch.Tensor) -> None:
    is_tensor = isinstance(value, torch.Tensor)
    if not is_tensor or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        kind = value.dtype if is_tensor else type(value).__name__
        raise TypeError(f"{arg}: expected an integer tensor, got {kind}")


def from_calochallenge_xml(
    path: str | os.PathLike,
    *,
    particle: str | int | None = None,
    name: str | None = None,
    depth_mm: float | Mapping[str, float] | None = None,
    medium: str | Mapping[str, str] | None = None,
) -> Geometry:
    """Read a CaloChallenge binning XML (``<Bins><Bin name= pid=><Layer id= r_edges= n_bin_alpha=>``).

    ``particle`` picks the ``<Bin>`` by name or pid (needed only when the file has several).
    Layers without voxels (``r_edges="0"``) are left out; kept layers are named ``layer_<id>``.
    The XML has no depths or materials: ``depth_mm`` (one value, or one per kept layer name) and
    ``medium`` (the geometry's, or one per kept layer name) add them, for the simulator.
    """
    path = Path(path)
    all_bins = ET.parse(path).getroot().findall("Bin")
    bins = [b for b in all_bins if particle is None or str(particle) in (b.get("name"), b.get("pid"))]
    if len(bins) != 1:
        found = [(b.get("name"), b.get("pid")) for b in all_bins]
        raise GeometryError(
            f"{path}: expected one <Bin> for particle={particle!r}; the file has (name, pid) {found}"
        )
    (selected,) = bins
    layers = []
    for element in selected.findall("Layer"):
        where = f"{path}: <Layer id={element.get('id')!r}>"
        try:
            r_edges = [float(e) for e in element.get("r_edges", "").split(",")]
            n_alpha = int(element.get("n_bin_alpha", ""))
            if len(r_edges) > 1:
                layer_name = f"layer_{element.get('id')}"
                layers.append(Layer(layer_name, n_alpha, len(r_edges) - 1, kind="cylindrical", r_edges=r_edges))
        except GeometryError as error:
            raise GeometryError(f"{where}: {error}") from None
        except ValueError:
            raise GeometryError(f"{where}: expected numeric r_edges and n_bin_alpha") from None
    names = [layer.name for layer in layers]
    extra: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in (("depth_mm", depth_mm), ("medium", medium)):
        if isinstance(value, Mapping):
            missing = [n for n in names if n not in value]
            unknown = [n for n in value if n not in names]
            if missing or unknown:
                raise GeometryError(
                    f"{path}: {key}: expected one value per kept layer {names}; missing {missing}, unknown {unknown}"
                )
            for n in names:
                extra[n][key] = value[n]
        elif value is not None and key == "depth_mm":
            for n in names:
                extra[n][key] = value
    try:
        layers = [dataclasses.replace(layer, **extra[layer.name]) for layer in layers]
        bin_label = f"<Bin name={selected.get('name')!r} pid={selected.get('pid')!r}>"
        source = f"CaloChallenge/homepage code/{path.name}, {bin_label}"
        return Geometry(name or path.stem, tuple(layers), source, None if isinstance(medium, Mapping) else medium)
    except GeometryError as error:
        raise GeometryError(f"{path}: {error}") from None


_CALOGAN = Geometry(
    "calogan",
    (
        Layer("layer_0", 3, 96, cell_size=(160.0, 5.0), depth_mm=90.0),
        Layer("layer_1", 12, 12, cell_size=(40.0, 40.0), depth_mm=347.0),
        Layer("layer_2", 12, 6, cell_size=(40.0, 80.0), depth_mm=43.0),
    ),
    "CaloGAN (Paganini et al., arXiv:1705.02355): Pb/LAr, HDF5 keys layer_0/1/2 of shape (N, rows, cols)",
    medium="pb_lar",
)

_HCAL = Geometry(
    "hcal",
    tuple(Layer(f"depth{d}", 72, 84) for d in range(1, 8)),
    "CMS HCAL DQM occupancy maps (HCALDQM/ML4DQM, run 306138 HDF5): per depth (LS, 72 iphi, 84 ieta); "
    "rows = iphi, cols = ieta",
)

_BUILT_IN = {"calogan": _CALOGAN, "hcal": _HCAL}
_SHIPPED = ("calochallenge-ds1-photons", "calochallenge-ds1-pions", "calochallenge-ds2", "calochallenge-ds3")


def available() -> list[str]:
    """Names of the preset geometries."""
    return sorted([*_BUILT_IN, *_SHIPPED])


@lru_cache(maxsize=None)
def _shipped(name: str) -> Geometry:
    resource = resources.files(__package__) / "_geometries" / f"{name}.json"
    return Geometry.from_dict(json.loads(resource.read_text()), origin=f"sim2real_fast/_geometries/{name}.json")


def get(geometry: str | os.PathLike | Geometry) -> Geometry:
    """A Geometry from a preset name, a .json/.yaml/.yml/.xml (CaloChallenge) file, or a Geometry."""
    if isinstance(geometry, Geometry):
        return geometry
    if isinstance(geometry, str) and geometry in _BUILT_IN:
        return _BUILT_IN[geometry]
    if isinstance(geometry, str) and geometry in _SHIPPED:
        return _shipped(geometry)
    path = Path(geometry)
    readers = {
        ".json": Geometry.from_json,
        ".yaml": Geometry.from_yaml,
        ".yml": Geometry.from_yaml,
        ".xml": from_calochallenge_xml,
    }
    if path.suffix.lower() in readers and path.is_file():
        return readers[path.suffix.lower()](path)
    close = difflib.get_close_matches(str(geometry), available(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise GeometryError(
        f"unknown geometry {str(geometry)!r}: not a preset ({', '.join(available())}) nor an existing "
        f".json/.yaml/.yml/.xml file{hint}"
    )
