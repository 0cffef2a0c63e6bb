"""Reference gradient reversal: a copy whose gradient is rewritten by a hook."""

import torch


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient reaching x is -alpha times the incoming one."""
    out = x.clone()
    if out.requires_grad:
        out.register_hook(lambda grad: grad * -alpha)
    return out
