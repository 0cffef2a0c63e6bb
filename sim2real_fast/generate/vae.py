"""ShowerVAE: a conditional variational autoencoder with a zero-inflated likelihood per cell.

Shapes and units: showers (N, n_cells) cell energies in MeV in the geometry's flat order, labels (N,)
into ``particles``, incident energies E_inc (N,) in GeV (MeV inside the formulas below).

The cell model (encoder, prior, decoder, preprocessing of the cells, drawing of hits) is
:class:`CellVAE`, shared with the two-stage ``flow-vae`` (``flow_vae.py``), which adds its layer
energies to the condition and replaces the total below by one energy per layer.

Model. A latent code z of ``latent`` dimensions and the condition c give, per cell i, a hit
probability p_i = sigmoid(l_i) and, for a hit, a normal N(mu_i, sigma_i) truncated to y >= y_min,i
of the cell's standardised log energy fraction y_i (preprocessing, below):

    p(E_i | z, c) = 1 - p_i                                  if E_i = 0 (no hit)
                    p_i TN(y_i; mu_i, sigma_i, y_min,i)      if E_i >= floor_i (a hit)

the cells independent given z; and the shower's total, t = (ln(E_tot / E_inc) - M_p(E_inc)) /
S_p(E_inc), normal N(mu_t, sigma_t). Sparsity is modelled explicitly (a Bernoulli per cell), and hit
energies never fall between 0 and the floor, where the data have none.

- condition c (n_cond = 1 + n_particles): 2 (ln E_inc - ln E_low) / (ln E_high - ln E_low) - 1 in
  [-1, 1] over the trained range (0 when low = high) and the one-hot particle.
- encoder q(z | E, c): a diagonal normal. Prior p(z | c): a mixture of ``prior_components`` diagonal
  normals whose weights, means and variances a small network computes from c (a conditional VAE's
  prior network, Sohn et al. 2015, with a mixture of normals as in Tomczak & Welling 2018). Under one
  N(0, 1) for every condition, prior draws for 1 GeV electrons land where the decoder was trained on
  100 GeV pions and the reverse; one learned normal per condition cannot follow a posterior with
  several modes (pions that shower early or late); a mixture can. KL: closed form for one
  component, else the one-sample estimate ln q(z | E, c) - ln p(z | c) at the reparameterised z.
- networks: MLPs with SiLU on the flat cells. Encoder (n_cells + n_cond) -> ``hidden`` -> 2 latent;
  decoder (latent + n_cond) -> reversed ``hidden`` -> 3 n_cells + 2 (l, mu, sigma per cell; mu_t,
  sigma_t); prior n_cond -> ``prior_hidden`` -> K (1 + 2 latent) (weights, means, log-variances).
  sigma = ``min_sigma`` + softplus (cells),
  1e-3 + softplus (total). No convolution: the flat view holds CaloGAN's 504 and CaloChallenge ds1's
  368 / 533 cells with no padding and samples fastest (``geometry.to_padded`` of a sample is 0
  outside ``padding_mask``).

Preprocessing (buffers from the training split, :meth:`ShowerVAE.prepare`, saved with the weights):

- a hit is a cell at or above its layer's floor: max(``threshold_mev``, the layer's smallest non-zero
  energy in the training showers), e.g. 20 / 60 / 40 MeV for CaloGAN's nominal digitisation, which
  suppresses cells below 2 sigma of their noise. Smaller energies count as no hit.
- hit energy: y_i = (ln(E_i / E_inc) - m_i) / s_i, the log fraction of the incident energy,
  standardised by the mean m_i and std s_i (>= 0.1) of the cell's hits (cells with fewer than 2
  hits: of all hits). Dividing by E_inc removes most of the energy dependence, the log turns 1e-6 to
  1 fractions into a unit-scale target, and a log-normal is the usual shape of a cell's spectrum.
  y_min,i = (ln(floor_i / E_inc) - m_i) / s_i.
- total: M_p(E) and S_p(E) (>= 0.01) are the mean and std of ln(E_tot / E_inc) over the training
  showers of particle p in 8 equal bins of the scaled log energy (the condition's first entry; a bin
  with fewer than 2 showers takes its particle's), linearly interpolated between the bins' centres
  (:meth:`ShowerVAE.total_moments`). The response's mean and spread depend on particle and energy
  (an electron's spread is a few per cent at high energy, a pion's tens of per cent; noise and
  pile-up raise the response of small showers): one scale for all, or one per particle, would ask
  the decoder for a mean far below the scale's resolution or leave the energy dependence to it; per
  particle and energy bin the target is about N(0, 1) everywhere.
- encoder input: (ln(1 + E_i / MeV) - a_i) / b_i, standardised per cell (b_i >= 0.1), negative
  energies counted as 0.
- start: the decoder's output biases are the training split's marginals (l_i = logit of the cell's
  hit rate, mu = 0, sigma = 1), its output weights are scaled by 0.1; the prior's last layer is 0 but
  for the components' means, drawn from N(0, 0.5^2) (identical components would stay identical).

Objective per shower (batch mean), the negative ELBO plus an energy term:

    nll + nll_t + beta_t KL(q(z | E, c) || p(z | c)) + energy_weight (ln(1 + E_hat/MeV) - ln(1 + E_tot/MeV))^2

- nll: :func:`zero_inflated_nll` at z drawn from q (reparameterised); nll_t: the total's normal. In
  nats of y and t (densities of the standardised views, not of MeV).
- KL annealing: beta_t = :func:`kl_beta` (``beta``, ``kl_warmup``): 0 at the first step, rising
  linearly step by step to ``beta`` after ``kl_warmup`` epochs (Bowman et al. 2016), so the decoder
  learns to use z before the KL pulls q toward the prior. Validation (early stopping) uses ``beta``.
- energy consistency: E_hat = sum_i p_i E[E_i | hit], the cells' expected total given z, with the
  truncated log-normal's mean (:func:`log_expected_energy`); E_tot the shower's true total of hits.
  The squared log ratio (ln(1 + E / MeV): defined for empty showers) keeps the cell model's energy
  scale on the data's, so that sampling rescales showers by factors near 1. ``energy_weight`` 10:
  a 10% mismatch costs 0.1 nats.

Sampling (:meth:`ShowerVAE.generate`): a component (Gumbel-max) and z from it; hit_i ~ Bernoulli(p_i);
for the hits only, y_i from the truncated normal by inversion, y = mu - sigma ndtri(u Phi((mu - y_min) /
sigma)), u ~ U(0, 1] (the argument of Phi clamped at -10, u Phi at 1e-30, so float32 stays finite); E_i
= E_inc exp(m_i + s_i y_i) (:meth:`CellVAE.draw_hits`). Then the shower is brought to its total T =
E_inc exp(M_p(E_inc) + S_p(E_inc) t), t ~ N(mu_t, sigma_t): every hit keeps its floor and its energy
above the floor is scaled by one factor, E_i' = floor_i + k (E_i - floor_i), k = (T - sum floor_i) /
sum (E_i - floor_i), clamped at k >= 0 (a shower whose hits' floors alone exceed T keeps them, and sums
above T); cells below ``threshold_mev`` read 0. Independent cells alone sum to a total whose spread is
that of the cells' independent fluctuations, not the detector's response; the common factor gives the
total its modelled distribution and keeps the drawn sparsity, and acting above the floor keeps every
hit at or above it (a plain factor below 1 would move hits below their floors, where the data have none).

Defaults: ``hidden`` (256, 256), ``latent`` 16, batch 256, Adam lr 1e-3 times ``lr_decay`` 0.95 per
epoch (0.21 lr at epoch 31: small late steps refine the precise outputs), at most 40 epochs, patience 5,
``kl_warmup`` 5, ``prior_components`` 8: on CaloGAN 0.46 M multiply-adds per sampled shower (the
decoder), 0.67 M per training shower forward (encoder, decoder, prior).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .. import geometry as _geometry
from .base import Generator, register

__all__ = [
    "CellVAE", "Hits", "ShowerVAE", "gaussian_kl", "kl_beta", "log_expected_energy", "log_ndtr",
    "mixture_log_density", "ndtr", "zero_inflated_nll",
]

_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
_SQRT_HALF = math.sqrt(0.5)
_TOTAL_MIN_SIGMA = 1e-3
_ENERGY_BINS = 8


def kl_beta(progress: float, *, beta: float, warmup: float) -> float:
    """The KL weight after ``progress`` epochs: beta x min(1, progress / warmup); ``warmup`` 0: beta throughout."""
    if warmup <= 0:
        return beta
    return beta * min(1.0, progress / warmup)


def ndtr(x: torch.Tensor) -> torch.Tensor:
    """Phi(x), the standard normal CDF, as erfc(-x / sqrt(2)) / 2: relative precision in the lower tail,
    where ``torch.special.ndtr`` (1 + erf) cancels to 0 (float32 below -5.5, float64 below -8.3)."""
    return 0.5 * torch.special.erfc(x * -_SQRT_HALF)


def log_ndtr(x: torch.Tensor) -> torch.Tensor:
    """ln Phi(max(x, -10)) by :func:`ndtr`: six times faster on CPU than ``torch.special.log_ndtr`` (forward and
    backward), exact above -10; below, ln Phi(-10) = -53.2, more than the true value. In the likelihood that
    caps the truncation's normaliser of a hit more than 10 sigma above its cell's predicted mean (the
    squared term then pulls the mean toward the hit); in the expected energy it drops the truncation's
    factor of such a cell."""
    return torch.log(ndtr(x.clamp_min(-10.0)))


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor,
                prior_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) || N(prior_mean, e^prior_logvar)) of diagonal normals (..., d) -> (...,), summed over d."""
    return 0.5 * (prior_logvar - logvar + (logvar.exp() + (mean - prior_mean).square()) / prior_logvar.exp()
                  - 1).sum(-1)


