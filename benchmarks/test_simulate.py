"""simulate.showers throughput on the CPU: CaloGAN e+ / gamma / pi+, 1-100 GeV, plain and "real" (preset default).

Showers per second (``extra_info["showers_per_s"]``, from the mean round time) is the figure of merit;
the simulator is torch on the CPU (the binning runs in the hits_to_image kernel).
"""

from __future__ import annotations

import pytest

from sim2real_fast import simulate

N = 50_000
CASES = [pytest.param(None, id="sim"), pytest.param("default", id="real-default")]


@pytest.mark.parametrize("effects", CASES)
def test_simulate_showers(benchmark, effects):
    out = simulate.showers(2_000, effects=effects, seed=1)  # warm-up and a sanity check
    assert out.images.shape == (2_000, 504) and bool((out.images.sum(1) > 0).all())

    benchmark.group = f"simulate.showers cpu calogan n={N}"
    benchmark.pedantic(lambda: simulate.showers(N, effects=effects, seed=0), rounds=3, warmup_rounds=0)
    benchmark.extra_info.update(op="simulate.showers", implementation="ours", device="cpu", n=N, geometry="calogan",
                                effects=effects or "none", showers_per_s=N / benchmark.stats.stats.mean)
