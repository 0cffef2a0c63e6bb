"""Networks and losses for image-level translation on a geometry's padded (layers, rows, cols) view.

Representation. The networks see a shower as x = log1p(E / MeV) / ``log_scale`` on the geometry's
padded view (N, n_layers, max_rows, max_cols), zeros where no cell is (:class:`ShowerCodec`). A
generator's raw output y passes :meth:`ShowerCodec.suppress`: cells below the zero-suppression
threshold and the padding read exactly 0, so every image a discriminator or a loss sees is a physical
shower (non-negative, zero-suppressed); its backward pass is the identity on real cells (a
straight-through estimator, Bengio et al. 2013), so a cell below threshold still gets the gradient
that would switch it on. :meth:`ShowerCodec.decode` maps back to MeV and re-applies the threshold in MeV.

Layout. Convolving the padded view with the layers as channels would mix cells that are not
neighbours (CaloGAN's 3 x 96 strips, 12 x 12 and 12 x 6 cells all cover 480 x 480 mm), so every
network gives each group of same-shape layers its own branch (:func:`layer_groups`, as
:class:`~sim2real_fast.models.CaloCNN`) and couples the branches through a :class:`GlobalCode`: the
branches' pooled features and every layer's standardised log energy (:class:`LayeredNetwork`),
mapped by a small MLP to a per-channel shift broadcast back to every branch. Every 3 x 3
convolution pads by one cell: with zeros (beyond a calorimeter's edge there is no cell, and its
energy is 0; the reference reflects because a photograph continues beyond its border), circularly
along the alpha rows of cylindrical layers (CaloChallenge), which are periodic. An axis is halved by
a stride-2 convolution only while it has 4 cells or more, so CaloGAN's 3-row layer_0 keeps its rows
and no grid shrinks below 2 cells.

Reference (junyanz/pytorch-CycleGAN-and-pix2pix) and here:

=================  ======================================  =================================================
part               reference (256 x 256 RGB)               here (CaloGAN: 3 x 96, 12 x 12, 12 x 6 cells)
=================  ======================================  =================================================
generator widths   ngf 64: 64, 128, 256                    ``channels`` (8, 16, 16): two downsamplings as the
                                                           reference, widths that train on 20k + 20k showers
                                                           in 10 min on 2 CPU cores
residual blocks    9 at 64 x 64                            ``n_blocks`` 2 at the quarter grid (3 x 24, 3 x 3,
                                                           3 x 3), each after a global coupling
stem               reflect-pad 3, 7 x 7 conv               3 x 3 conv (7 x 7 is wider than most layer grids)
                                                           + a learned per-cell embedding (calibration, dead
                                                           and hot cells sit at fixed cells)
upsampling         transposed 3 x 3 convs                  3 x 3 conv on the coarse grid, linear resize to the
                                                           finer grid aligned with the stride-2 convs (odd
                                                           grids: 3 -> 2 -> 3), plus the encoder's features
                                                           of that grid (long skips)
output             reflect-pad 3, 7 x 7 conv, tanh         1 x 1 conv giving a correction added to the input
                                                           (zero-initialised: an untrained generator is the
                                                           identity); no tanh (the codec bounds the output)
discriminator      70 x 70 PatchGAN: 4 x 4 convs, ndf 64,  ``channels`` (8, 16): 3 x 3 convs, strides 2, 1,
                   strides 2, 2, 2, 1, 1                   then a 3 x 3 output conv: a receptive field of 11
                                                           cells along a halved axis, 7 along a kept one
                                                           (layer_1: 11 of 12 cells; layer_0: 11 of 96 strips
                                                           x all 3 rows), and the global code on every patch
norm, init         instance norm, no affine; N(0, 0.02)    the same (no norm on a grid of one cell)
=================  ======================================  =================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .. import geometry as _geometry

__all__ = [
    "GlobalCode",
    "GridConv",
    "LayerGroup",
    "LayeredNetwork",
    "LayeredPatchDiscriminator",
    "LayeredResnetGenerator",
    "ResidualGenerator",
    "ShowerCodec",
    "energy_loss",
    "energy_statistics",
    "halve_grid",
    "init_weights",
    "instance_norm",
    "layer_groups",
    "lsgan_loss",
    "upsample_to",
    "zero_suppression",
]


# ---- energies ------------------------------------------------------------------------------------
class ShowerCodec(nn.Module):
    """Cell energies (N, n_cells) in MeV <-> the networks' view x = log1p(E / MeV) / ``log_scale``, (N, L, R, C).

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        log_scale: divisor of log1p(E / MeV); 10 maps 100 GeV in a cell to 1.15.
        threshold_mev: zero suppression of the outputs: a cell below it reads 0. One value for every
            layer or one per layer. Default 1 MeV, the simulator's readout threshold
            (``simulate.showers(threshold_mev=1.0)``); the nominal digitisation also suppresses
            cells below 2 sigma of their noise, 20 / 60 / 40 MeV in CaloGAN's layers 0 / 1 / 2
            (``DetectorEffects.zero_suppression_sigma`` x ``noise_mev``): pass
            ``threshold_mev=(20.0, 60.0, 40.0)`` to keep that suppression too.
    """

    def __init__(
        self,
        geometry: str | _geometry.Geometry,
        *,
        log_scale: float = 10.0,
        threshold_mev: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        self.geometry = _geometry.get(geometry)
        if not (isinstance(log_scale, (int, float)) and math.isfinite(log_scale) and log_scale > 0):
            raise ValueError(f"log_scale: expected a finite number > 0, got {log_scale!r}")
        n_layers = self.geometry.n_layers
        values = [threshold_mev] * n_layers if isinstance(threshold_mev, (int, float)) else list(threshold_mev)
        ok = len(values) == n_layers and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values
        )
        if not ok:
            raise ValueError(
                f"threshold_mev: expected a number >= 0 (MeV) or {n_layers} of them (one per layer of "
                f"{self.geometry.name!r}), got {threshold_mev!r}"
            )
        self.log_scale = float(log_scale)
        thresholds = torch.tensor(values, dtype=torch.float32)
        sizes = [layer.n_cells for layer in self.geometry.layers]
        mask = self.geometry.padding_mask()
        self.register_buffer("mask", mask.float(), persistent=False)
        #: flat padded position of every cell, in cell order (the mask's True positions, ascending)
        self.register_buffer("position", mask.flatten().nonzero().squeeze(1), persistent=False)
        self.register_buffer("threshold", (torch.log1p(thresholds) / self.log_scale)[:, None, None], persistent=False)
        self.register_buffer("cell_threshold_mev", thresholds.repeat_interleave(torch.tensor(sizes)), persistent=False)

    @property
    def n_cells(self) -> int:
        return self.geometry.n_cells

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(N, n_cells) MeV -> (N, L, R, C) x in the layout of ``geometry.to_padded``; negative energies
        (noise) count as 0."""
        if images.dim() < 1 or images.shape[-1] != self.n_cells:
            raise ValueError(f"images: expected (..., {self.n_cells}) cells for geometry {self.geometry.name!r}, "
                             f"got {tuple(images.shape)}")
        x = torch.log1p(images.to(self.mask.dtype).clamp_min(0)) / self.log_scale
        padded = x.new_zeros(*x.shape[:-1], self.mask.numel())
        return padded.index_copy_(-1, self.position, x).unflatten(-1, tuple(self.mask.shape))

    def suppress(self, y: torch.Tensor) -> torch.Tensor:
        """(N, L, R, C) raw outputs -> the image: y where y >= the layer's threshold, else 0; padding 0.

        The backward pass is the identity on real cells (straight-through) and 0 on the padding.
        """
        y = y * self.mask
        return y - (y * (y < self.threshold)).detach()

    def decode(self, y: torch.Tensor) -> torch.Tensor:
        """(N, L, R, C) x or raw outputs -> (N, n_cells) MeV; cells below their threshold read exactly 0.

        ``decode(y)`` equals ``decode(suppress(y))``: raw generator outputs need no :meth:`suppress` first.
        """
        images = torch.expm1(self.geometry.from_padded(y).clamp_min(0) * self.log_scale)
        return images.masked_fill_(images < self.cell_threshold_mev, 0.0)

    def layer_energies(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, R, C) x (padding 0) -> (N, L) layer energies in MeV."""
        return torch.expm1(x * self.log_scale).sum((-2, -1))

    def total_energy(self, x: torch.Tensor) -> torch.Tensor:
        """(N, L, R, C) x (padding 0) -> (N,) total energies in MeV."""
        return self.layer_energies(x).sum(-1)

    def l1(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean |x - target| over the real cells (the padding does not count): the cycle and identity distance."""
        return ((x - target).abs() * self.mask).sum() / (x.shape[0] * self.n_cells)

    def extra_repr(self) -> str:
        return f"geometry={self.geometry.name!r}, log_scale={self.log_scale}"