def mixture_log_density(z: torch.Tensor, log_weights: torch.Tensor, mean: torch.Tensor,
                        logvar: torch.Tensor) -> torch.Tensor:
    """ln p(z) of (B, d) points under B mixtures of K diagonal normals: (B, K) log weights (normalised),
    (B, K, d) means and log-variances -> (B,)."""
    per_component = -0.5 * ((z[:, None] - mean).square() / logvar.exp() + logvar + 2 * _HALF_LOG_TWO_PI).sum(-1)
    return (log_weights + per_component).logsumexp(1)


def zero_inflated_nll(hit: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, mu: torch.Tensor,
                      sigma: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """-log p of every shower (..., n_cells) -> (...,), summed over the cells.

    A cell without a hit: -log(1 - sigmoid(logits)) = softplus(logits). A hit: -log sigmoid(logits)
    - log TN(y; mu, sigma, lower), with the normal truncated below at ``lower``:
    ln TN = -(y - mu)^2 / (2 sigma^2) - ln sigma - ln(2 pi) / 2 - ln Phi((mu - lower) / sigma).
    ``y`` must be finite everywhere (its value on cells without a hit is ignored).
    """
    z = (y - mu) / sigma
    on = (F.softplus(-logits) + 0.5 * z.square() + sigma.log() + _HALF_LOG_TWO_PI
          + log_ndtr((mu - lower) / sigma))
    return torch.where(hit, on, F.softplus(logits)).sum(-1)


def log_expected_energy(logits: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor, lower: torch.Tensor,
                        mean: torch.Tensor, std: torch.Tensor, log_incident: torch.Tensor) -> torch.Tensor:
    """ln E[E_i] of every cell (..., n_cells) in ln MeV: ln p_i + ln E[E_i | hit].

    A hit has E = exp(log_incident + mean + std y), y ~ N(mu, sigma) truncated below at ``lower``, whose
    mean is exp(log_incident + mean + std mu + std^2 sigma^2 / 2) Phi((mu + std sigma^2 - lower) / sigma)
    / Phi((mu - lower) / sigma). ``log_incident`` broadcasts (e.g. (..., 1), ln of E_inc in MeV).
    """
    t = std * sigma.square()
    return (F.logsigmoid(logits) + log_incident + mean + std * (mu + 0.5 * t)
            + log_ndtr((mu + t - lower) / sigma) - log_ndtr((mu - lower) / sigma))


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)




