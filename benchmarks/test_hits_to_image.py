"""hits_to_image forward: ours vs np.bincount and torch index_add_ on precomputed flat indices, and the reference.

100,000 CaloGAN events (504 cells) with Poisson(200) hits each, float32 energies, int32 cells (fixed seed).
The peers get the flat index ``event * n_cells + cell`` precomputed and untimed (it favours them); ours
and the reference take the jagged (offsets, cell, energy) arrays as they come from a ROOT file. Every
output is checked against ours before timing. On CUDA, a device-to-device copy of the same number of
bytes gives the achievable memory bandwidth of the run.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import reference

SEED = 0
N_CELLS = 504  # CaloGAN
CASES = [  # device, events, rounds
    pytest.param("cpu", 100_000, 10, id="cpu-100k"),
    pytest.param("cuda", 100_000, 50, id="cuda-100k"),
]
CPU_IMPLEMENTATIONS = ["ours", "ours log1p", "np.bincount", "torch.index_add_", "reference"]
CUDA_IMPLEMENTATIONS = ["ours", "ours log1p", "torch.index_add_", "copy (bandwidth)"]


@functools.cache
def problem(device: torch.device, n_events: int):
    """(offsets int64 (N+1,), cell int32 (H,), energy float32 (H,), flat int64 (H,)) on `device`."""
    g = torch.Generator().manual_seed(SEED)
    counts = torch.poisson(torch.full((n_events,), 200.0), generator=g).long()
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    n_hits = int(offsets[-1])
    cell = torch.randint(0, N_CELLS, (n_hits,), generator=g, dtype=torch.int32)
    energy = torch.empty(n_hits).exponential_(1 / 50.0, generator=g)
    flat = torch.repeat_interleave(torch.arange(n_events), counts) * N_CELLS + cell
    return offsets.to(device), cell.to(device), energy.to(device), flat.to(device)


def implementation_fn(name: str, device: torch.device, n_events: int):
    offsets, cell, energy, flat = problem(device, n_events)
    if name == "ours":
        return lambda: s2r.hits_to_image(offsets, cell, energy, n_cells=N_CELLS)
    if name == "ours log1p":
        return lambda: s2r.hits_to_image(offsets, cell, energy, n_cells=N_CELLS, normalize="log1p")
    if name == "reference":
        return lambda: reference.hits_to_image(offsets, cell, energy, n_cells=N_CELLS)
    if name == "np.bincount":
        flat_np, energy_np = flat.numpy(), energy.numpy()
        return lambda: np.bincount(flat_np, weights=energy_np, minlength=n_events * N_CELLS).reshape(n_events, N_CELLS)
    if name == "torch.index_add_":
        return lambda: energy.new_zeros(n_events * N_CELLS).index_add_(0, flat, energy).view(n_events, N_CELLS)
    if name == "copy (bandwidth)":
        source = torch.empty(traffic_bytes(n_events, cell.shape[0]) // 8, dtype=torch.float32, device=device)
        return lambda: source.clone()
    raise ValueError(name)


def traffic_bytes(n_events: int, n_hits: int) -> int:
    """Bytes ours must move at least: read offsets, cells, energies; write the float32 images."""
    return 8 * (n_events + 1) + 8 * n_hits + 4 * n_events * N_CELLS


def _check(name: str, out, device: torch.device, n_events: int) -> None:
    offsets, cell, energy, _ = problem(device, n_events)
    expected = s2r.hits_to_image(offsets, cell, energy, n_cells=N_CELLS)
    if name == "ours log1p":
        expected = torch.log1p(expected)
    out = torch.as_tensor(out).to(device=device, dtype=torch.float32)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("implementation", sorted(set(CPU_IMPLEMENTATIONS + CUDA_IMPLEMENTATIONS)))
@pytest.mark.parametrize(("device", "n_events", "rounds"), CASES, indirect=["device"])
def test_hits_to_image(benchmark, device, n_events, rounds, implementation):
    allowed = CUDA_IMPLEMENTATIONS if device.type == "cuda" else CPU_IMPLEMENTATIONS
    if implementation not in allowed:
        pytest.skip(f"{implementation} is not compared on {device.type}")
    fn = implementation_fn(implementation, device, n_events)
    if implementation != "copy (bandwidth)":
        _check(implementation, fn(), device, n_events)

    def step():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"hits_to_image {device.type} {n_events} events x ~200 hits, {N_CELLS} cells, float32"
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
    n_hits = problem(device, n_events)[1].shape[0]
    benchmark.extra_info.update(
        op="hits_to_image", device=device.type, n=n_events, implementation=implementation,
        hits=n_hits, traffic_bytes=traffic_bytes(n_events, n_hits),
        note=f"{n_hits / benchmark.stats.stats.mean / 1e6:.0f} M hits/s",
    )
