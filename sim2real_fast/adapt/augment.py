"""Random calorimeter augmentations: what changes between two readouts of the same shower."""

from __future__ import annotations

import torch

from .. import geometry as _geometry

__all__ = ["CaloAugment"]


class CaloAugment:
    """Draws a randomly distorted copy of (N, n_cells) cell energies in MeV; energy never leaves its layer.

    In this order, independently per event:

    - energy scale: all cells times 1 + u, u ~ U(-``scale``, ``scale``) (global calibration);
    - cell scale: each cell times 1 + ``cell_scale`` z, z ~ N(0, 1) (cell-to-cell calibration);
    - noise: each cell plus ``noise_mev`` z, z ~ N(0, 1) (electronic noise; may go negative, as
      unsuppressed readout does);
    - dropout: each cell set to 0 with probability ``dropout`` (dead channels);
    - shift: with probability ``shift``, the whole event moves by one cell (rows and columns each by
      -1, 0 or +1, not both 0) in every layer, each layer on its own grid. Cartesian layers fill with
      zeros (energy shifted out of a layer is lost, never moved to another layer) and are not shifted
      along an axis shorter than ``min_cells`` (a one-cell move of CaloGAN's 3 strip rows would put
      the shower core at the edge); cylindrical layers rotate in alpha (rows, periodic) and never move in r.

    Random numbers come from the ``generator`` passed to each call (a CPU generator: results do not
    depend on the device of the inputs).

    Args:
        geometry: the layout of the cells (a preset name or a Geometry).
    """

    def __init__(
        self,
        geometry: str | _geometry.Geometry,
        *,
        scale: float = 0.05,
        cell_scale: float = 0.01,
        noise_mev: float = 3.0,
        dropout: float = 0.02,
        shift: float = 0.5,
        min_cells: int = 4,
    ) -> None:
        self.geometry = _geometry.get(geometry)
        for name, value in (("scale", scale), ("cell_scale", cell_scale), ("noise_mev", noise_mev)):
            if not value >= 0:
                raise ValueError(f"CaloAugment: {name} must be >= 0, got {value!r}")
        for name, value in (("dropout", dropout), ("shift", shift)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CaloAugment: {name} must be a probability in [0, 1], got {value!r}")
        if not isinstance(min_cells, int) or min_cells < 2:
            raise ValueError(f"CaloAugment: min_cells must be an int >= 2, got {min_cells!r}")
        self.scale, self.cell_scale, self.noise_mev = float(scale), float(cell_scale), float(noise_mev)
        self.dropout, self.shift, self.min_cells = float(dropout), float(shift), min_cells

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(N, n_cells) MeV -> (N, n_cells) MeV, a new tensor on the inputs' device."""
        if images.dim() != 2 or images.shape[1] != self.geometry.n_cells:
            raise ValueError(
                f"CaloAugment: expected images (N, {self.geometry.n_cells}) for {self.geometry.name!r}, "
                f"got {tuple(images.shape)}"
            )
        n, n_cells = images.shape
        draw = lambda *shape: torch.rand(*shape, generator=generator).to(images.device)  # noqa: E731
        normal = lambda *shape: torch.randn(*shape, generator=generator).to(images.device)  # noqa: E731
        factor = 1.0 + self.scale * (2.0 * draw(n, 1) - 1.0) + self.cell_scale * normal(n, n_cells)
        out = images * factor + self.noise_mev * normal(n, n_cells)
        out = out.masked_fill(draw(n, n_cells) < self.dropout, 0.0)
        move = torch.randint(0, 8, (n,), generator=generator)
        move = move + (move >= 4)  # 3 (drow + 1) + (dcol + 1) in 0..8 without 4 (no move)
        moves = torch.stack([move // 3, move % 3], 1) - 1
        moves = torch.where(torch.rand(n, 1, generator=generator) < self.shift, moves, 0)
        return self._shift(out, moves.to(images.device))

    def _shift(self, images: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
        """Move every event's layers by moves (N, 2) = (rows, cols) in {-1, 0, 1}."""
        layers = []
        for layer, x in zip(self.geometry.layers, self.geometry.split_layers(images)):
            n, rows, cols = x.shape
            drow, dcol = moves[:, 0], moves[:, 1]
            if layer.kind == "cylindrical":
                row = (torch.arange(rows, device=x.device) - drow[:, None]) % rows
                x = x[torch.arange(n, device=x.device)[:, None, None], row[:, :, None], torch.arange(cols, device=x.device)]
            else:
                drow = drow if rows >= self.min_cells else torch.zeros_like(drow)
                dcol = dcol if cols >= self.min_cells else torch.zeros_like(dcol)
                padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # new[r, c] = old[r - drow, c - dcol]
                row = torch.arange(rows, device=x.device) + 1 - drow[:, None]
                col = torch.arange(cols, device=x.device) + 1 - dcol[:, None]
                x = padded[torch.arange(n, device=x.device)[:, None, None], row[:, :, None], col[:, None, :]]
            layers.append(x)
        return self.geometry.join_layers(layers)

    def __repr__(self) -> str:
        return (
            f"CaloAugment({self.geometry.name!r}, scale={self.scale}, cell_scale={self.cell_scale}, "
            f"noise_mev={self.noise_mev}, dropout={self.dropout}, shift={self.shift}, min_cells={self.min_cells})"
        )
