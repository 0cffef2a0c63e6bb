"""A small CNN for detector occupancy maps (DQM), split into a feature extractor and a classifier head.

Built to be cheap on a CPU: the HCAL map (7 depths x 72 iphi x 84 ieta) goes through

1. a stem that looks at every cell, then pools patches: a 1 x 1 convolution (the depths of a tower
   mixed, ``channels[0]`` outputs) and a GELU at full resolution, then the maximum and the mean over
   each ``patch_size`` patch (default 4 x 4; 72 x 84 -> 18 x 21), concatenated and mixed by a 1 x 1
   convolution back to ``channels[0]``. Faults are sparse: the patch maximum keeps a single hot or
   dead cell undiluted (a strided patch convolution sums it with the patch's other cells: on the
   simulated validation maps of ``sim2real dqm`` its hot-channel AUC was 0.54, this stem's 0.88);
2. two 3 x 3 convolutions, each followed by a GELU: ``channels[0] -> channels[1]`` at stride 1, then
   ``channels[1] -> channels[1]`` at stride 2 (18 x 21 -> 9 x 11). Rows (iphi) are padded
   circularly, since iphi is periodic; columns (ieta) with zeros;
3. global average and global max pooling, concatenated (the average sees wide faults such as a dead
   readout box, the max a few hot channels), a linear layer to ``n_features`` and a LayerNorm.

No batch normalisation anywhere: domain-adaptation methods put source and target batches through
``features`` together, and batch statistics would mix them. Maps whose size is not a multiple of the
patch are zero-padded at the bottom and the right (zero = no hits) up to the next multiple, like
:class:`~sim2real_fast.models.OccupancyViT`; the circular padding of the 3 x 3 convolutions then wraps
over those zero rows.

At the defaults a map costs 3,529,344 multiply-adds (stem 870,912; 3 x 3 convolutions 1,741,824 and
912,384; linear layers 4,224) and the model has 18,962 parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _maps

__all__ = ["OccupancyCNN"]


class _RowPeriodicConv(nn.Conv2d):
    """3 x 3 convolution of (N, C, rows, cols) whose rows wrap around (iphi) and whose columns are zero-padded."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(in_channels, out_channels, 3, stride=stride, padding=(0, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([x[:, :, -1:], x, x[:, :, :1]], 2))


class _MaxMeanStem(nn.Module):
    """(N, C, H, W) -> (N, out, H / ph, W / pw): 1 x 1 convolution and GELU per cell, patch max and mean, 1 x 1 mix."""

    def __init__(self, in_channels: int, out_channels: int, patch: tuple[int, int]) -> None:
        super().__init__()
        self.cell = nn.Conv2d(in_channels, out_channels, 1)
        self.mix = nn.Conv2d(2 * out_channels, out_channels, 1)
        self.patch = patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.cell(x))
        return self.mix(torch.cat([F.max_pool2d(h, self.patch), F.avg_pool2d(h, self.patch)], 1))


class OccupancyCNN(nn.Module):
    """Classifier of (N, C, H, W) occupancy maps (hits, rates or z-scores per cell) -> (N, n_classes) logits.

    Inputs may also come flat, (N, C * H * W) in channel-major row-major order (the ``hcal``
    geometry's flat order, as :func:`sim2real_fast.simulate.dqm_maps` gives them). With ``log_scale``
    the maps are normalised inside as log1p(max(x, 0)) / ``log_scale`` (counts: log1p(2000 hits) = 7.6);
    without it they are used as given (they may be signed, e.g. z-scores). ``features(maps)`` gives
    the (N, n_features) output of the final LayerNorm, on which domain-adaptation losses act;
    ``head(features)`` gives the logits; ``forward = head o features``.

    Rows are the periodic coordinate (iphi): when H is a multiple of 2 * patch rows (HCAL: 72 = 9 x 8),
    the features are invariant to a circular roll of the map by a multiple of 2 * patch rows.

    Args:
        image_size: (H, W) of one map, e.g. (72, 84) for the HCAL (iphi, ieta) grid.
        in_channels: channels C (HCAL: 7 depths, or 1 for one depth).
        n_classes: number of classes (2: good, faulty; 6: good and the five fault types).
        patch_size: (ph, pw) or one int, the stem's pooling patch; H and W are zero-padded up to
            multiples of it.
        channels: output channels of the stem and of the two 3 x 3 convolutions.
        n_features: size of the feature vector.
        log_scale: divisor of log1p(x), or None to feed the maps unchanged.
    """

    def __init__(
        self,
        image_size: tuple[int, int] = (72, 84),
        in_channels: int = 7,
        n_classes: int = 2,
        *,
        patch_size: int | tuple[int, int] = 4,
        channels: tuple[int, int] = (16, 32),
        n_features: int = 64,
        log_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.image_size = _maps.pair("OccupancyCNN", "image_size", image_size)
        self.patch_size = _maps.pair("OccupancyCNN", "patch_size", patch_size)
        for name, value in (("in_channels", in_channels), ("n_classes", n_classes), ("n_features", n_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"OccupancyCNN: {name} must be a positive int, got {value!r}")
        pair = tuple(channels) if isinstance(channels, (tuple, list)) else (channels,)
        if len(pair) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in pair):
            raise ValueError(f"OccupancyCNN: channels must be two positive ints, got {channels!r}")
        if log_scale is not None and not log_scale > 0:
            raise ValueError(f"OccupancyCNN: log_scale must be > 0 or None, got {log_scale!r}")
        self.in_channels, self.n_classes, self.n_features = in_channels, n_classes, n_features
        self.channels = pair
        self.log_scale = None if log_scale is None else float(log_scale)
        #: (rows, cols) of the zero-padded map that the stem sees
        self.padded_size = tuple(math.ceil(s / p) * p for s, p in zip(self.image_size, self.patch_size))
        self.stem = _MaxMeanStem(in_channels, pair[0], self.patch_size)
        self.blocks = nn.Sequential(
            nn.GELU(),
            _RowPeriodicConv(pair[0], pair[1], stride=1),
            nn.GELU(),
            _RowPeriodicConv(pair[1], pair[1], stride=2),
            nn.GELU(),
        )
        self.project = nn.Linear(2 * pair[1], n_features)
        self.norm = nn.LayerNorm(n_features)
        self.head = nn.Linear(n_features, n_classes)

    def features(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (N, C * H * W) occupancy -> (N, n_features)."""
        x = _maps.prepared(self, maps)
        x = self.blocks(self.stem(x))
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        return self.norm(self.project(pooled))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) or (N, C * H * W) occupancy -> (N, n_classes) logits."""
        return self.head(self.features(maps))

    def extra_repr(self) -> str:
        return (
            f"image_size={self.image_size}, patch_size={self.patch_size}, padded_size={self.padded_size}, "
            f"channels={self.channels}, log_scale={self.log_scale}"
        )