def _check(owner: str, name: str, value, *, zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{owner}: {name} must be a finite number {'>=' if zero else '>'} 0, got {value!r}")
    return float(value)


class Hits(NamedTuple):
    """The hits :meth:`CellVAE.draw_hits` draws for B showers, before any rescaling."""

    rows: torch.Tensor  # (H,) int64 shower of each hit
    cols: torch.Tensor  # (H,) int64 cell of each hit
    above: torch.Tensor  # (H,) float32 energy above the cell's floor in MeV, E_i - floor_i >= 0
    logits: torch.Tensor  # (B, n_cells) the cells' hit logits l_i
    head: torch.Tensor  # (B, head_size) the decoder's outputs after the cells'


class CellVAE(Generator):
    """The cell model of the VAE generators (module docstring): encoder, conditional mixture prior and
    decoder of per-cell hit probabilities and truncated log-normal energies, their preprocessing and the
    drawing of hits. Not registered: a subclass adds the shower-level part through ``extra_condition``
    (features it appends to :meth:`condition` before every network) and ``head_size`` (decoder outputs
    per shower after the cells'), and implements ``prepare`` (calling :meth:`prepare_cells`),
    ``losses`` (with :meth:`cell_terms`) and ``generate`` (with :meth:`draw_hits`).

    Args: the keywords of :class:`ShowerVAE`, and ``hparams``: the subclass' own keywords (saved with them).
    """

    default_epochs = 40
    default_batch_size = 256
    default_patience = 5

    def __init__(
        self,
        geometry: str | _geometry.Geometry,
        *,
        particles: Sequence[str],
        latent: int,
        hidden: Sequence[int],
        beta: float,
        kl_warmup: float,
        energy_weight: float,
        lr: float,
        lr_decay: float,
        min_sigma: float,
        prior_hidden: int,
        prior_components: int,
        threshold_mev: float | Sequence[float],
        extra_condition: int,
        head_size: int,
        hparams: dict,
    ) -> None:
        hidden = list(hidden) if isinstance(hidden, (list, tuple)) else hidden
        threshold = threshold_mev if isinstance(threshold_mev, (int, float)) else list(threshold_mev)
        super().__init__(geometry, particles=particles, hparams=dict(
            latent=latent, hidden=hidden, beta=beta, kl_warmup=kl_warmup, energy_weight=energy_weight, lr=lr,
            lr_decay=lr_decay, min_sigma=min_sigma, prior_hidden=prior_hidden,
            prior_components=prior_components, threshold_mev=threshold, **hparams,
        ))
        owner = type(self).__name__
        if not (isinstance(latent, int) and not isinstance(latent, bool) and latent >= 1):
            raise ValueError(f"{owner}: latent must be an int >= 1, got {latent!r}")
        if not (isinstance(hidden, list) and hidden and all(isinstance(h, int) and h >= 1 for h in hidden)):
            raise ValueError(f"{owner}: hidden must be a non-empty list of ints >= 1, got {hidden!r}")
        for name, value in (("prior_hidden", prior_hidden), ("prior_components", prior_components)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"{owner}: {name} must be an int >= 1, got {value!r}")
        self.prior_components = prior_components
        self.beta = _check(owner, "beta", beta, zero=True)
        self.kl_warmup = _check(owner, "kl_warmup", kl_warmup, zero=True)
        self.energy_weight = _check(owner, "energy_weight", energy_weight, zero=True)
        self.lr = _check(owner, "lr", lr)
        self.lr_decay = _check(owner, "lr_decay", lr_decay)
        if self.lr_decay > 1:
            raise ValueError(f"{owner}: lr_decay must be in (0, 1], got {lr_decay!r}")
        self.min_sigma = _check(owner, "min_sigma", min_sigma)
        layers = self.geometry.layers
        values = [threshold] * len(layers) if isinstance(threshold, (int, float)) else threshold
        ok = len(values) == len(layers) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values)
        if not ok:
            raise ValueError(f"{owner}: threshold_mev must be a number >= 0 (MeV) or {len(layers)} of them "
                             f"(one per layer of {self.geometry.name!r}), got {threshold_mev!r}")
        n, self.latent, self.head_size = self.geometry.n_cells, latent, head_size
        sizes = torch.tensor([layer.n_cells for layer in layers])
        self.register_buffer("threshold", torch.tensor(values, dtype=torch.float32).repeat_interleave(sizes),
                             persistent=False)
        for buffer in ("input_mean", "input_std", "fraction_mean", "fraction_std", "floor"):
            self.register_buffer(buffer, torch.zeros(n))
        n_cond = 1 + len(self.particles) + extra_condition
        self.encoder = _mlp([n + n_cond, *hidden, 2 * latent])
        self.prior = _mlp([n_cond, prior_hidden, prior_components * (1 + 2 * latent)])
        self.decoder = _mlp([latent + n_cond, *hidden[::-1], 3 * n + head_size])

    # ---- preprocessing -------------------------------------------------------------------------
    def prepare_cells(self, images: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """Set the cells' buffers (floors, standardisations) from the training split ((N, n_cells) MeV, (N,)
        GeV) and the start of the decoder's cell outputs and of the prior; returns the (N, n_cells) hits."""
        thresholds = self.threshold[list(self.geometry.layer_offsets[:-1])].tolist()
        layer_floors = [max(t, float(part[part > 0].min()) if bool((part > 0).any()) else 0.0)
                        for t, part in zip(thresholds, self.geometry.split_layers(images))]
        sizes = torch.tensor([layer.n_cells for layer in self.geometry.layers])
        floor = torch.tensor(layer_floors).repeat_interleave(sizes).clamp_min(1e-3)
        hit = images >= floor
        y = torch.log(images.clamp_min(floor)) - torch.log(1000 * energy.float())[:, None]
        mean, std = _masked_moments(y, hit)
        x = torch.log1p(images.clamp_min(0))
        rate = hit.float().mean(0).clamp(1e-4, 1 - 1e-4)
        with torch.no_grad():
            for name, value in (("input_mean", x.mean(0)), ("input_std", x.std(0).clamp_min(0.1)),
                                ("fraction_mean", mean), ("fraction_std", std), ("floor", floor)):
                getattr(self, name).copy_(value)
            head = self.decoder[-1]
            head.weight.mul_(0.1)
            logits, mu, raw, _ = self._split(head.bias)
            logits.copy_(torch.logit(rate))
            mu.zero_()
            raw.fill_(math.log(math.expm1(1.0 - self.min_sigma)))
            self.prior[-1].weight.zero_(), self.prior[-1].bias.zero_()
            if self.prior_components > 1:  # distinct means break the components' symmetry
                k = self.prior_components
                self.prior[-1].bias[k:].view(k, 2, self.latent)[:, 0].normal_(0.0, 0.5)
        return hit

    def prior_parameters(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, n_cond) conditions -> the prior's log mixture weights (B, K) and its components' means and
        log-variances (B, K, latent) (log-variances clamped to [-12, 8])."""
        k = self.prior_components
        out = self.prior(c)
        mean, logvar = out[:, k:].unflatten(1, (k, 2, self.latent)).unbind(2)
        return F.log_softmax(out[:, :k], 1), mean, logvar.clamp(-12.0, 8.0)

    def _split(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The decoder's (..., 3 n_cells + head_size) output -> cell logits, mu, raw sigma (..., n_cells) and
        the head (..., head_size)."""
        n = self.geometry.n_cells
        return tuple(out.split([n, n, n, self.head_size], -1))

    def condition(self, labels: torch.Tensor, energy: torch.Tensor) -> torch.Tensor:
        """(B,) labels and (B,) GeV -> (B, 1 + n_particles): scaled log energy and one-hot particle."""
        low, high = self.trained_energy.float().log().unbind()
        width = high - low
        scaled = torch.where(width > 0, 2 * (energy.log() - low) / width.clamp_min(1e-12) - 1, 0.0)
        one_hot = F.one_hot(labels, len(self.particles)).to(energy.dtype)
        return torch.cat([scaled[:, None], one_hot], 1)

    # ---- training ------------------------------------------------------------------------------
    def begin_epoch(self, epoch: int) -> None:
        for group in self._optimizer.param_groups:
            group["lr"] = self.lr * self.lr_decay ** (epoch - 1)

    def kl_weight(self, progress: float | None) -> float:
        """beta_t after ``progress`` epochs (:func:`kl_beta`); None (validation): ``beta``."""
        return self.beta if progress is None else kl_beta(progress, beta=self.beta, warmup=self.kl_warmup)

    def cell_terms(self, images: torch.Tensor, energy: torch.Tensor, c: torch.Tensor,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cells' part of the objective of (B, n_cells) MeV showers at (B,) GeV under the network condition
        c (B, n_cond), z drawn from q with noise from ``generator``: nll (B,) (:func:`zero_inflated_nll`),
        the KL estimate (B,), ln E[E_i] (B, n_cells) in ln MeV (:func:`log_expected_energy`) and the head
        (B, head_size)."""
        x = (torch.log1p(images.clamp_min(0)) - self.input_mean) / self.input_std
        z_mean, z_logvar = self.encoder(torch.cat([x, c], 1)).chunk(2, 1)
        z_logvar = z_logvar.clamp(-12.0, 8.0)
        eps = self.draw_noise(torch.randn, z_mean.shape, generator).to(z_mean.device)
        z = z_mean + (0.5 * z_logvar).exp() * eps
        logits, mu, raw, head = self._split(self.decoder(torch.cat([z, c], 1)))
        sigma = self.min_sigma + F.softplus(raw)
        log_incident = torch.log(1000 * energy)[:, None]
        hit = images >= self.floor
        y = (torch.log(images.clamp_min(self.floor)) - log_incident - self.fraction_mean) / self.fraction_std
        lower = (torch.log(self.floor) - log_incident - self.fraction_mean) / self.fraction_std
        nll = zero_inflated_nll(hit, y, logits, mu, sigma, lower)
        log_weights, prior_mean, prior_logvar = self.prior_parameters(c)
        if self.prior_components == 1:
            kl = gaussian_kl(z_mean, z_logvar, prior_mean[:, 0], prior_logvar[:, 0])
        else:  # one-sample estimate at the drawn z: ln q(z | E, c) - ln p(z | c)
            log_q = -0.5 * (eps.square() + z_logvar + 2 * _HALF_LOG_TWO_PI).sum(1)
            kl = log_q - mixture_log_density(z, log_weights, prior_mean, prior_logvar)
        expected = log_expected_energy(logits, mu, sigma, lower, self.fraction_mean, self.fraction_std, log_incident)
        return nll, kl, expected, head

    # ---- sampling ------------------------------------------------------------------------------
    def draw_hits(self, c: torch.Tensor, energy: torch.Tensor, generator: torch.Generator) -> Hits:
        """Hits of B showers at (B,) GeV under the network condition c (B, n_cond): a prior component, z, the
        Bernoulli hits and their truncated log-normal energies (module docstring), drawn from ``generator``."""
        n, device = len(c), self.device
        log_weights, prior_mean, prior_logvar = self.prior_parameters(c)
        gumbel = -torch.log(-torch.log(torch.rand(log_weights.shape, generator=generator))).to(device)
        pick = torch.arange(n, device=device), (log_weights + gumbel).argmax(1)
        noise = torch.randn(n, self.latent, generator=generator).to(device)
        z = prior_mean[pick] + (0.5 * prior_logvar[pick]).exp() * noise
        logits, mu, raw, head = self._split(self.decoder(torch.cat([z, c], 1)))
        hit = torch.rand(logits.shape, generator=generator).to(device) < torch.sigmoid(logits)
        rows, cols = hit.nonzero(as_tuple=True)
        log_incident = torch.log(1000 * energy)
        mean, std = self.fraction_mean[cols], self.fraction_std[cols]
        mu, sigma = mu[rows, cols], self.min_sigma + F.softplus(raw[rows, cols])
        lower = (torch.log(self.floor[cols]) - log_incident[rows] - mean) / std
        above = ndtr(((mu - lower) / sigma).clamp_min(-10.0))
        u = 1.0 - torch.rand(len(rows), generator=generator).to(device)
        y = torch.maximum(mu - sigma * torch.special.ndtri((u * above).clamp_min(1e-30)), lower)
        above_floor = (torch.exp(log_incident[rows] + mean + std * y) - self.floor[cols]).clamp_min(0.0)  # rounding
        return Hits(rows, cols, above_floor, logits, head)


@register
class ShowerVAE(CellVAE):
    """Conditional VAE of showers with a per-cell hit probability and truncated log-normal energy.

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        particles: the class names of the labels (one-hot condition).
        latent: size of z.
        hidden: widths of the encoder's hidden layers (the decoder's, reversed).
        beta: the KL weight after the warm-up (1: the ELBO).
        kl_warmup: epochs over which the KL weight rises from 0 to ``beta`` (0: no warm-up).
        energy_weight: weight of the energy-consistency term; 0 turns it off.
        lr: Adam's learning rate in the first epoch.
        lr_decay: the learning rate's factor per epoch (epoch e trains at lr x lr_decay^(e - 1)).
        min_sigma: smallest sigma of a cell's standardised log energy (keeps the likelihood bounded).
        prior_hidden: width of the prior network's hidden layer.
        prior_components: normals in the prior's mixture (1: one normal, closed-form KL).
        threshold_mev: readout threshold of the samples (MeV), one number or one per layer: a cell
            below it reads 0; also the smallest floor of a hit.
    """

    name = "vae"
    summary = "conditional VAE, MLP on cells, per-cell hit probability and truncated log-normal energy"

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
    ) -> None:
        super().__init__(
            geometry, particles=particles, latent=latent, hidden=hidden, beta=beta, kl_warmup=kl_warmup,
            energy_weight=energy_weight, lr=lr, lr_decay=lr_decay, min_sigma=min_sigma, prior_hidden=prior_hidden,
            prior_components=prior_components, threshold_mev=threshold_mev, extra_condition=0, head_size=2,
            hparams={},
        )
        self.register_buffer("total_table", torch.tensor([0.0, 1.0]).repeat(len(self.particles), _ENERGY_BINS, 1))

    # ---- preprocessing -------------------------------------------------------------------------
    def prepare(self, images: torch.Tensor, labels: torch.Tensor, energy: torch.Tensor) -> None:
        hit = self.prepare_cells(images, energy)
        log_incident = torch.log(1000 * energy.float())[:, None]
        total = torch.where(hit, images, 0).sum(1, keepdim=True)
        table = self._total_table(torch.log(total.clamp_min(1e-3)) - log_incident, total > 0, labels,
                                  self.condition(labels, energy.float())[:, 0])
        with torch.no_grad():
            self.total_table.copy_(table)
            total_mu, total_raw = self._split(self.decoder[-1].bias)[3].unbind(-1)
            total_mu.zero_()
            total_raw.fill_(math.log(math.expm1(1.0 - _TOTAL_MIN_SIGMA)))

    def _total_table(self, log_ratio: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor,
                     scaled: torch.Tensor) -> torch.Tensor:
        """(n_particles, bins, 2) mean and std (>= 0.01) of the (N, 1) ln(E_tot / E_inc) where ``valid``, per
        particle and bin of the scaled log energy; a bin with fewer than 2 showers gets its particle's."""
        particles, bins = len(self.particles), _ENERGY_BINS
        index = labels * bins + ((scaled + 1) * bins / 2).long().clamp(0, bins - 1)
        by_particle = F.one_hot(labels, particles).bool() & valid
        by_bin = F.one_hot(index, particles * bins).bool() & valid
        particle_moments = torch.stack(_masked_moments(log_ratio.expand_as(by_particle), by_particle, floor=0.01), 1)
        bin_moments = torch.stack(_masked_moments(log_ratio.expand_as(by_bin), by_bin, floor=0.01), 1)
        few = (by_bin.sum(0) < 2)[:, None]
        return torch.where(few, particle_moments.repeat_interleave(bins, 0), bin_moments).view(particles, bins, 2)

    def total_moments(self, labels: torch.Tensor, scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """M_p(E) and S_p(E) of (B,) labels at (B,) scaled log energies (the condition's first column):
        ``total_table`` linearly interpolated between the bins' centres, constant beyond the outer ones."""
        bins = _ENERGY_BINS
        position = ((scaled + 1) * bins / 2 - 0.5).clamp(0, bins - 1)
        left = position.floor().long().clamp_max(bins - 2)
        weight = (position - left)[:, None]
        flat = self.total_table.view(-1, 2)
        moments = (1 - weight) * flat[labels * bins + left] + weight * flat[labels * bins + left + 1]
        return moments[:, 0], moments[:, 1]

    # ---- training ------------------------------------------------------------------------------
    def losses(self, images: torch.Tensor, labels: torch.Tensor, energy: torch.Tensor, *,
               progress: float | None, generator: torch.Generator) -> dict[str, torch.Tensor]:
        c = self.condition(labels, energy)
        nll, kl, expected, head = self.cell_terms(images, energy, c, generator)
        total_mu, total_sigma = head[:, :1], _TOTAL_MIN_SIGMA + F.softplus(head[:, 1:])
        log_incident = torch.log(1000 * energy)[:, None]
        total = torch.where(images >= self.floor, images, 0).sum(1, keepdim=True)
        total_mean, total_std = self.total_moments(labels, c[:, 0])
        t = (torch.log(total.clamp_min(1e-3)) - log_incident - total_mean[:, None]) / total_std[:, None]
        total_nll = 0.5 * ((t - total_mu) / total_sigma).square() + total_sigma.log() + _HALF_LOG_TWO_PI
        total_nll = torch.where(total > 0, total_nll, 0).squeeze(1)
        energy_term = (F.softplus(expected.logsumexp(1)) - torch.log1p(total.squeeze(1))).square()
        beta = self.kl_weight(progress)
        loss = (nll + total_nll + beta * kl + self.energy_weight * energy_term).mean()
        return {"loss": loss, "nll": nll.detach().mean(), "total_nll": total_nll.detach().mean(),
                "kl": kl.detach().mean(), "energy": energy_term.detach().mean(), "beta": torch.tensor(beta)}

    # ---- sampling ------------------------------------------------------------------------------
    def generate(self, labels: torch.Tensor, energy: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, device = len(labels), self.device
        c = self.condition(labels, energy)
        rows, cols, above_floor, _, head = self.draw_hits(c, energy, generator)
        floor = self.floor[cols]
        sums = torch.zeros(2, n, device=device).index_put_((torch.zeros_like(rows), rows), above_floor, accumulate=True)
        sums.index_put_((torch.ones_like(rows), rows), floor, accumulate=True)
        noise = torch.randn(n, generator=generator).to(device)
        t = head[:, 0] + (_TOTAL_MIN_SIGMA + F.softplus(head[:, 1])) * noise
        total_mean, total_std = self.total_moments(labels, c[:, 0])
        total = torch.exp(torch.log(1000 * energy) + total_mean + total_std * t)
        scale = ((total - sums[1]) / sums[0].clamp_min(1e-30)).clamp_min(0.0)
        images = torch.zeros(n, self.geometry.n_cells, device=device)
        images[rows, cols] = floor + above_floor * scale[rows]
        return images.masked_fill_(images < self.threshold, 0.0)


def _masked_moments(values: torch.Tensor, mask: torch.Tensor, *,
                    floor: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std (>= ``floor``) of (N, K) ``values`` where ``mask``; columns with fewer than
    2 entries get the moments of all masked entries (0 and 1 when there are fewer than 2)."""
    count = mask.sum(0)
    selected = values[mask]
    overall = (selected.mean(), selected.std()) if len(selected) > 1 else (torch.tensor(0.0), torch.tensor(1.0))
    mean = torch.where(mask, values, 0).sum(0) / count.clamp_min(1)
    std = (torch.where(mask, (values - mean).square(), 0).sum(0) / (count - 1).clamp_min(1)).sqrt()
    few = count < 2
    return torch.where(few, overall[0], mean), torch.where(few, overall[1], std).clamp_min(floor)
