"""What the readers return: :class:`Showers`, :class:`OccupancyMaps`, :class:`Histograms`, :class:`Jagged`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple, Sequence

import torch

from ..geometry import Geometry


def _index(index, n: int):
    """An int keeps its dimension (i -> i:i+1); slices, index and bool tensors pass through."""
    if isinstance(index, int) and not isinstance(index, bool):
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for {n} entries")
        index = index % n
        return slice(index, index + 1)
    if isinstance(index, (list, tuple)):
        return torch.as_tensor(index)
    return index


@dataclass(eq=False)
class Showers:
    """Calorimeter showers as dense images.

    Attributes:
        images: (N, n_cells) float32; cell energies in MeV, or as ``normalize`` says ("log1p": log(1 + E/MeV),
            "sum": fraction of the image's total, "incident": fraction of the incident energy).
        labels: (N,) int64 class labels (-1 where the source has none).
        energy: (N,) float64 incident energy in GeV (NaN where the source has none).
        geometry: the :class:`~sim2real_fast.geometry.Geometry` of the cells.
        normalize: the normalisation applied to ``images`` (None: raw MeV).
        sources: the files read, in order.
        n_dropped, n_clipped: hits removed or set to 0 by the ``bad_energy`` policy.
        timings: seconds spent reading ("read": decompression + deserialisation), converting
            ("convert": awkward/NumPy -> torch, checks) and in ``hits_to_image``.

    ``len(showers)``; ``showers[i]``, ``showers[a:b]``, ``showers[index_tensor]`` and ``showers[mask]`` give
    Showers (an int keeps the event dimension); ``showers.to(device)``; ``Showers.cat([...])``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    energy: torch.Tensor
    geometry: Geometry
    normalize: str | None = None
    sources: tuple[str, ...] = ()
    n_dropped: int = 0
    n_clipped: int = 0
    timings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.dim() == 2 else None
        if n is None or self.images.shape[1] != self.geometry.n_cells:
            raise ValueError(
                f"Showers: images must be (N, {self.geometry.n_cells}) for geometry {self.geometry.name!r}, "
                f"got {tuple(self.images.shape)}"
            )
        for name in ("labels", "energy"):
            value = getattr(self, name)
            if tuple(value.shape) != (n,):
                raise ValueError(f"Showers: {name} must be ({n},) like the images, got {tuple(value.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> Showers:
        index = _index(index, len(self))
        return replace(self, images=self.images[index], labels=self.labels[index], energy=self.energy[index], timings={})

    def to(self, device: torch.device | str) -> Showers:
        """A copy with the tensors on ``device``."""
        return replace(
            self, images=self.images.to(device), labels=self.labels.to(device), energy=self.energy.to(device)
        )

    def layers(self) -> list[torch.Tensor]:
        """One (N, rows, cols) view of ``images`` per layer of the geometry."""
        return self.geometry.split_layers(self.images)

    @classmethod
    def cat(cls, parts: Sequence[Showers]) -> Showers:
        """Concatenate showers of one geometry and normalisation (counts, sources and timings add up)."""
        if not parts:
            raise ValueError("Showers.cat: expected at least one Showers")
        first = parts[0]
        for other in parts[1:]:
            if other.geometry != first.geometry or other.normalize != first.normalize:
                raise ValueError(
                    f"Showers.cat: geometry/normalize differ: ({first.geometry.name!r}, {first.normalize!r}) "
                    f"vs ({other.geometry.name!r}, {other.normalize!r})"
                )
        timings: dict[str, float] = {}
        for part in parts:
            for key, value in part.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        return cls(
            images=torch.cat([p.images for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            energy=torch.cat([p.energy for p in parts]),
            geometry=first.geometry,
            normalize=first.normalize,
            sources=tuple(dict.fromkeys(s for p in parts for s in p.sources)),
            n_dropped=sum(p.n_dropped for p in parts),
            n_clipped=sum(p.n_clipped for p in parts),
            timings=timings,
        )

    def __repr__(self) -> str:
        return (
            f"Showers(n={len(self)}, geometry={self.geometry.name!r}, normalize={self.normalize!r}, "
            f"device={self.images.device}, sources={len(self.sources)} file(s), "
            f"n_dropped={self.n_dropped}, n_clipped={self.n_clipped})"
        )


@dataclass(eq=False)
class OccupancyMaps:
    """Occupancy maps per lumi-section (DQM).

    Attributes:
        maps: (LS, n_cells) float32 hit counts per cell, flattened layer by layer (see ``geometry``).
        lumi_sections: (LS,) int64 lumi-section numbers, or indices 0..LS-1 when the file has none.
        geometry: the cell layout (``hcal``: 7 depths of 72 iphi x 84 ieta; a one-layer grid otherwise).
        names: the datasets / branches / histograms read, one per layer.
        sources: the files read.
    """

    maps: torch.Tensor
    lumi_sections: torch.Tensor
    geometry: Geometry
    names: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.maps.dim() != 2 or self.maps.shape[1] != self.geometry.n_cells:
            raise ValueError(
                f"OccupancyMaps: maps must be (LS, {self.geometry.n_cells}) for geometry {self.geometry.name!r}, "
                f"got {tuple(self.maps.shape)}"
            )
        if tuple(self.lumi_sections.shape) != (self.maps.shape[0],):
            raise ValueError(
                f"OccupancyMaps: lumi_sections must be ({self.maps.shape[0]},), got {tuple(self.lumi_sections.shape)}"
            )

    def __len__(self) -> int:
        return self.maps.shape[0]

    def __getitem__(self, index) -> OccupancyMaps:
        index = _index(index, len(self))
        return replace(self, maps=self.maps[index], lumi_sections=self.lumi_sections[index])

    def to(self, device: torch.device | str) -> OccupancyMaps:
        return replace(self, maps=self.maps.to(device), lumi_sections=self.lumi_sections.to(device))

    def __repr__(self) -> str:
        return (
            f"OccupancyMaps(n={len(self)}, geometry={self.geometry.name!r}, layers={len(self.names)}, "
            f"device={self.maps.device}, sources={len(self.sources)} file(s))"
        )

    def layers(self) -> list[torch.Tensor]:
        """One (LS, rows, cols) view of ``maps`` per layer (HCAL: per depth, (LS, 72 iphi, 84 ieta))."""
        return self.geometry.split_layers(self.maps)


class Histograms(NamedTuple):
    """TH2 histograms of one binning: ``values`` (N, ny, nx) bin contents (no under/overflow; row i = y bin i,
    col j = x bin j, both in increasing order), ``names``, ``x_edges`` (N, nx + 1) and ``y_edges`` (N, ny + 1)
    float64, and the ``source`` file."""

    values: torch.Tensor
    names: tuple[str, ...]
    x_edges: torch.Tensor
    y_edges: torch.Tensor
    source: str


class Jagged(NamedTuple):
    """A jagged branch as flat buffers: entry e owns ``values[offsets[e]:offsets[e + 1]]``.

    ``offsets`` (N + 1,) int64, starting at 0; ``values`` (H,) in the branch's dtype. Pass them to
    :func:`sim2real_fast.hits_to_image` as they are.
    """

    offsets: torch.Tensor
    values: torch.Tensor
