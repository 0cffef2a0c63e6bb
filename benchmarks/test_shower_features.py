"""Shower features forward, float32, CaloGAN geometry (504 cells, 3 layers): ours vs the reference.

Each implementation's features are checked against the reference on the same images before they are
timed (rtol 2e-4: ours sums in float64, the reference in float32).
"""

from __future__ import annotations

import functools

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import geometry as geo
from sim2real_fast import reference

SEED = 0
GEOMETRY = "calogan"
IMPLEMENTATIONS = ["ours", "reference"]
CASES = [  # device, n, rounds
    pytest.param("cpu", 100_000, 5, id="cpu-100000"),
    pytest.param("cuda", 100_000, 50, id="cuda-100000"),
]


@functools.cache
def problem(device: torch.device, n: int) -> torch.Tensor:
    """(n, 504) showers: exponential energies (mean 1) in about half of the cells, zeros elsewhere."""
    generator = torch.Generator().manual_seed(SEED)
    images = torch.empty(n, geo.get(GEOMETRY).n_cells).exponential_(1.0, generator=generator)
    images *= torch.rand(images.shape, generator=generator) < 0.5
    return images.to(device)


def run_ours(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = s2r.shower_features(images, GEOMETRY)
    return torch.stack([f.layer_energy, f.centroid_x, f.centroid_y, f.width_x, f.width_y, f.sparsity], -1), torch.stack(
        [f.total, f.max_fraction], -1
    )


def run_reference(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    geometry = geo.get(GEOMETRY)
    coords = geometry.feature_coordinates(dtype=images.dtype, device=images.device)
    layer_stats, event_stats, _ = reference.shower_features(images, list(geometry.layer_offsets), coords, 0.0)
    return layer_stats, event_stats


@functools.cache
def reference_value(device: torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    return run_reference(problem(device, n))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(("device", "n", "rounds"), CASES, indirect=["device"])
def test_shower_features(benchmark, device, n, rounds, implementation):
    images = problem(device, n)
    function = run_ours if implementation == "ours" else run_reference
    if implementation != "reference":
        for got, expected in zip(function(images), reference_value(device, n)):
            torch.testing.assert_close(got, expected, rtol=2e-4, atol=2e-4 * expected.abs().max().item())

    def step():
        function(images)
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"shower_features {device.type} {GEOMETRY} n={n} float32 forward"
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1)
    benchmark.extra_info.update(op="shower_features", implementation=implementation, device=device.type, n=n,
                                geometry=GEOMETRY, note="forward only")
