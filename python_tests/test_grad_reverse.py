"""sim2real_fast.grad_reverse, the DANN schedule and the nn modules."""

import math

import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast import reference


@pytest.mark.parametrize("alpha", [1.0, 0.3, 0.0])
def test_identity_forward_reversed_backward(device, dtype, alpha):
    base = torch.randn(6, 8, 3, dtype=dtype, device=device)
    x = base[:, ::2].detach().requires_grad_()  # non-contiguous leaf
    xr = x.detach().clone().requires_grad_()
    out = s2r.grad_reverse(x, alpha)
    assert torch.equal(out, x) and out.dtype == dtype
    assert out.data_ptr() == x.data_ptr() and out._base is x  # a view: no copy
    upstream = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, x, upstream)
    (gr,) = torch.autograd.grad(reference.grad_reverse(xr, alpha), xr, upstream)
    torch.testing.assert_close(g, -alpha * upstream)
    torch.testing.assert_close(g, gr)


def test_non_contiguous_and_empty(device):
    x = torch.randn(5, 4, device=device).T.requires_grad_()
    out = s2r.grad_reverse(x, 2.0)
    assert torch.equal(out, x)
    torch.testing.assert_close(torch.autograd.grad(out.sum(), x)[0], torch.full_like(x, -2.0))
    empty = torch.zeros(0, 3, device=device, requires_grad=True)
    out = s2r.grad_reverse(empty)
    assert out.shape == (0, 3)
    assert torch.autograd.grad(out.sum(), empty)[0].shape == (0, 3)


def test_gradcheck_float64_with_alpha_minus_one():
    """With alpha = -1 the layer is the identity in both passes, which gradcheck can verify."""
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: s2r.grad_reverse(t, -1.0) * t, (x,))


def test_forward_makes_no_copy_and_backward_one_gradient():
    """The forward allocates nothing; the backward allocates the one reversed gradient."""
    x = torch.randn(64, 32, requires_grad=True)
    out = s2r.grad_reverse(x, 0.5)
    assert out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, torch.full_like(x, -0.5))


def test_in_place_on_the_view_is_refused_not_silently_wrong():
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="view"):
        s2r.grad_reverse(x, 1.0).relu_()


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_tensors_are_refused(dtype):
    with pytest.raises(TypeError, match="floating-point"):
        s2r.grad_reverse(torch.zeros(3, dtype=dtype))


@pytest.mark.parametrize(("alpha", "error"), [(float("nan"), ValueError), (float("inf"), ValueError), ("1", TypeError), (True, TypeError)])
def test_bad_alpha_is_refused(alpha, error):
    with pytest.raises(error, match="alpha"):
        s2r.grad_reverse(torch.zeros(3), alpha)


def test_torch_compile_fullgraph():
    x = torch.randn(16, 4, requires_grad=True)
    for backend in ("aot_eager",):
        torch._dynamo.reset()
        compiled = torch.compile(lambda t: (s2r.grad_reverse(t, 0.7) ** 2).sum(), fullgraph=True, backend=backend)
        torch.testing.assert_close(torch.autograd.grad(compiled(x), x)[0], -0.7 * 2 * x.detach())


def test_dann_schedule():
    assert s2r.dann_alpha(0.0) == 0.0
    assert s2r.dann_alpha(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert s2r.dann_alpha(0.5, gamma=4.0) == pytest.approx(2 / (1 + math.exp(-2)) - 1)
    values = [s2r.dann_alpha(p / 10) for p in range(11)]
    assert values == sorted(values)
    with pytest.raises(ValueError, match="progress must be in"):
        s2r.dann_alpha(1.5)


def test_grad_reverse_rejects_non_tensors():
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        s2r.grad_reverse([1.0, 2.0])


def test_modules_match_the_functions():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 6, generator=g), torch.randn(30, 6, generator=g) + 0.5
    loss = s2r.nn.MMDLoss(estimator="biased", bandwidth="median", kernel_scales=(0.5, 1.0, 2.0))
    torch.testing.assert_close(loss(x, y), s2r.mmd(x, y, estimator="biased", bandwidth="median", kernel_scales=(0.5, 1.0, 2.0)))
    sigma2 = torch.tensor([0.5, 2.0])
    fixed = s2r.nn.MMDLoss(bandwidth=sigma2, weights=(0.25, 0.75))
    assert "bandwidth" in fixed.state_dict()
    torch.testing.assert_close(fixed(x, y), s2r.mmd(x, y, bandwidth=sigma2, weights=(0.25, 0.75)))
    torch.testing.assert_close(s2r.nn.CORALLoss()(x, y), s2r.coral(x, y))
    grl = s2r.nn.GradientReversal(alpha=0.5)
    xg = x.clone().requires_grad_()
    torch.testing.assert_close(torch.autograd.grad(grl(xg).sum(), xg)[0], torch.full_like(x, -0.5))
    grl.alpha = s2r.dann_alpha(0.3)
    assert "alpha=" in repr(grl) and "estimator='biased'" in repr(loss)
