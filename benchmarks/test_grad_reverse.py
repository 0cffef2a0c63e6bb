"""Gradient reversal forward + backward on 64M float32: ours vs the reference vs pytorch-adapt.

The timed step is ``grad_reverse(x, alpha).backward(g)`` with a fixed incoming gradient g. Each
implementation is first checked to return x unchanged and to give x the gradient ``-alpha * g`` exactly.
"""

from __future__ import annotations

import functools

import pytest
import torch

import peers
import sim2real_fast as s2r
from sim2real_fast import reference

SEED = 0
ALPHA = 0.5
SHAPE = (8192, 8192)  # 64M elements, 256 MiB
IMPLEMENTATIONS = ["ours", "reference", "pytorch-adapt"]
DEVICES = [pytest.param("cpu", 20, id="cpu"), pytest.param("cuda", 20, id="cuda")]  # device, rounds


@functools.cache
def problem(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x and the incoming gradient g, standard normal (fixed seed, drawn on the CPU)."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(SHAPE, generator=generator)
    grad = torch.randn(SHAPE, generator=generator)
    return x.to(device).requires_grad_(), grad.to(device)


def reverse_function(implementation: str):
    if implementation == "ours":
        return lambda x: s2r.grad_reverse(x, ALPHA)
    if implementation == "reference":
        return lambda x: reference.grad_reverse(x, ALPHA)
    layer = peers.pytorch_adapt_grad_reverse(ALPHA)
    if layer is None:
        pytest.skip(peers.unavailable_reason(implementation))
    return layer


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(("device", "rounds"), DEVICES, indirect=["device"])
def test_grad_reverse(fwd_bwd, benchmark, device, rounds, implementation):
    x, grad = problem(device)
    reverse = reverse_function(implementation)
    x.grad = None
    out = reverse(x)
    assert torch.equal(out, x)
    out.backward(grad)
    assert torch.equal(x.grad, -ALPHA * grad)
    del out
    benchmark.group = f"grad_reverse {device.type} {SHAPE[0] * SHAPE[1] // 2**20}M float32"
    fwd_bwd(reverse, (x,), grad=grad, rounds=rounds, op="grad_reverse", implementation=implementation, device=device.type, n=x.numel())