def zero_suppression(real: torch.Tensor, geometry: str | _geometry.Geometry, *, floor_mev: float = 1.0) -> list[float]:
    """Per layer, the smallest non-zero energy of (N, n_cells) MeV real showers (at least ``floor_mev``).

    The readout threshold of the real detector as its data show it, without labels: translated
    showers are suppressed there, so that a translator cannot add cells that the real detector
    would never record (pass it as a translator's ``threshold_mev``). A layer with no non-zero cell gets ``floor_mev``.
    """
    thresholds = []
    for layer in _geometry.get(geometry).split_layers(real):
        hits = layer[layer > 0]
        thresholds.append(max(floor_mev, float(hits.min())) if hits.numel() else floor_mev)
    return thresholds


def energy_loss(energy: torch.Tensor, reference: torch.Tensor, *, tolerance: float) -> torch.Tensor:
    """Mean over showers of max(0, |log1p(energy) - log1p(reference)| - tolerance); energies (N,) in MeV.

    An L1 distance between log total energies with a dead zone: a translation may change a shower's
    total energy by a factor within exp(+-tolerance) at no cost (a real detector's calibration
    differs from its simulation by a few per cent), and pays linearly beyond.
    """
    distance = (torch.log1p(energy.clamp_min(0)) - torch.log1p(reference.clamp_min(0))).abs()
    return (distance - tolerance).clamp_min(0).mean()


