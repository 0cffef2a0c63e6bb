"""DomainDiscriminator: shapes, gradient reversal into the features, bad arguments."""

import pytest
import torch

from sim2real_fast.models import DomainDiscriminator


def test_shape_and_no_reversal_without_it():
    torch.manual_seed(0)
    d = DomainDiscriminator(8, hidden=16, layers=1, grad_reverse=False)
    x = torch.randn(5, 8, requires_grad=True)
    assert d(x).shape == (5,)
    d(x).sum().backward()
    plain = x.grad.clone()
    r = DomainDiscriminator(8, hidden=16, layers=1, grad_reverse=True)
    r.load_state_dict(d.state_dict())
    r.set_alpha(0.5)
    x.grad = None
    out = r(x)
    torch.testing.assert_close(out, d(x))
    out.sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * plain)


def test_dropout_layers_and_empty_batch():
    d = DomainDiscriminator(4, hidden=8, layers=3, dropout=0.2)
    assert sum(isinstance(m, torch.nn.Linear) for m in d.modules()) == 4
    assert d(torch.zeros(0, 4)).shape == (0,)


@pytest.mark.parametrize("kwargs", [{"n_features": 0}, {"n_features": 4, "hidden": 0}, {"n_features": 4, "dropout": 1.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="DomainDiscriminator"):
        DomainDiscriminator(**kwargs)
