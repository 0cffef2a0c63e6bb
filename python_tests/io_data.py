"""Shared by the I/O tests: the real data folder and small random showers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

# <repo>/../shared/data: real ROOT/HDF5 files next to the checkout (absent in a user's clone).
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of the shared data folder; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"real test data not found: {path}")
    return path


def random_showers(n: int, n_cells: int = 504, *, seed: int = 0, density: float = 0.2):
    """Sparse images (n, n_cells) float32 MeV, labels (n,) int64, incident energies (n,) float64 GeV."""
    generator = torch.Generator().manual_seed(seed)
    hit = torch.rand(n, n_cells, generator=generator) < density
    images = torch.where(hit, torch.rand(n, n_cells, generator=generator) * 1000, torch.zeros(()))
    labels = torch.randint(0, 3, (n,), generator=generator)
    energy = torch.rand(n, generator=generator, dtype=torch.float64) * 99 + 1
    return images, labels, energy


def write_tree(path, branches: dict, tree: str = "events") -> None:
    """A TTree written with uproot directly (for malformed inputs the writers refuse to make)."""
    import uproot

    with uproot.recreate(path) as out:
        out.mktree(tree, {name: _type(value) for name, value in branches.items()})
        out[tree].extend(branches)


def _type(value):
    import awkward as ak

    if isinstance(value, np.ndarray):
        return np.dtype((value.dtype, value.shape[1:]))
    return ak.type(value).content
