"""simulate.showers throughput on the CPU: e+ / gamma / pi+, 1-100 GeV, sim (preset nominal) and "real" (preset realistic), in
CaloGAN (504 cells) and the CaloChallenge geometries ds1 photons (368), ds2 (6480) and ds3 (40500). Fewer
showers a round in the finer geometries: the output alone is N x cells x 4 bytes (ds3: 650 MB for 4000).

Showers per second (``extra_info["showers_per_s"]``, from the mean round time) is the figure of merit,
with torch's intra-op threads set to 1 and to the default. On a machine shared with other jobs, OpenMP
threads that spin-wait for a descheduled sibling can slow the multi-threaded case many times over;
the single-threaded figure is the robust one there.

conftest.py makes glibc serve every block over 128 KiB by mmap (for its memory measurement), which
fixes the threshold and turns each of the simulator's many short-lived batch tensors into fresh page
faults. These tests put back the dynamic threshold's ceiling (32 MiB), as an ordinary process has it
after its first large frees, and restore conftest's setting afterwards.
"""

from __future__ import annotations

import ctypes

import pytest
import torch

from sim2real_fast import simulate

GEOMETRIES = {"calogan": 50_000, "calochallenge-ds1-photons": 50_000, "calochallenge-ds2": 20_000, "calochallenge-ds3": 4_000}
CASES = [pytest.param("nominal", id="sim-nominal"), pytest.param("realistic", id="real-realistic")]
THREADS = [pytest.param(1, id="1-thread"), pytest.param(torch.get_num_threads(), id="default-threads")]


_M_MMAP_THRESHOLD = -3


@pytest.fixture(autouse=True)
def ordinary_malloc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing was changed
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
    yield
    libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("threads", THREADS, indirect=True)
@pytest.mark.parametrize("effects", CASES)
def test_simulate_showers(benchmark, effects, threads, geometry):
    n = GEOMETRIES[geometry]
    out = simulate.showers(2_000, geometry=geometry, effects=effects, seed=1)  # warm-up and a sanity check
    assert out.images.shape == (2_000, out.geometry.n_cells) and bool((out.images.sum(1) > 0).all())

    benchmark.group = f"simulate.showers cpu {geometry} n={n}"
    benchmark.pedantic(lambda: simulate.showers(n, geometry=geometry, effects=effects, seed=0), rounds=3, warmup_rounds=0)
    domain = "sim" if effects == "nominal" else f"real ({effects})"
    # run.py's CaloGAN target looks the CaloGAN cases up by this implementation string
    where = "" if geometry == "calogan" else f", {geometry}"
    benchmark.extra_info.update(op="simulate.showers", implementation=f"{domain}, {threads} thread(s){where}", device="cpu", n=n,
                                geometry=geometry, effects=effects, threads=threads,
                                showers_per_s=n / benchmark.stats.stats.mean)
