"""Helpers shared by the tests: device and dtype parameters, tolerances."""

import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICES = [pytest.param("cpu", id="cpu"), pytest.param("cuda", id="cuda", marks=[CUDA, pytest.mark.cuda])]
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


def tolerances(dtype: torch.dtype) -> dict:
    """rtol/atol for comparing the fused kernels with the reference."""
    return {"rtol": 2e-4, "atol": 2e-6} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}