def lsgan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017): mean (prediction - 1)^2 for ``real``, mean prediction^2 otherwise."""
    return (prediction - 1).square().mean() if real else prediction.square().mean()


# ---- layout --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerGroup:
    """Layers of one grid: their indices (increasing), rows x cols, and whether rows are periodic (alpha bins)."""

    layers: tuple[int, ...]
    rows: int
    cols: int
    cylindrical: bool

    @property
    def select(self) -> slice | list[int]:
        """Index of the group's layers along the padded view's layer axis."""
        first, last = self.layers[0], self.layers[-1]
        return slice(first, last + 1) if last - first + 1 == len(self.layers) else list(self.layers)


def layer_groups(geometry: str | _geometry.Geometry) -> tuple[LayerGroup, ...]:
    """The geometry's layers grouped by (rows, cols, kind), groups in order of first appearance."""
    geometry = _geometry.get(geometry)
    keys = [(layer.rows, layer.cols, layer.kind == "cylindrical") for layer in geometry.layers]
    return tuple(
        LayerGroup(tuple(i for i, k in enumerate(keys) if k == key), *key) for key in dict.fromkeys(keys)
    )


def halve_grid(size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(rows, cols) -> the stride (2 on axes of >= 4 cells, else 1) and the grid after a 3 x 3
    convolution padded by one cell with that stride: (3, 96) -> (1, 2), (3, 48); (6, 3) -> (2, 1), (3, 3)."""
    stride = tuple(2 if n >= 4 else 1 for n in size)
    return stride, tuple((n - 1) // s + 1 for n, s in zip(size, stride))


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Undo :func:`halve_grid` on the last two axes: (..., n_rows, n_cols) -> (..., *size).

    Along a halved axis, coarse cell j sits at fine cell 2j, the centre of the stride-2 convolution
    that made it; odd fine cells take the mean of their two neighbours (linear interpolation,
    ``F.interpolate(mode="bilinear", align_corners=True)`` for 2n - 1 fine cells) and the last cell
    of an even grid copies its neighbour. Nearest-neighbour upsampling would shift every coarse
    feature by half a fine cell, and showers decoded from them off their axis.
    """
    for dim, target in ((-2, size[0]), (-1, size[1])):
        n = x.shape[dim]
        if target != n:
            fine = torch.arange(target, device=x.device)
            low, high = fine // 2, ((fine + 1) // 2).clamp_max(n - 1)
            x = (x.index_select(dim, low) + x.index_select(dim, high)) * 0.5
    return x


def instance_norm(channels: int, size: tuple[int, int]) -> nn.Module:
    """Instance norm of (N, channels, rows, cols) grids of ``size``, without affine parameters (the
    reference's), as GroupNorm with one channel per group: the same normalisation, several times
    faster on the CPU; the identity on a grid of one cell (where it would zero every feature)."""
    return nn.GroupNorm(channels, channels, affine=False) if math.prod(size) > 1 else nn.Identity()


class GridConv(nn.Module):
    """3 x 3 convolution of a (N, C, rows, cols) grid, padded by one cell: zeros (no cell beyond the
    edge), circularly along the rows (alpha bins) of a cylindrical layer."""

    def __init__(self, in_channels: int, out_channels: int, *, cylindrical: bool,
                 stride: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.cylindrical = cylindrical
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=(0, 1) if cylindrical else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cylindrical:
            x = F.pad(x, (0, 0, 1, 1), mode="circular")
        return self.conv(x)


class GlobalCode(nn.Module):
    """Couples the branches: pooled features of every branch + layer log energies -> a shift per branch.

    ``forward(pooled_from, energies, add_to)``: ``pooled_from`` and ``add_to`` are one (N, C_g, h, w)
    tensor per branch (``in_channels`` and ``out_channels``), ``energies`` (N, n_layers); returns
    ``add_to`` with MLP(concat(means, energies)) broadcast over every branch's grid.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], n_layers: int, size: int) -> None:
        super().__init__()
        self.out_channels = tuple(out_channels)
        self.mlp = nn.Sequential(
            nn.Linear(sum(in_channels) + n_layers, size), nn.ReLU(), nn.Linear(size, sum(self.out_channels))
        )

    def forward(self, pooled_from: Sequence[torch.Tensor], energies: torch.Tensor,
                add_to: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        code = self.mlp(torch.cat([*(h.mean((-2, -1)) for h in pooled_from), energies], 1))
        return [h + c[:, :, None, None] for h, c in zip(add_to, code.split(self.out_channels, 1))]


def init_weights(module: nn.Module, generator: torch.Generator | None = None, *, std: float = 0.02) -> None:
    """The reference's initialisation: convolution and linear weights ~ N(0, std), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std, generator=generator)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _check_widths(owner: str, channels: Sequence[int], minimum: int) -> tuple[int, ...]:
    channels = tuple(channels)
    if len(channels) < minimum or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"{owner}: channels must be {minimum} or more positive ints, got {channels!r}")
    return channels


class LayeredNetwork(nn.Module):
    """Base of the layered networks: the layer groups, the split of the padded view into them, and the
    standardised layer log energies every network reads.

    The buffers ``energy_mean`` and ``energy_std`` ((L,), saved with the weights) standardise
    log1p(layer energy / MeV): :meth:`Translator.fit` sets them from the training showers
    (:meth:`set_energy_statistics`), so that per-cent shifts of a layer's energy are O(1) inputs that
    a network initialised at N(0, 0.02) and trained at Adam's 2e-4 can see within a few hundred steps.
    """

    def __init__(self, geometry: _geometry.Geometry, log_scale: float) -> None:
        super().__init__()
        self.groups = layer_groups(geometry)
        self.log_scale = float(log_scale)
        self.order = torch.tensor([i for g in self.groups for i in g.layers]).argsort().tolist()
        self.register_buffer("energy_mean", torch.zeros(geometry.n_layers))
        self.register_buffer("energy_std", torch.ones(geometry.n_layers))

    def set_energy_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """(L,) mean and standard deviation of log1p(layer energy / MeV) over the training showers."""
        self.energy_mean.copy_(mean)
        self.energy_std.copy_(std)

    def split(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(N, L, R, C) -> one (N, k, rows, cols) tensor per group and the (N, L) standardised layer log energies."""
        parts = [x[:, g.select, : g.rows, : g.cols] for g in self.groups]
        energies = torch.cat([torch.expm1(p.clamp_min(0) * self.log_scale).sum((-2, -1)) for p in parts], 1)
        return parts, (torch.log1p(energies[:, self.order]) - self.energy_mean) / self.energy_std

    def join(self, x: torch.Tensor, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """One (N, k, rows, cols) tensor per group -> (N, L, R, C) like ``x``, padding 0."""
        out = x.new_zeros(x.shape)
        for group, part in zip(self.groups, parts):
            out[:, group.select, : group.rows, : group.cols] = part
        return out


def energy_statistics(geometry: _geometry.Geometry, *images: torch.Tensor, floor: float = 0.1,
                      chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(L,) mean and standard deviation of log1p(layer energy / MeV) over the showers of all the
    (N, n_cells) MeV ``images``; deviations below ``floor`` (10% in energy) count as ``floor``."""
    sums = [
        torch.stack([layer.clamp_min(0).sum((-2, -1)) for layer in geometry.split_layers(part)], 1)
        for x in images for part in x.split(chunk)
    ]
    logs = torch.log1p(torch.cat(sums).double())
    return logs.mean(0).float(), logs.std(0, correction=0).clamp_min(floor).float()


# ---- generator -----------------------------------------------------------------------------------
class _ResnetBlock(nn.Module):
    def __init__(self, channels: int, size: tuple[int, int], cylindrical: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            GridConv(channels, channels, cylindrical=cylindrical), instance_norm(channels, size), nn.ReLU(),
            GridConv(channels, channels, cylindrical=cylindrical), instance_norm(channels, size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _Pointwise(nn.Linear):
    """1 x 1 convolution (N, C, rows, cols) -> (N, k, rows, cols) as a matrix product (oneDNN's 1 x 1
    convolution with few output channels is an order of magnitude slower on the CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, rows, cols = x.shape
        return (self.weight @ x.flatten(2) + self.bias[:, None]).view(n, -1, rows, cols)


class _ResnetBranch(nn.Module):
    """Encoder (stem + downsamplings), residual blocks and decoder of one layer group."""

    def __init__(self, group: LayerGroup, channels: tuple[int, ...], n_blocks: int) -> None:
        super().__init__()
        cyl, size = group.cylindrical, (group.rows, group.cols)
        k = len(group.layers)
        self.stem = nn.Sequential(
            GridConv(k, channels[0], cylindrical=cyl), instance_norm(channels[0], size), nn.ReLU()
        )
        self.position = nn.Parameter(torch.zeros(channels[0], *size))
        self.sizes = [size]
        self.down = nn.ModuleList()
        for c_in, c_out in zip(channels, channels[1:]):
            stride, after = halve_grid(self.sizes[-1])
            self.down.append(nn.Sequential(
                GridConv(c_in, c_out, cylindrical=cyl, stride=stride), instance_norm(c_out, after), nn.ReLU()
            ))
            self.sizes.append(after)
        self.blocks = nn.ModuleList(_ResnetBlock(channels[-1], self.sizes[-1], cyl) for _ in range(n_blocks))
        self.up = nn.ModuleList()
        for level in range(len(channels) - 1, 0, -1):
            c_in, c_out = channels[level], channels[level - 1]
            self.up.append(nn.Sequential(
                GridConv(c_in, c_out, cylindrical=cyl), instance_norm(c_out, self.sizes[level]), nn.ReLU()
            ))
        self.out = _Pointwise(channels[0], k)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x) + self.position]
        for down in self.down:
            features.append(down(features[-1]))
        return features

    def decode(self, h: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        for up, skip in zip(self.up, reversed(features[:-1])):
            h = upsample_to(up(h), skip.shape[-2:]) + skip
        return self.out(h)


class ResidualGenerator(LayeredNetwork):
    """Base of the generators: each branch (``branches``) has a ``position`` embedding and an ``out``
    layer whose output is added to the input, both zero at initialisation, so an untrained generator
    is the identity."""

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """N(0, 0.02) weights, zero biases, zero position embeddings and output weights (the identity map)."""
        init_weights(self, generator)
        for branch in self.branches:
            nn.init.zeros_(branch.position)
            nn.init.zeros_(branch.out.weight)


class LayeredResnetGenerator(ResidualGenerator):
    """ResNet generator (Johnson et al. 2016, CycleGAN's ``resnet_9blocks``) adapted to layered showers.

    ``forward(x)``: (N, L, R, C) x -> (N, L, R, C) raw output y = x + correction (padding 0); pass
    it through :meth:`ShowerCodec.suppress` to get the image. Per layer group: 3 x 3 stem + a learned
    per-cell embedding, ``len(channels) - 1`` stride-2 downsamplings, ``n_blocks`` residual blocks
    each after a :class:`GlobalCode`, conv + :func:`upsample_to` + the encoder's features of each
    finer grid, and a zero-initialised 1 x 1 output conv (the module's table compares the reference).

    Args:
        geometry: a preset name or Geometry.
        channels: widths at the full grid and after each downsampling.
        n_blocks: residual blocks at the coarsest grid.
        code_size: hidden width of the global coupling MLPs.
        log_scale: the codec's divisor (to read layer energies from x).
    """

    def __init__(self, geometry: str | _geometry.Geometry, *, channels: Sequence[int] = (8, 16, 16),
                 n_blocks: int = 2, code_size: int = 32, log_scale: float = 10.0) -> None:
        geometry = _geometry.get(geometry)
        super().__init__(geometry, log_scale)
        channels = _check_widths("LayeredResnetGenerator", channels, 1)
        for name, value in (("n_blocks", n_blocks), ("code_size", code_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "n_blocks" else 1):
                raise ValueError(f"LayeredResnetGenerator: {name} must be an int >= "
                                 f"{0 if name == 'n_blocks' else 1}, got {value!r}")
        self.branches = nn.ModuleList(_ResnetBranch(g, channels, n_blocks) for g in self.groups)
        widths = [channels[-1]] * len(self.groups)
        self.codes = nn.ModuleList(GlobalCode(widths, widths, geometry.n_layers, code_size) for _ in range(n_blocks))
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs, energies = self.split(x)
        features = [branch.encode(xg) for branch, xg in zip(self.branches, inputs)]
        h = [f[-1] for f in features]
        for i, code in enumerate(self.codes):
            h = [branch.blocks[i](hg) for branch, hg in zip(self.branches, code(h, energies, h))]
        outputs = [xg + branch.decode(hg, f) for branch, xg, hg, f in zip(self.branches, inputs, h, features)]
        return self.join(x, outputs)


# ---- discriminator -------------------------------------------------------------------------------
class _PatchBranch(nn.Module):
    def __init__(self, group: LayerGroup, channels: tuple[int, ...]) -> None:
        super().__init__()
        cyl, size = group.cylindrical, (group.rows, group.cols)
        convs, c_in = [], len(group.layers)
        for i, c_out in enumerate(channels):
            stride, after = halve_grid(size) if i < len(channels) - 1 else ((1, 1), size)
            layers = [GridConv(c_in, c_out, cylindrical=cyl, stride=stride)]
            layers += [instance_norm(c_out, after)] if i > 0 else []
            convs.append(nn.Sequential(*layers, nn.LeakyReLU(0.2)))
            c_in, size = c_out, after
        self.first, self.rest = convs[0], nn.Sequential(*convs[1:])
        self.out = GridConv(channels[-1], 1, cylindrical=cyl)


class LayeredPatchDiscriminator(LayeredNetwork):
    """PatchGAN discriminator (Isola et al. 2017) per layer group, coupled by a :class:`GlobalCode`.

    ``forward(x)``: (N, L, R, C) image -> (N, P) scores, the patches of every group concatenated.
    Per group: ``len(channels)`` 3 x 3 convs with LeakyReLU(0.2), stride 2 (on axes of >= 4 cells)
    for all but the last and instance norm for all but the first, as the reference's ``n_layers``
    discriminator; then the global code (pooled first-conv features, before any norm, and the layer
    log energies: the absolute energy scale that instance norm removes) is added, and a 3 x 3 conv
    gives one score per patch. Receptive field along an axis halved at every stride-2 conv:
    1 + 2 (2^k - 1 + 2^(k-1)) cells for k = len(channels) (11 for the default 2; 7 along an axis never halved).

    Args:
        geometry: a preset name or Geometry.
        channels: widths of the convs (reference: 64, 128, 256, 512).
        code_size: hidden width of the global coupling MLP.
        log_scale: the codec's divisor (to read layer energies from x).
    """

    def __init__(self, geometry: str | _geometry.Geometry, *, channels: Sequence[int] = (8, 16),
                 code_size: int = 32, log_scale: float = 10.0) -> None:
        geometry = _geometry.get(geometry)
        super().__init__(geometry, log_scale)
        channels = _check_widths("LayeredPatchDiscriminator", channels, 1)
        if not isinstance(code_size, int) or isinstance(code_size, bool) or code_size < 1:
            raise ValueError(f"LayeredPatchDiscriminator: code_size must be an int >= 1, got {code_size!r}")
        self.branches = nn.ModuleList(_PatchBranch(g, channels) for g in self.groups)
        n = len(self.groups)
        self.code = GlobalCode([channels[0]] * n, [channels[-1]] * n, geometry.n_layers, code_size)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """N(0, 0.02) weights, zero biases."""
        init_weights(self, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs, energies = self.split(x)
        first = [branch.first(xg) for branch, xg in zip(self.branches, inputs)]
        last = [branch.rest(h) for branch, h in zip(self.branches, first)]
        last = self.code(first, energies, last)
        return torch.cat([branch.out(h).flatten(1) for branch, h in zip(self.branches, last)], 1)
