"""A compact CNN for layered calorimeter images, split into a feature extractor and a classifier head.

The layers of a calorimeter have very different grids (CaloGAN: 3 x 96 strips of 160 x 5 mm,
12 x 12 cells of 40 x 40 mm, 12 x 6 of 40 x 80 mm, all over the same 480 x 480 mm). Convolving the
padded (N, 3, 12, 96) view with the layers as channels would mix cells that are not neighbours, so
:class:`CaloCNN` gives each group of same-shape layers its own branch (CaloGAN: three branches of one
channel; CaloChallenge: the layers of one grid are the channels of one branch): two 3 x 3
convolutions at the layer's own resolution, then adaptive average pooling to at most
``pool`` = (rows, cols). The pooled maps of all branches and the log energy of every layer are
concatenated and mapped by a two-layer MLP to ``n_features`` features; the head is one linear layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import geometry as _geometry

__all__ = ["CaloCNN"]


class CaloCNN(nn.Module):
    """Classifier of (N, n_cells) cell energies in MeV (the geometry's flat order) -> (N, n_classes) logits.

    Cells are multiplied by the ``input_scale`` buffer ((n_cells,), ones; ``mask_cells`` zeroes the
    cells it masks, so the exported model masks them too), then normalised inside as
    log1p(E / MeV) / ``log_scale`` (negative energies, e.g. noise, are clamped to 0). ``features(images)`` gives the (N, n_features) representation (non-negative,
    after a ReLU) on which domain-adaptation losses act; ``head(features)`` gives the logits, and
    ``forward = head o features``.

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        n_classes: number of classes (3: e+, gamma, pi+).
        channels: channels of the two convolutions of every branch.
        pool: (rows, cols) of the pooled maps; smaller layers keep their size.
        hidden: width of the MLP's hidden layer.
        n_features: size of the feature vector.
        log_scale: divisor of log1p(E / MeV) (log1p(100 GeV / MeV) = 11.5).
    """

    def __init__(
        self,
        geometry: str | _geometry.Geometry = "calogan",
        n_classes: int = 3,
        *,
        channels: tuple[int, int] = (8, 16),
        pool: tuple[int, int] = (4, 8),
        hidden: int = 128,
        n_features: int = 64,
        log_scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.geometry = _geometry.get(geometry)
        for name, value in (("n_classes", n_classes), ("hidden", hidden), ("n_features", n_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"CaloCNN: {name} must be a positive int, got {value!r}")
        if len(channels) != 2 or len(pool) != 2 or min(*channels, *pool) < 1:
            raise ValueError(f"CaloCNN: channels and pool must be two positive ints each, got {channels}, {pool}")
        if not log_scale > 0:
            raise ValueError(f"CaloCNN: log_scale must be > 0, got {log_scale!r}")
        self.n_classes, self.n_features, self.log_scale = n_classes, n_features, float(log_scale)
        shapes = list(self.geometry.layer_shapes)
        #: (rows, cols) -> indices of the layers with that grid, in first-seen order
        self.groups = {shape: [i for i, s in enumerate(shapes) if s == shape] for shape in dict.fromkeys(shapes)}
        self.branches = nn.ModuleList()
        flat = 0
        for (rows, cols), layers in self.groups.items():
            out = (min(rows, pool[0]), min(cols, pool[1]))
            self.branches.append(
                nn.Sequential(
                    nn.Conv2d(len(layers), channels[0], 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(channels[0], channels[1], 3, padding=1),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool2d(out),
                    nn.Flatten(),
                )
            )
            flat += channels[1] * math.prod(out)
        self.mlp = nn.Sequential(
            nn.Linear(flat + len(shapes), hidden), nn.ReLU(), nn.Linear(hidden, n_features), nn.ReLU()
        )
        self.head = nn.Linear(n_features, n_classes)
        self.register_buffer("input_scale", torch.ones(self.geometry.n_cells))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(N, n_cells) MeV -> (N, n_features)."""
        if images.dim() != 2 or images.shape[1] != self.geometry.n_cells:
            raise ValueError(
                f"CaloCNN: expected images (N, {self.geometry.n_cells}) for {self.geometry.name!r}, "
                f"got {tuple(images.shape)}"
            )
        layers = self.geometry.split_layers((images.float() * self.input_scale).clamp_min(0))
        energy = torch.stack([layer.sum((-2, -1)) for layer in layers], 1)  # (N, n_layers) MeV
        parts = [torch.log1p(energy) / self.log_scale]
        for branch, indices in zip(self.branches, self.groups.values()):
            x = torch.stack([layers[i] for i in indices], 1)  # (N, group size, rows, cols)
            parts.append(branch(torch.log1p(x) / self.log_scale))
        return self.mlp(torch.cat(parts, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, n_cells) MeV -> (N, n_classes) logits."""
        return self.head(self.features(images))
