"""sim2real_fast.coral: values and gradients against the reference and torch.cov, op checks, errors."""

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import reference

from helpers import tolerances


def _samples(n, m, d, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 3.0  # a large mean tests the centring
    y = torch.randn(m, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64) * 0.5
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def test_matches_definition_with_torch_cov():
    x, y = _samples(31, 17, 6, torch.float64, "cpu")
    expected = (torch.cov(x.T) - torch.cov(y.T)).square().sum() / (4 * 6**2)
    torch.testing.assert_close(s2r.coral(x, y), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", [(37, 29, 5), (2, 3, 1), (300, 200, 70), (20000, 300, 256)], ids=str)
def test_values_and_gradients_match_reference(device, dtype, shape):
    """(20000, 300, 256) crosses the 16384-row chunk boundary of the kernel at d = 256."""
    n, m, d = shape
    x, y = _samples(n, m, d, dtype, device)
    xf, yf = x.clone().requires_grad_(), y.clone().requires_grad_()
    xr, yr = x.clone().requires_grad_(), y.clone().requires_grad_()
    fused, ref = s2r.coral(xf, yf), reference.coral(xr, yr)
    assert fused.shape == () and fused.dtype == dtype
    torch.testing.assert_close(fused, ref, **tolerances(dtype))
    gf = torch.autograd.grad(fused * 2.0, (xf, yf))
    gr = torch.autograd.grad(ref * 2.0, (xr, yr))
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=tolerances(dtype)["rtol"], atol=tolerances(dtype)["rtol"] * b.abs().max().item())


def test_non_contiguous_inputs(device, dtype):
    bx, by = _samples(50, 80, 12, dtype, device)
    x, y = bx.T.contiguous().T[:, 1::2], by[::2, ::2]
    assert not x.is_contiguous() and not y.is_contiguous()
    xf = x.clone().requires_grad_()
    out = s2r.coral(xf, y)
    torch.testing.assert_close(out, reference.coral(x.contiguous(), y.contiguous()), **tolerances(dtype))
    assert torch.autograd.grad(out, xf)[0].shape == x.shape


def test_covariance_difference_output_is_differentiable(device):
    x, y = _samples(20, 15, 4, torch.float64, device)
    x.requires_grad_()
    loss, cov_diff = torch.ops.sim2real_fast.coral(x, y)
    torch.testing.assert_close(cov_diff, torch.cov(x.T) - torch.cov(y.T))
    weight = torch.arange(16, dtype=torch.float64, device=device).view(4, 4)  # not symmetric
    got = torch.autograd.grad(loss + (cov_diff * weight).sum(), x)[0]
    xr = x.detach().clone().requires_grad_()
    expected = torch.autograd.grad(reference.coral(xr, y) + ((torch.cov(xr.T) - torch.cov(y.T)) * weight).sum(), xr)[0]
    torch.testing.assert_close(got, expected)


def test_gradcheck_float64(device):
    x, y = _samples(6, 5, 3, torch.float64, device)
    assert torch.autograd.gradcheck(s2r.coral, (x.requires_grad_(), y.requires_grad_()))


def test_opcheck(device):
    x, y = _samples(9, 7, 4, torch.float32, device)
    torch.library.opcheck(torch.ops.sim2real_fast.coral.default, (x.requires_grad_(), y.requires_grad_()))
    g = torch.randn(4, 4, device=device)
    torch.library.opcheck(torch.ops.sim2real_fast._coral_backward.default, (g + g.T, x.detach(), y.detach()))


def test_torch_compile_fullgraph():
    x, y = _samples(40, 30, 8, torch.float32, "cpu")
    x.requires_grad_()
    compiled = torch.compile(s2r.coral, fullgraph=True, backend="aot_eager")
    out = compiled(x, y)
    torch.testing.assert_close(out, s2r.coral(x, y))
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(s2r.coral(x, y), x)[0])


def test_nan_input_gives_nan(device):
    x, y = _samples(10, 12, 3, torch.float32, device)
    x[2, 0] = float("nan")
    assert torch.isnan(s2r.coral(x, y))


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (torch.randn(4, 3), torch.randn(5, 2), ValueError, "same feature size d"),
        (torch.randn(1, 3), torch.randn(5, 3), ValueError, "at least 2 samples"),
        (torch.randn(4, 0), torch.randn(5, 0), ValueError, r"d >= 1"),
        (torch.randn(4, 3, 2), torch.randn(5, 3), ValueError, "x must be 2-D"),
        (torch.randn(4, 3), torch.randn(5, 3).double(), TypeError, "same dtype"),
        (torch.ones(4, 3, dtype=torch.int64), torch.ones(5, 3, dtype=torch.int64), TypeError, "floating-point"),
    ],
)
def test_bad_input_raises_a_clear_error(x, y, error, match):
    with pytest.raises(error, match=match):
        s2r.coral(x, y)


def test_op_checks_its_arguments():
    x, y = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="at least 2 samples"):
        torch.ops.sim2real_fast.coral(x[:1], y)
    with pytest.raises(ValueError, match=r"g must be \(d, d\)"):
        torch.ops.sim2real_fast._coral_backward(torch.ones(2, 2), x, y)
