"""Reference Deep CORAL loss: explicit covariances, autograd for gradients."""

import torch


def coral(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||C_x - C_y||_F^2 / (4 d^2), covariances normalised by n - 1 (Sun & Saenko 2016)."""
    d = x.shape[1]
    xc, yc = x - x.mean(0), y - y.mean(0)
    cx = xc.T @ xc / (x.shape[0] - 1)
    cy = yc.T @ yc / (y.shape[0] - 1)
    return (cx - cy).square().sum() / (4.0 * d * d)
