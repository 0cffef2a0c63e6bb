"""Fixtures: every device (CUDA skipped without a GPU) and both kernel dtypes."""

import pytest

from helpers import DEVICES, DTYPES


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(params=DTYPES)
def dtype(request):
    return request.param
