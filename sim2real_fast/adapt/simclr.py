"""SimCLR (Chen et al., ICML 2020): the projection head and the NT-Xent contrastive loss."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ProjectionHead", "nt_xent"]


class ProjectionHead(nn.Module):
    """MLP (N, n_features) -> (N, out_features): Linear-ReLU-Linear, used only while pretraining."""

    def __init__(self, n_features: int, out_features: int = 64, *, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or n_features
        for name, value in (("n_features", n_features), ("out_features", out_features), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHead: {name} must be a positive int, got {value!r}")
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy of two views (N, D) of the same N events; a 0-dim mean.

    Each of the 2N projections is L2-normalised; row i's positive is its other view, the other
    2N - 2 projections are its negatives: loss_i = -log softmax_j(cos(z_i, z_j) / temperature)[pos(i)].
    """
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"nt_xent: expected two (N, D) views with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature!r}")
    n = z1.shape[0]
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    similarity = (z @ z.T) / temperature
    similarity = similarity.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(similarity, positive)
