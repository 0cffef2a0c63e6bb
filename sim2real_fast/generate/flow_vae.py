"""FlowVAE: two stages, a conditional normalising flow of the layer energies and the VAE's cells given them.

The split of CaloFlow (Krause & Shih 2021) and CaloINN (Ernst et al. 2023): how much energy each layer
gets is a low-dimensional, strongly correlated distribution that a flow models exactly; where in the
layer it goes is the cell model of :class:`~sim2real_fast.generate.vae.ShowerVAE` (``vae.py``), here
told the layer energies. Shapes and units as ``vae.py``: showers (N, n_cells) MeV, labels (N,),
incident energies E_inc (N,) GeV (MeV in the formulas); L = the geometry's number of layers.

Stage 1, layer energies. E_l is the sum of the shower's hits in layer l (cells at or above their
floor, as the VAE's), delta_l the layer's floor (the smallest energy of a hit in it). The flow's
variable is

    y_l = (ln(E'_l / E_inc) - a_l) / b_l,    E'_l = E_l if E_l > 0, else delta_l 2^-(1 - u), u ~ U[0, 1)

with a_l, b_l (>= 0.1) the mean and std over the training split (at u = 1/2). An empty layer has no
logarithm, and a point mass would give the flow an unbounded density to chase: uniform
dequantisation spreads the empty layers over [delta_l / 2, delta_l), just below the smallest energy
of a layer with a hit (its floor), so the map stays invertible: a drawn E'_l < delta_l is an empty
layer. The flow: zuko's NSF (monotonic rational-quadratic splines, Durkan et al. 2019) of
``flow_transforms`` transforms with ``flow_bins`` bins on [-5, 5] and masked hyper-networks of widths
``flow_hidden``, over y (L) in the context c = (scaled log E_inc, one-hot particle), the VAE's
condition; its base is N(0, I). Each transform is a coupling (zuko's ``passes=2``): half of the
layers, in an order that alternates between transforms, given c, the other half given them as well.
Inverting it (sampling) takes two hyper-network passes, where a fully autoregressive transform takes
L (45 on CaloChallenge ds2 and ds3).

Stage 2, shapes. The VAE's cell model (:class:`~sim2real_fast.generate.vae.CellVAE`) with the
condition (c, y): encoder, prior and decoder see the standardised layer energies, the data's
(dequantised the same way) in training, the flow's draws in sampling. It has no total head; its
energy term compares layer by layer, the mean over layers of (ln(1 + E_hat_l/MeV) - ln(1 + E_l/MeV))^2
with E_hat_l the expected energy of layer l's cells.

Objective per shower (batch mean), one sum for :meth:`Generator.fit`'s loop:

    flow_nll + nll + beta_t KL + energy_weight energy

flow_nll = -ln p(y | c) in nats of y; the rest as ``vae.py``. The stages share no parameter (the VAE
is conditioned on the data's y, not the flow's), so one Adam over the sum trains each on its own
terms, with one learning-rate schedule; early stopping picks one epoch for both by the summed
validation loss, which the VAE's hundreds of cells dominate.

Sampling (:meth:`FlowVAE.generate`): eps ~ N(0, I) from the sample's generator, y = the flow's
inverse at eps, clamped to the range of the training split's y (so that a tail draw never gives a
layer more of E_inc, or less, than a training shower had), E'_l = E_inc exp(a_l + b_l y_l), a layer
with E'_l < delta_l empty (:meth:`FlowVAE.draw_layers`). Then the VAE's hits given (c, y)
(:meth:`CellVAE.draw_hits`), rescaled layer by layer as ShowerVAE rescales the shower: every hit keeps
its floor and its energy above the floor is scaled by k_l = (E'_l - sum floor_i) / sum (E_i - floor_i).
Where the hits' floors alone exceed E'_l (more hits than the layer's energy can hold: a little energy
spread over many cells), the layer keeps its floor(E'_l / delta_l) hits of most energy above the
floor, so k_l >= 0; a layer the flow leaves empty loses all its hits. A non-empty layer where the
VAE drew no hit gets E'_l in its most probable cell (largest hit logit). Every layer's energy is so
the flow's draw.

Defaults: the VAE's, and ``flow_transforms`` 3, ``flow_hidden`` (64, 64), ``flow_bins`` 8: on CaloGAN
(L = 3) a draw evaluates 3 x 2 hyper-networks, 0.05 M multiply-adds per shower beside the decoder's
0.46 M, but the splines' element-wise work per pass makes the flow a sizeable share of the sampling
time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from .. import geometry as _geometry
from .base import register
from .vae import CellVAE

__all__ = ["FlowVAE"]

_INSTALL_HINT = 'pip install "sim2real_fast[generate]"'


def _zuko():
    """The zuko package, or an ImportError with the install hint."""
    try:
        import zuko
    except ImportError as error:
        raise ImportError(f"FlowVAE needs zuko (normalising flows): {_INSTALL_HINT} ({error})") from error
    return zuko


@register
class FlowVAE(CellVAE):
    """Two-stage generator: a conditional spline flow of the layer energies, the VAE's cells given them.

    Args:
        geometry, particles, latent, hidden, beta, kl_warmup, energy_weight, lr, lr_decay, min_sigma,
            prior_hidden, prior_components, threshold_mev: as :class:`~sim2real_fast.generate.ShowerVAE`
            (``energy_weight``: of the per-layer energy term).
        flow_transforms: autoregressive spline transforms of the flow.
        flow_hidden: widths of each transform's hidden layers.
        flow_bins: bins of each spline.

    Raises:
        ImportError: zuko is not installed (install hint: ``pip install "sim2real_fast[generate]"``).
    """

    name = "flow-vae"
    summary = "two stages: a conditional spline flow of the layer energies, the VAE's cells given them"

    def __init__(
        self,
        geometry: str | _geometry.Geometry = "calogan",
        *,
        particles: Sequence[str] = ("e+", "gamma", "pi+"),
        latent: int = 16,
        hidden: Sequence[int] = (256, 256),
        beta: float = 1.0,
        kl_warmup: float = 5.0,
        energy_weight: float = 10.0,
        lr: float = 1e-3,
        lr_decay: float = 0.95,
        min_sigma: float = 0.05,
        prior_hidden: int = 64,
        prior_components: int = 8,
        threshold_mev: float | Sequence[float] = 1.0,
        flow_transforms: int = 3,
        flow_hidden: Sequence[int] = (64, 64),
        flow_bins: int = 8,
    ) -> None:
        zuko = _zuko()
        flow_hidden = list(flow_hidden) if isinstance(flow_hidden, (list, tuple)) else flow_hidden
        n_layers = _geometry.get(geometry).n_layers
        super().__init__(
            geometry, particles=particles, latent=latent, hidden=hidden, beta=beta, kl_warmup=kl_warmup,
            energy_weight=energy_weight, lr=lr, lr_decay=lr_decay, min_sigma=min_sigma, prior_hidden=prior_hidden,
            prior_components=prior_components, threshold_mev=threshold_mev, extra_condition=n_layers, head_size=0,
            hparams=dict(flow_transforms=flow_transforms, flow_hidden=flow_hidden, flow_bins=flow_bins),
        )
        for name, value in (("flow_transforms", flow_transforms), ("flow_bins", flow_bins)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"FlowVAE: {name} must be an int >= 1, got {value!r}")
        if not (isinstance(flow_hidden, list) and flow_hidden
                and all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in flow_hidden)):
            raise ValueError(f"FlowVAE: flow_hidden must be a non-empty list of ints >= 1, got {flow_hidden!r}")
        layers = self.geometry.layers
        self._layer_sizes = [layer.n_cells for layer in layers]
        self._layer_starts = list(self.geometry.layer_offsets[:-1])
        self.register_buffer("cell_layer", torch.arange(n_layers).repeat_interleave(torch.tensor(self._layer_sizes)),
                             persistent=False)
        self.register_buffer("layer_mean", torch.zeros(n_layers))
        self.register_buffer("layer_std", torch.ones(n_layers))
        #: (2, L) smallest and largest y of the training split; draws are clamped to it
        self.register_buffer("layer_range", torch.tensor([-5.0, 5.0]).repeat_interleave(n_layers).view(2, n_layers))
        self.flow = zuko.flows.NSF(features=n_layers, context=1 + len(self.particles), transforms=flow_transforms,
                                   hidden_features=flow_hidden, bins=flow_bins, passes=2)

    # ---- layer energies ----------------------------------------------------------------------------
    def layer_sums(self, images: torch.Tensor) -> torch.Tensor:
        """(B, n_cells) MeV -> (B, L) MeV: the energy of each layer's hits (cells at or above their floor)."""
        hits = torch.where(images >= self.floor, images, 0.0)
        return hits.new_zeros(len(hits), len(self._layer_sizes)).index_add_(1, self.cell_layer, hits)

    def layer_floor(self) -> torch.Tensor:
        """(L,) MeV: delta_l, the floor of a hit in each layer (set by :meth:`prepare`)."""
        return self.floor[self._layer_starts]

    def _log_fraction(self, layers: torch.Tensor, energy: torch.Tensor, u: torch.Tensor | float) -> torch.Tensor:
        """ln(E'_l / E_inc) (B, L) of (B, L) layer energies in MeV at (B,) GeV, empty layers dequantised by u."""
        empty = self.layer_floor() * torch.exp2(-(1.0 - torch.as_tensor(u, dtype=layers.dtype)))
        return torch.log(torch.where(layers > 0, layers, empty)) - torch.log(1000 * energy)[:, None]

    def standardised(self, layers: torch.Tensor, energy: torch.Tensor, u: torch.Tensor | float) -> torch.Tensor:
        """y (B, L) of (B, L) layer energies in MeV at (B,) GeV, empty layers dequantised by u in [0, 1)."""
        return (self._log_fraction(layers, energy, u) - self.layer_mean) / self.layer_std

    def draw_layers(self, labels: torch.Tensor, energy: torch.Tensor,
                    generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1 for (B,) labels at (B,) GeV: y (B, L) drawn from the flow (noise from ``generator``) and
        clamped to ``layer_range``, and the layer energies (B, L) in MeV it stands for, 0 for an empty layer."""
        c = self.condition(labels, energy)
        eps = torch.randn(len(c), len(self._layer_sizes), generator=generator).to(self.device)
        y = self.flow(c).transform.inv(eps)
        y = torch.minimum(torch.maximum(y, self.layer_range[0]), self.layer_range[1])
        layers = 1000 * energy[:, None] * torch.exp(self.layer_mean + self.layer_std * y)
        return y, torch.where(layers >= self.layer_floor(), layers, 0.0)

    # ---- training ----------------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, labels: torch.Tensor, energy: torch.Tensor) -> None:
        self.prepare_cells(images, energy)
        layers = self.layer_sums(images)
        middle = self._log_fraction(layers, energy.float(), 0.5)
        mean, std = middle.mean(0), middle.std(0).clamp_min(0.1)
        low, high = ((self._log_fraction(layers, energy.float(), 0.0) - mean) / std).aminmax(dim=0)
        with torch.no_grad():
            for name, value in (("layer_mean", mean), ("layer_std", std), ("layer_range", torch.stack([low, high]))):
                getattr(self, name).copy_(value)

    def losses(self, images: torch.Tensor, labels: torch.Tensor, energy: torch.Tensor, *,
               progress: float | None, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.condition(labels, energy)
        layers = self.layer_sums(images)
        u = self.draw_noise(torch.rand, layers.shape, generator).to(layers.device)
        y = self.standardised(layers, energy, u)
        flow_nll = -self.flow(c).log_prob(y)
        nll, kl, expected, _ = self.cell_terms(images, energy, torch.cat([c, y], 1), generator)
        expected = torch.stack([part.logsumexp(1) for part in expected.split(self._layer_sizes, 1)], 1)
        energy_term = (F.softplus(expected) - torch.log1p(layers)).square().mean(1)
        beta = self.kl_weight(progress)
        loss = (flow_nll + nll + beta * kl + self.energy_weight * energy_term).mean()
        return {"loss": loss, "flow_nll": flow_nll.detach().mean(), "nll": nll.detach().mean(),
                "kl": kl.detach().mean(), "energy": energy_term.detach().mean(), "beta": torch.tensor(beta)}

    # ---- sampling ----------------------------------------------------------------------------------
    def generate(self, labels: torch.Tensor, energy: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, n_layers, device = len(labels), len(self._layer_sizes), self.device
        y, target = self.draw_layers(labels, energy, generator)
        c = torch.cat([self.condition(labels, energy), y], 1)
        rows, cols, above, logits, _ = self.draw_hits(c, energy, generator)
        group = rows * n_layers + self.cell_layer[cols]
        target = target.flatten()
        capacity = torch.floor(target / self.layer_floor().repeat(n))  # hits whose floors fit into the target
        keep = self._strongest(group, above, capacity)
        rows, cols, above, group = rows[keep], cols[keep], above[keep], group[keep]
        floor = self.floor[cols]
        sums = torch.zeros(2, n * n_layers, device=device)
        sums[0].index_add_(0, group, above)
        sums[1].index_add_(0, group, floor)
        scale = ((target - sums[1]) / sums[0].clamp_min(1e-30)).clamp_min(0.0)
        images = torch.zeros(n, self.geometry.n_cells, device=device)
        images[rows, cols] = floor + above * scale[group]
        missing = ((target > 0) & (sums[1] == 0)).nonzero().squeeze(1)  # a layer with energy but no hit
        if len(missing):
            row, layer = missing // n_layers, missing % n_layers
            best = logits[row].masked_fill(self.cell_layer != layer[:, None], -math.inf).argmax(1)
            images[row, best] = target[missing]
        return images.masked_fill_(images < self.threshold, 0.0)

    @staticmethod
    def _strongest(group: torch.Tensor, above: torch.Tensor, capacity: torch.Tensor) -> torch.Tensor:
        """(H,) bool: keep every hit of a group (shower and layer) with at most ``capacity`` hits, else the
        group's ``capacity`` hits of most energy above their floor (ties: the first)."""
        count = torch.zeros_like(capacity).index_add_(0, group, torch.ones_like(above))
        inside = (count > capacity)[group].nonzero().squeeze(1)
        keep = torch.ones(len(group), dtype=torch.bool, device=group.device)
        if len(inside):
            order = torch.argsort(above[inside], descending=True, stable=True)
            order = order[torch.argsort(group[inside][order], stable=True)]
            ranked = group[inside][order]
            rank = torch.arange(len(ranked), device=group.device) - torch.searchsorted(ranked, ranked)
            keep[inside[order[rank >= capacity[ranked]]]] = False
        return keep
