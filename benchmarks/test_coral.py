"""Deep CORAL forward + backward: ours vs the reference vs pytorch-adapt (same definition, see peers.py).

Each value is checked against the reference on the same input before it is timed: ours to rtol 1e-4,
pytorch-adapt to 1e-3 (its covariance ``(x^T x - s s^T / n) / (n - 1)`` is not centred first and loses
about 2e-4 relative in float32 here).
"""

from __future__ import annotations

import functools

import pytest
import torch

import peers
import sim2real_fast as s2r
from sim2real_fast import reference

SEED = 0
IMPLEMENTATIONS = ["ours", "reference", "pytorch-adapt"]
CASES = [  # device, n = m, d, rounds
    pytest.param("cpu", 8192, 2048, 3, id="cpu-8192"),
    pytest.param("cuda", 8192, 2048, 20, id="cuda-8192"),
]
RTOL = {"ours": 1e-4, "pytorch-adapt": 1e-3}


@functools.cache
def problem(device: torch.device, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, d) standard normal, y (n, d) scaled by 1.2 and shifted by 0.1 (fixed seed, drawn on the CPU)."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, d, generator=generator)
    y = 1.2 * torch.randn(n, d, generator=generator) + 0.1
    return x.to(device).requires_grad_(), y.to(device).requires_grad_()


@functools.cache
def reference_value(device: torch.device, n: int, d: int) -> torch.Tensor:
    with torch.no_grad():
        return reference.coral(*problem(device, n, d))


def loss_function(implementation: str):
    if implementation == "ours":
        return s2r.coral
    if implementation == "reference":
        return reference.coral
    loss = peers.pytorch_adapt_coral()
    if loss is None:
        pytest.skip(peers.unavailable_reason(implementation))
    return loss


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(("device", "n", "d", "rounds"), CASES, indirect=["device"])
def test_coral(fwd_bwd, benchmark, device, n, d, rounds, implementation):
    x, y = problem(device, n, d)
    loss = loss_function(implementation)
    if implementation != "reference":
        with torch.no_grad():
            value = loss(x, y)
        torch.testing.assert_close(value, reference_value(device, n, d), rtol=RTOL[implementation], atol=0.0)
    benchmark.group = f"coral {device.type} n=m={n} d={d}"
    fwd_bwd(loss, (x, y), rounds=rounds, op="coral", implementation=implementation, device=device.type, n=n, m=n, d=d)
