"""sim2real_fast.mmd: values and gradients against the reference and an explicit formula, op checks, errors."""

import ctypes
import gc
import itertools
import math
import subprocess
import sys

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import reference
from sim2real_fast.ops.mmd import median_subsample_indices, resolve_kernels

from helpers import tolerances

ESTIMATORS = ["unbiased", "biased", "linear"]
BANDWIDTHS = ["mean", "median", 1.7, "tensor"]


def _bandwidth(kind, dtype, device):
    return torch.tensor([0.3, 1.0, 4.0], dtype=dtype, device=device) if kind == "tensor" else kind


def _samples(n, m, d, dtype, device, shift=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.2 + shift
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def _explicit_mmd(x, y, sigma2, weights, estimator):
    """MMD^2 from its definition with Python loops over pairs (float64)."""
    x, y = x.double().tolist(), y.double().tolist()
    sigma2, weights = sigma2.double().tolist(), weights.double().tolist()

    def k(a, b):
        d2 = sum((p - q) ** 2 for p, q in zip(a, b))
        return sum(w * math.exp(-d2 / (2 * s)) for s, w in zip(sigma2, weights))

    n, m = len(x), len(y)
    if estimator == "linear":
        pairs = min(n, m) // 2
        h = [
            k(x[2 * i], x[2 * i + 1]) + k(y[2 * i], y[2 * i + 1]) - k(x[2 * i], y[2 * i + 1]) - k(x[2 * i + 1], y[2 * i])
            for i in range(pairs)
        ]
        return sum(h) / pairs
    off = estimator == "unbiased"
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not (off and i == j))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not (off and i == j))
    sxy = sum(k(a, b) for a in x for b in y)
    nxx, nyy = (n * (n - 1), m * (m - 1)) if off else (n * n, m * m)
    return sxx / nxx + syy / nyy - 2 * sxy / (n * m)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("bandwidth", ["mean", "median", 0.8])
def test_matches_definition(estimator, bandwidth):
    x, y = _samples(9, 6, 3, torch.float64, "cpu")
    sigma2, w = resolve_kernels(x, y, bandwidth, s2r.ops.DEFAULT_KERNEL_SCALES, None)
    expected = _explicit_mmd(x, y, sigma2, w, estimator)
    assert s2r.mmd(x, y, estimator=estimator, bandwidth=bandwidth).item() == pytest.approx(expected, rel=1e-12, abs=1e-14)
    assert reference.mmd(x, y, estimator=estimator, bandwidth=bandwidth).item() == pytest.approx(expected, rel=1e-12, abs=1e-14)


def test_bandwidth_heuristics_follow_their_definitions():
    x, y = _samples(40, 25, 4, torch.float64, "cpu")
    z = torch.cat([x, y])
    pair_sq = [((z[i] - z[j]) ** 2).sum().item() for i, j in itertools.permutations(range(len(z)), 2)]
    assert s2r.bandwidth_heuristic(x, y, "mean").item() == pytest.approx(sum(pair_sq) / len(pair_sq), rel=1e-12)
    unordered = [((z[i] - z[j]) ** 2).sum().item() for i, j in itertools.combinations(range(len(z)), 2)]
    assert s2r.bandwidth_heuristic(x, y, "median").item() == pytest.approx(torch.tensor(unordered, dtype=torch.float64).quantile(0.5).item(), rel=1e-12)
    for method in ("mean", "median"):
        assert s2r.bandwidth_heuristic(x, y, method).item() == pytest.approx(reference.bandwidth_heuristic(x, y, method).item(), rel=1e-12)


