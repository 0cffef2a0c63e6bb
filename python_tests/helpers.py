"""Helpers shared by the tests: device and dtype parameters, tolerances, translator test inputs."""

import math

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[CUDA, pytest.mark.cuda])]
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def tolerances(dtype: torch.dtype) -> dict:
    """rtol/atol for comparing the fused kernels with the reference."""
    return {"rtol": 2e-4, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread for the test (imported by a test module, it applies to all of its tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_images(geom, n, seed=0):
    """(n, n_cells) MeV: a third of the cells lit, log-uniform 0.1 MeV to 10 GeV."""
    g = torch.Generator().manual_seed(seed)
    lit = torch.rand(n, geom.n_cells, generator=g) < 0.33
    return lit * torch.exp(torch.empty(n, geom.n_cells).uniform_(math.log(0.1), math.log(1e4), generator=g))


def perturb(model, seed=1, std=0.3):
    """Random non-trivial weights (an untrained translator is the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
