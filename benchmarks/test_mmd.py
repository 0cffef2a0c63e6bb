"""MMD^2 forward + backward: ours vs the reference vs pytorch-adapt and geomloss (definitions in peers.py),
torch's own GEMM on the same products (the attainable rate), and ours beside one busy process.

Every implementation gets the same squared bandwidths ``sigma_k^2 = s_k h``: our default scales ``s_k``
and ``h`` the "mean" heuristic of the pooled sample, computed once outside the timing (so a peer's own
bandwidth heuristic, e.g. pytorch-adapt's median over n x n distances, is not timed). geomloss computes
one kernel (``s = 1``) and the biased estimator. Each value is checked against the reference on the same
input before it is timed.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

import pytest
import torch

import peers
import sim2real_fast as s2r
from sim2real_fast import reference

SEED = 0
SCALES = s2r.ops.DEFAULT_KERNEL_SCALES
GEOMLOSS_KERNEL = SCALES.index(1.0)
IMPLEMENTATIONS = ["ours", "reference", "pytorch-adapt", "geomloss"]
CASES = [  # device, n = m, d, rounds of ours, rounds of the others
    pytest.param("cpu", 1024, 256, 10, 10, id="cpu-1024"),
    pytest.param("cpu", 4096, 256, 5, 3, id="cpu-4096"),
    pytest.param("cpu", 4096, 2048, 3, 2, id="cpu-4096-d2048"),
    pytest.param("cuda", 8192, 512, 20, 5, id="cuda-8192"),
]
WIDE_D = 2048  # only ours, the reference and pytorch-adapt (geomloss's one kernel adds nothing here)
BUSY_N, BUSY_D, BUSY_ROUNDS = 4096, 256, 3
LARGE_N, LARGE_D = 32768, 256
MATMUL_N = 8192


@functools.cache
def problem(device: torch.device, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (n, d), y (n, d) shifted by 0.5 (fixed seed, drawn on the CPU), and the K squared bandwidths."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, d, generator=generator)
    y = torch.randn(n, d, generator=generator) + 0.5
    sigma2 = s2r.bandwidth_heuristic(x, y) * torch.tensor(SCALES)
    return x.to(device).requires_grad_(), y.to(device).requires_grad_(), sigma2.to(device)


@functools.cache
def reference_value(device: torch.device, n: int, d: int, estimator: str, one_kernel: bool) -> torch.Tensor:
    x, y, sigma2 = problem(device, n, d)
    bandwidth = sigma2[GEOMLOSS_KERNEL : GEOMLOSS_KERNEL + 1] if one_kernel else sigma2
    with torch.no_grad():
        return reference.mmd(x, y, estimator=estimator, bandwidth=bandwidth)


def gemm_flop(n: int, m: int, d: int) -> int:
    """GEMM flops of our fused fwd + bwd: per visited pair block one GEMM for the dot products and two
    for the gradients, over the blocks of 2 d (n^2/2 + m^2/2 + n m) flops each."""
    return 3 * 2 * d * (n * n // 2 + m * m // 2 + n * m)


def loss_function(implementation: str, sigma2: torch.Tensor):
    """(loss, estimator, one_kernel) of an implementation; skips when a peer is not importable."""
    if implementation == "ours":
        return (lambda x, y: s2r.mmd(x, y, bandwidth=sigma2)), "unbiased", False
    if implementation == "reference":
        return (lambda x, y: reference.mmd(x, y, bandwidth=sigma2)), "unbiased", False
    if implementation == "pytorch-adapt":
        loss = peers.pytorch_adapt_mmd(sigma2)
        one_kernel, estimator = False, "unbiased"
    else:
        loss = peers.geomloss_mmd(float(sigma2[GEOMLOSS_KERNEL]))
        one_kernel, estimator = True, "biased"
    if loss is None:
        pytest.skip(peers.unavailable_reason(implementation))
    return loss, estimator, one_kernel


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize(("device", "n", "d", "rounds_ours", "rounds_others"), CASES, indirect=["device"])
def test_mmd(fwd_bwd, benchmark, device, n, d, rounds_ours, rounds_others, implementation):
    if d == WIDE_D and implementation == "geomloss":
        pytest.skip(f"geomloss is compared at d=256 only (d={d})")
    x, y, sigma2 = problem(device, n, d)
    loss, estimator, one_kernel = loss_function(implementation, sigma2)
    if implementation != "reference":
        with torch.no_grad():
            value = loss(x, y)
        torch.testing.assert_close(value, reference_value(device, n, d, estimator, one_kernel), rtol=1e-4, atol=1e-7)
    benchmark.group = f"mmd {device.type} n=m={n} d={d}"
    x.grad = y.grad = None
    fwd_bwd(
        loss,
        (x, y),
        rounds=rounds_ours if implementation == "ours" else rounds_others,
        op="mmd",
        implementation=implementation,
        device=device.type,
        n=n,
        m=n,
        d=d,
        kernels=1 if one_kernel else len(SCALES),
        estimator=estimator,
        gemm_flop=gemm_flop(n, n, d),
    )


def test_mmd_large_cpu(fwd_bwd, benchmark):
    """Ours only, one round (about a minute on 2 cores): the reference would not fit in memory."""
    x, y, sigma2 = problem(torch.device("cpu"), LARGE_N, LARGE_D)
    reference_bytes = len(SCALES) * LARGE_N * LARGE_N * 4
    benchmark.group = f"mmd cpu n=m={LARGE_N} d={LARGE_D}"
    fwd_bwd(
        lambda a, b: s2r.mmd(a, b, bandwidth=sigma2),
        (x, y),
        rounds=1,
        warmup_rounds=0,
        op="mmd",
        implementation="ours",
        device="cpu",
        n=LARGE_N,
        m=LARGE_N,
        d=LARGE_D,
        kernels=len(SCALES),
        estimator="unbiased",
        gemm_flop=gemm_flop(LARGE_N, LARGE_N, LARGE_D),
        note=f"reference not run: one (K, n, m) float32 kernel stack alone is {reference_bytes / 2**30:.0f} GiB",
    )
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.parametrize(("device", "n", "d"), [pytest.param("cpu", 4096, 256, id="cpu-4096"), pytest.param("cpu", 4096, 2048, id="cpu-4096-d2048")], indirect=["device"])
def test_gemm_rate(benchmark, device, n, d):
    """torch.mm on the products our fused pass computes, untiled and with all threads: z z^T and then
    C z for the pooled z (2n x d) and a (2n x 2n) C. Its rate is what ours' GEMM rate is compared with."""
    x, y, _ = problem(device, n, d)
    z = torch.cat([x.detach(), y.detach()])
    square = torch.empty(2 * n, 2 * n, device=device)
    out = torch.empty_like(z)

    def step():
        torch.mm(z, z.T, out=square)
        torch.mm(square, z, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize()

    benchmark.group = f"mmd {device.type} n=m={n} d={d}"
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    benchmark.extra_info.update(op="mmd", device=device.type, n=n, m=n, d=d, implementation="torch.mm (same GEMMs)",
                                flop=2 * 2 * (2 * n) ** 2 * d, note="z z^T and C z, untiled")


@pytest.mark.parametrize("device", ["cuda"], indirect=True)
def test_fp32_matmul_peak(benchmark, device):
    """torch.mm in float32 on square matrices: the device's attainable GEMM rate, for the MMD's fraction."""
    generator = torch.Generator().manual_seed(SEED)
    a, b = (torch.randn(MATMUL_N, MATMUL_N, generator=generator).to(device) for _ in range(2))

    def step():
        torch.mm(a, b)
        torch.cuda.synchronize()

    benchmark.group = f"fp32 matmul {device.type} {MATMUL_N}^3"
    benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    benchmark.extra_info.update(op="matmul", implementation="torch.mm", device=device.type, n=MATMUL_N, flop=2 * MATMUL_N**3)


# Last in the module: the helper process of busy_neighbour runs until the module is done.
@pytest.fixture(scope="module")
def busy_neighbour():
    """One busy process beside the benchmark (a single-threaded spin loop), started here and stopped
    when the module's tests are done. Yields the load average seen just before it started."""
    load_before = os.getloadavg()[0]
    helper = subprocess.Popen([sys.executable, "-c", "while True:\n    pass"])
    time.sleep(1.0)  # let the scheduler see it
    try:
        yield load_before
    finally:
        helper.terminate()
        helper.wait(timeout=10)


def _with_threads(threads: int, fn):
    def run(*args):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return fn(*args)
        finally:
            torch.set_num_threads(before)

    return run


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("implementation", ["ours", "torch.mm (same GEMMs)"])
def test_mmd_beside_a_busy_process(fwd_bwd, benchmark, busy_neighbour, implementation, threads):
    """n = m = 4096, d = 256 with one busy helper process running: 1 thread against 2 threads, ours and,
    for comparison, torch's own GEMM on the same products (what a co-tenant costs torch itself)."""
    if threads > os.cpu_count():
        pytest.skip(f"{threads} threads on {os.cpu_count()} cores")
    x, y, sigma2 = problem(torch.device("cpu"), BUSY_N, BUSY_D)
    benchmark.group = f"mmd cpu n=m={BUSY_N} d={BUSY_D}, one busy process beside it"
    info = dict(op="mmd busy", device="cpu", n=BUSY_N, m=BUSY_N, d=BUSY_D, threads=threads,
                load_before=busy_neighbour, note=f"{threads} thread(s); load average before the helper {busy_neighbour:.2f}")
    if implementation == "ours":
        x.grad = y.grad = None
        fwd_bwd(_with_threads(threads, lambda a, b: s2r.mmd(a, b, bandwidth=sigma2)), (x, y), rounds=BUSY_ROUNDS,
                implementation=f"ours, {threads} thread(s)", gemm_flop=gemm_flop(BUSY_N, BUSY_N, BUSY_D), **info)
        return
    z = torch.cat([x.detach(), y.detach()])
    square, out = torch.empty(2 * BUSY_N, 2 * BUSY_N), torch.empty_like(z)
    step = _with_threads(threads, lambda: (torch.mm(z, z.T, out=square), torch.mm(square, z, out=out)))
    benchmark.pedantic(step, rounds=BUSY_ROUNDS, warmup_rounds=1)
    benchmark.extra_info.update(info, implementation=f"torch.mm (same GEMMs), {threads} thread(s)",
                                flop=2 * 2 * (2 * BUSY_N) ** 2 * BUSY_D)
