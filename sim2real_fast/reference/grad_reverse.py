"""Reference gradient reversal: an alias of x whose gradient is rewritten by a hook."""

import torch


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient reaching x is -alpha times the incoming one."""
    out = x.view_as(x)
    if out.requires_grad:
        out.register_hook(lambda grad: grad * -alpha)
    return out
