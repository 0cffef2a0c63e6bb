"""torch datasets: map-style over in-memory :class:`Showers`, iterable over ROOT files streamed in steps."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from . import _convert
from ._paths import Paths, expand
from .containers import Showers
from .root import _file_showers, _num_entries, _shower_options

__all__ = ["ShowersDataset", "ShowersIterableDataset"]

SHARDING = ("auto", "file", "entries")
_DEFAULTS = {"geometry": "calogan", "normalize": None, "threshold": 0.0, "calibration": None, "dead": None, "bad_energy": "error"}


class ShowersDataset(Dataset):
    """Map-style dataset over :class:`Showers`: item i is (image (n_cells,) float32, label () int64, energy () GeV)."""

    def __init__(self, showers: Showers) -> None:
        self.showers = showers

    def __len__(self) -> int:
        return len(self.showers)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = self.showers
        return s.images[index], s.labels[index], s.energy[index]


class ShowersIterableDataset(IterableDataset):
    """Streams ROOT event trees: each ``uproot`` step is read and turned into images by one ``hits_to_image`` call.

    Yields (image (n_cells,), label (), energy () GeV) per event, or with ``batched=True`` one
    (images (B, n_cells), labels (B,), energy (B,)) per step (use ``DataLoader(dataset, batch_size=None)``).

    With DataLoader workers the work is split so that no event is read twice (torch's
    ``get_worker_info``): ``shard="file"`` gives worker w the files w, w + W, ...; ``shard="entries"``
    gives it the w-th of W contiguous entry ranges of every file; ``"auto"`` (default) shards by file when
    there are at least as many files as workers, by entries otherwise. Events come in file and entry order
    within a worker; DataLoader interleaves the workers. (No sharding across distributed ranks here.)

    ``path`` (files, globs) is expanded once, at construction; the other keywords are those of
    :func:`sim2real_fast.io.read_showers`.
    """

    def __init__(self, path: Paths, *, batched: bool = False, shard: str = "auto", **options) -> None:
        if shard not in SHARDING:
            raise ValueError(f"shard must be one of {SHARDING}, got {shard!r}")
        self.files = expand(path)
        self.batched = batched
        self.shard = shard
        self.tree = options.pop("tree", "events")
        self.step_size = options.pop("step_size", "100 MB")
        self.names = tuple(
            options.pop(key, default)
            for key, default in (
                ("cell_branch", "hit_cell"), ("energy_branch", "hit_energy"),
                ("label_branch", "label"), ("incident_energy_branch", "energy"),
            )
        )
        self.bad_energy = options.get("bad_energy", "error")
        self.geometry, self.options = _shower_options(**{**_DEFAULTS, **options})

    def _ranges(self) -> list[tuple[str, int | None, int | None]]:
        """(file, entry_start, entry_stop) that this worker reads."""
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        if self.shard == "file" or (self.shard == "auto" and len(self.files) >= workers):
            return [(file, None, None) for file in self.files[worker::workers]]
        ranges = []
        for file in self.files:
            n = _num_entries(file, self.tree)
            start, stop = n * worker // workers, n * (worker + 1) // workers
            if stop > start:
                ranges.append((file, start, stop))
        return ranges

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for file, start, stop in self._ranges():
            batches = _file_showers(
                file, tree=self.tree, names=self.names, geometry=self.geometry, options=self.options,
                step_size=self.step_size, entry_start=start, entry_stop=stop,
            )
            for batch in batches:
                _convert.warn_bad(batch.n_dropped + batch.n_clipped, self.bad_energy, f"{file}: tree {self.tree!r}")
                if self.batched:
                    yield batch.images, batch.labels, batch.energy
                else:
                    yield from zip(batch.images, batch.labels, batch.energy)