def test_median_subsample_is_deterministic_and_spread():
    x, y = _samples(1500, 700, 3, torch.float64, "cpu")
    idx = median_subsample_indices(2200)
    assert idx.shape == (1024,) and idx[0] == 0 and idx[-1] == 1023 * 2200 // 1024
    assert s2r.bandwidth_heuristic(x, y, "median") == s2r.bandwidth_heuristic(x, y, "median")
    assert s2r.bandwidth_heuristic(x, y, "median").item() == pytest.approx(reference.bandwidth_heuristic(x, y, "median").item(), rel=1e-9)


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("bandwidth", BANDWIDTHS)
@pytest.mark.parametrize("shape", [(37, 29, 5), (2, 3, 1), (513, 300, 3), (1025, 512, 2)], ids=str)
def test_values_and_gradients_match_reference(device, dtype, estimator, bandwidth, shape):
    n, m, d = shape
    x, y = _samples(n, m, d, dtype, device)
    bw = _bandwidth(bandwidth, dtype, device)
    xf, yf = x.clone().requires_grad_(), y.clone().requires_grad_()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    fused = s2r.mmd(xf, yf, estimator=estimator, bandwidth=bw)
    ref = reference.mmd(xr, yr, estimator=estimator, bandwidth=bw)
    assert fused.shape == () and fused.dtype == dtype and fused.device.type == device
    torch.testing.assert_close(fused, ref, **tolerances(dtype))
    gf = torch.autograd.grad(fused * 3.0, (xf, yf))
    gr = torch.autograd.grad(ref * 3.0, (xr, yr))
    scale = max(g.abs().max().item() for g in gr)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=tolerances(dtype)["rtol"], atol=tolerances(dtype)["rtol"] * scale)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_custom_weights_and_scales(device, estimator):
    x, y = _samples(30, 41, 6, torch.float64, device)
    kwargs = {"estimator": estimator, "kernel_scales": (0.5, 3.0), "weights": (0.2, 0.8), "bandwidth": "median"}
    torch.testing.assert_close(s2r.mmd(x, y, **kwargs), reference.mmd(x, y, **kwargs))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_non_contiguous_inputs(device, dtype, estimator):
    base_x, base_y = _samples(60, 90, 8, dtype, device)
    x = base_x.T.contiguous().T[:, ::2]  # column-major, strided
    y = base_y[::3, 1::2]
    assert not x.is_contiguous() and not y.is_contiguous()
    xf, yf = x.clone().requires_grad_(), y.clone().requires_grad_()
    out = s2r.mmd(xf, yf, estimator=estimator)
    torch.testing.assert_close(out, reference.mmd(x.contiguous(), y.contiguous(), estimator=estimator), **tolerances(dtype))
    gx, gy = torch.autograd.grad(out, (xf, yf))
    assert gx.shape == x.shape and gy.shape == y.shape


def test_empty_feature_dimension_gives_zero(device):
    x, y = torch.zeros(5, 0, device=device, requires_grad=True), torch.zeros(4, 0, device=device, requires_grad=True)
    for estimator in ESTIMATORS:
        out = s2r.mmd(x, y, estimator=estimator)
        assert out.item() == pytest.approx(0.0, abs=1e-6)  # float32 rounding of the weights
        gx, gy = torch.autograd.grad(out, (x, y))
        assert gx.shape == (5, 0) and gy.shape == (4, 0)


def test_half_precision_is_computed_in_float32(device):
    x, y = _samples(20, 30, 4, torch.float32, device)
    out = s2r.mmd(x.half(), y.half())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference.mmd(x.half().float(), y.half().float()), rtol=1e-4, atol=1e-6)


def test_nan_input_gives_nan_not_a_crash(device):
    x, y = _samples(20, 30, 4, torch.float32, device)
    x[3, 1] = float("nan")
    x.requires_grad_()
    for estimator in ESTIMATORS:
        out = s2r.mmd(x, y, estimator=estimator)
        assert torch.isnan(out)
        assert torch.isnan(torch.autograd.grad(out, x)[0]).any()
    assert torch.isnan(s2r.mmd(x, y, bandwidth=1.0))


def test_statistics_behave():
    """Same distribution: the unbiased estimate is near 0 (and may be negative); it grows with the shift."""
    g = torch.Generator().manual_seed(3)
    same = [s2r.mmd(torch.randn(400, 4, generator=g), torch.randn(300, 4, generator=g)).item() for _ in range(5)]
    assert max(abs(v) for v in same) < 0.01
    shifted = [s2r.mmd(torch.randn(400, 4, generator=g), torch.randn(300, 4, generator=g) + s, bandwidth=4.0).item() for s in (0.25, 0.5, 1.0)]
    assert shifted[0] < shifted[1] < shifted[2] and shifted[0] > max(same)
    x = torch.randn(50, 3, generator=g)
    assert s2r.mmd(x, x.clone(), estimator="biased").item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_gradcheck_float64(device, estimator):
    x, y = _samples(7, 6, 3, torch.float64, device)
    x.requires_grad_()
    y.requires_grad_()
    # A fixed bandwidth: a heuristic one is a constant for autograd, so finite differences would differ.
    assert torch.autograd.gradcheck(lambda a, b: s2r.mmd(a, b, estimator=estimator, bandwidth=2.5), (x, y))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_opcheck(device, estimator):
    x, y = _samples(11, 9, 4, torch.float32, device)
    sigma2, w = resolve_kernels(x, y, "mean", s2r.ops.DEFAULT_KERNEL_SCALES, None)
    torch.library.opcheck(torch.ops.sim2real_fast.mmd.default, (x.requires_grad_(), y.requires_grad_(), sigma2, w, estimator))
    grad = torch.tensor(1.5, device=device)
    torch.library.opcheck(torch.ops.sim2real_fast._mmd_backward.default, (grad, x.detach(), y.detach(), sigma2, w, estimator))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_opcheck_fused_value_and_gradient(device, estimator):
    x, y = _samples(11, 9, 4, torch.float64, device)
    sigma2, w = resolve_kernels(x, y, "mean", s2r.ops.DEFAULT_KERNEL_SCALES, None)
    torch.library.opcheck(torch.ops.sim2real_fast._mmd_with_grad.default, (x.requires_grad_(), y.requires_grad_(), sigma2, w, estimator))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_both_gradient_paths_agree(device, estimator):
    """The fused forward (inputs need grad) and the value op + recomputing backward give one gradient,
    and a second backward through a retained graph recomputes instead of reusing spent buffers."""
    x, y = _samples(600, 530, 5, torch.float64, device)
    x.requires_grad_()
    y.requires_grad_()
    fused = s2r.mmd(x, y, estimator=estimator)
    sigma2, w = resolve_kernels(x, y, "mean", s2r.ops.DEFAULT_KERNEL_SCALES, None)
    plain = torch.ops.sim2real_fast.mmd(x, y, sigma2, w, estimator)
    torch.testing.assert_close(fused, plain)
    first = torch.autograd.grad(fused * 2.0, (x, y), retain_graph=True)
    second = torch.autograd.grad(fused * 2.0, (x, y))
    expected = torch.autograd.grad(plain * 2.0, (x, y))
    for a, b, c in zip(first, second, expected):
        torch.testing.assert_close(a, c)
        torch.testing.assert_close(b, c)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_torch_compile_fullgraph(backend):
    x, y = _samples(33, 20, 5, torch.float32, "cpu")
    x.requires_grad_()

    def loss(a, b):
        return (
            s2r.mmd(a, b, estimator="unbiased", bandwidth="mean")
            + 0.5 * s2r.mmd(a, b, estimator="linear", bandwidth=1.0)
            + 0.25 * s2r.mmd(a, b, estimator="biased", bandwidth="median")
        )

    compiled = torch.compile(loss, fullgraph=True, backend=backend)
    out = compiled(x, y)
    torch.testing.assert_close(out, loss(x, y))
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(loss(x, y), x)[0])


def _peak_rss_extra_mib(fn):
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: large blocks go back to the system when freed
    gc.collect()
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM)

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

    before = status("VmRSS:")
    fn()
    return status("VmHWM:") - before


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_memory_stays_linear_in_the_sample_count():
    """n = m = 12000: an n x m float32 matrix would take 549 MiB; the tiled kernels stay within 64 MiB."""
    x, y = _samples(12000, 12000, 4, torch.float32, "cpu")
    x.requires_grad_()
    y.requires_grad_()
    s2r.mmd(x[:600], y[:600]).backward()  # warm up allocator and thread pools
    x.grad = y.grad = None
    extra = _peak_rss_extra_mib(lambda: s2r.mmd(x, y, bandwidth=2.0).backward())
    assert extra < 64, f"peak extra RSS {extra:.1f} MiB"


_GRADIENT_MEMORY_PROBE = """
import ctypes, gc, torch, sim2real_fast as s2r
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: large blocks go back to the system when freed
g = torch.Generator().manual_seed(0)
x = torch.randn(8192, 256, generator=g).requires_grad_()
y = (torch.randn(8192, 256, generator=g) * 1.2 + 0.4).requires_grad_()

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

peaks = []
for _ in range(3):
    x.grad = y.grad = None  # outside the measurement: freeing them would hide a set
    gc.collect()
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak resident set size (VmHWM)
    before = status("VmRSS:")
    s2r.mmd(x, y, bandwidth=300.0).backward()
    peaks.append(status("VmHWM:") - before)
print(min(peaks))
"""


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_gradient_memory_is_one_and_a_half_sets():
    """Forward + backward holds the fused pass's gradients and, briefly, half their scaled copy:
    peak extra memory stays under 1.5 (n + m) d floats plus the tiles.

    Measured in a fresh isolated process (-I: the installed package, not the source tree; best of
    three calls), so that what earlier tests left in the
    allocator's arenas cannot move the figure; a regression (one more full set of gradients, 16 MiB
    here) shows on every call.
    """
    one_set = 2 * 8192 * 256 * 4 / 2**20
    probe = subprocess.run([sys.executable, "-I", "-c", _GRADIENT_MEMORY_PROBE], capture_output=True, text=True, check=True)
    extra = float(probe.stdout.split()[-1])
    assert extra < 1.5 * one_set + 6, f"peak extra RSS {extra:.1f} MiB, gradients {one_set:.0f} MiB"


# ---- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 2)}, ValueError, "same feature size d"),
        ({"x": torch.randn(4), "y": torch.randn(5, 2)}, ValueError, r"x must be 2-D"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3, 1)}, ValueError, r"y must be 2-D"),
        ({"x": torch.randint(0, 3, (4, 3)), "y": torch.randn(5, 3)}, TypeError, "x must be a floating-point"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3).double()}, TypeError, "same dtype"),
        ({"x": torch.randn(1, 3), "y": torch.randn(5, 3)}, ValueError, "unbiased estimator needs at least 2 samples"),
        ({"x": torch.randn(0, 3), "y": torch.randn(5, 3), "estimator": "biased"}, ValueError, "at least 1 samples"),
        ({"x": torch.randn(4, 3), "y": torch.randn(1, 3), "estimator": "linear"}, ValueError, "linear estimator"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "estimator": "quadratic"}, ValueError, "estimator must be 'unbiased', 'biased' or 'linear'"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "bandwidth": "mode"}, ValueError, "bandwidth must be"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "bandwidth": -1.0}, ValueError, "positive and finite"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "bandwidth": torch.tensor([1.0, -2.0])}, ValueError, "must be positive"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "bandwidth": float("nan")}, ValueError, "positive and finite"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "bandwidth": 0.0}, ValueError, "positive and finite"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "bandwidth": torch.ones(2, requires_grad=True)}, ValueError, "bandwidth.detach"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "weights": (1.0, 2.0)}, ValueError, "one entry per kernel"),
        ({"x": torch.randn(4, 3), "y": torch.randn(5, 3), "kernel_scales": ()}, ValueError, "kernel_scales"),
        ({"x": [[1.0]], "y": torch.randn(5, 3)}, TypeError, "x must be a torch.Tensor"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        s2r.mmd(**kwargs)


def test_op_checks_its_arguments():
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    s, w = torch.ones(2), torch.full((2,), 0.5)
    with pytest.raises(ValueError, match="weights must be 1-D of size 2"):
        torch.ops.sim2real_fast.mmd(x, y, s, torch.ones(3), "unbiased")
    with pytest.raises(TypeError, match="sigma2 must have dtype"):
        torch.ops.sim2real_fast.mmd(x, y, s.double(), w, "unbiased")
    with pytest.raises(ValueError, match="estimator must be 'unbiased', 'biased' or 'linear'"):
        torch.ops.sim2real_fast.mmd(x, y, s, w, "other")
    with pytest.raises(TypeError, match=r"x must be a floating-point tensor \(float32 or float64\)"):
        torch.ops.sim2real_fast.mmd(x.half(), y.half(), s.half(), w.half(), "unbiased")
    with pytest.raises(ValueError, match="at least 2 samples"):
        torch.ops.sim2real_fast.mmd(x[:1], y, s, w, "unbiased")
    with pytest.raises(ValueError, match="grad must be a scalar"):
        torch.ops.sim2real_fast._mmd_backward(torch.ones(2), x, y, s, w, "unbiased")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_devices_raise():
    with pytest.raises(ValueError, match="same device"):
        s2r.mmd(torch.randn(4, 3), torch.randn(5, 3, device="cuda"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("estimator", ["unbiased", "biased"])
def test_cuda_tile_edges(dtype, estimator):
    """n, m across the 4096-row CUDA blocks (the CPU blocks of 512 are crossed by the tests above)."""
    x, y = _samples(4097, 4500, 3, dtype, "cuda")
    xf, yf = x.clone().requires_grad_(), y.clone().requires_grad_()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    fused, ref = s2r.mmd(xf, yf, estimator=estimator), reference.mmd(xr, yr, estimator=estimator)
    torch.testing.assert_close(fused, ref, **tolerances(dtype))
    for a, b in zip(torch.autograd.grad(fused, (xf, yf)), torch.autograd.grad(ref, (xr, yr))):
        torch.testing.assert_close(a, b, rtol=tolerances(dtype)["rtol"], atol=tolerances(dtype)["rtol"] * b.abs().max().item())


BAD_KERNELS = [
    pytest.param({"bandwidth": torch.tensor(0.0)}, "sigma2\\[0\\] = 0", id="0-dim-zero"),
    pytest.param({"bandwidth": torch.tensor(-1.5)}, "sigma2\\[0\\] = -0.1875", id="0-dim-negative"),
    pytest.param({"bandwidth": torch.tensor(float("nan"))}, "sigma2\\[0\\] = nan", id="0-dim-nan"),
    pytest.param({"bandwidth": torch.tensor([1.0, 0.0])}, "sigma2\\[1\\] = 0", id="1-d-zero"),
    pytest.param({"bandwidth": torch.tensor([float("inf")])}, "sigma2\\[0\\] = inf", id="1-d-inf"),
    pytest.param({"bandwidth": 1.0, "weights": (0.2, 0.2, -0.1, 0.2, 0.5)}, "weights\\[2\\] = -0.1", id="negative-weight"),
    pytest.param({"bandwidth": 1.0, "weights": (0.2, float("nan"), 0.1, 0.2, 0.5)}, "weights\\[1\\] = nan", id="nan-weight"),
]


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize(("kwargs", "match"), BAD_KERNELS)
@pytest.mark.parametrize("path", ["compiled", "grad", "torch.compile", "fallback"])
def test_bad_bandwidths_and_weights_raise_on_every_path(device, kwargs, match, path, estimator, monkeypatch):
    """Zero, negative, NaN or infinite squared bandwidths and bad weights are errors, never a NaN loss:
    in the compiled op (value and fused gradient), inside torch.compile, and in the pure-PyTorch fallback."""
    x, y = _samples(8, 7, 3, torch.float32, device)
    if path == "grad":
        x.requires_grad_()
    if path == "fallback":
        monkeypatch.setattr(s2r._extension, "HAS_EXTENSION", False)
    fn = lambda a, b: s2r.mmd(a, b, estimator=estimator, **kwargs)  # noqa: E731
    if path == "torch.compile":
        torch._dynamo.reset()
        fn = torch.compile(fn, fullgraph=True, backend="aot_eager")
    with pytest.raises(ValueError, match=match):
        fn(x, y)


def test_double_backward_is_refused():
    """create_graph=True would differentiate constants saved by the fused pass: a clear error instead."""
    x, y = _samples(9, 8, 3, torch.float64, "cpu")
    x.requires_grad_()
    for value in (s2r.mmd(x, y, bandwidth=1.5), torch.ops.sim2real_fast.mmd(x, y, torch.tensor([1.5], dtype=torch.float64), torch.ones(1, dtype=torch.float64), "biased")):
        with pytest.raises(NotImplementedError, match="double backward"):
            torch.autograd.grad(value, x, create_graph=True)
    # the reference supports it: the documented way to higher-order gradients
    (g,) = torch.autograd.grad(reference.mmd(x, y, bandwidth=1.5), x, create_graph=True)
    assert g.requires_grad


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("needs", ["x", "y"])
def test_gradient_of_one_side_only(device, estimator, needs):
    """Only the input that requires grad gets a gradient (the other side's GEMMs are skipped)."""
    x, y = _samples(700, 600, 4, torch.float64, device)
    (x if needs == "x" else y).requires_grad_()
    target = x if needs == "x" else y
    (g,) = torch.autograd.grad(s2r.mmd(x, y, estimator=estimator), target)
    xr, yr = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    expected = torch.autograd.grad(reference.mmd(xr, yr, estimator=estimator), xr if needs == "x" else yr)[0]
    torch.testing.assert_close(g, expected)
    sigma2, w = resolve_kernels(x, y, "mean", s2r.ops.DEFAULT_KERNEL_SCALES, None)
    _, gx, gy = torch.ops.sim2real_fast._mmd_with_grad(x.detach(), y.detach(), sigma2, w, estimator, needs == "x", needs == "y")
    assert (gx.shape == (0,)) == (needs == "y") and (gy.shape == (0,)) == (needs == "x")


def test_value_is_reproducible_and_thread_count_independent():
    """Kernel sums are kept per block and added in block order: the same value with 1 or 2 threads."""
    x, y = _samples(1500, 1300, 6, torch.float32, "cpu")
    threads = torch.get_num_threads()
    try:
        values = []
        for t in (1, 2, 1, 2):
            torch.set_num_threads(t)
            values.append(s2r.mmd(x, y).item())
    finally:
        torch.set_num_threads(threads)
    assert len(set(values)) == 1, values
