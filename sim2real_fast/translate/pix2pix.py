"""Pix2Pix (Isola et al., CVPR 2017) from simulated to real showers, trained on paired showers.

A U-Net generator (:class:`LayeredUnetGenerator`) and a conditional PatchGAN discriminator
(:class:`ConditionalPatchDiscriminator`) that scores (input, output) pairs. Every step, as the reference
(junyanz/pytorch-CycleGAN-and-pix2pix, ``Pix2PixModel.optimize_parameters``):

- fake = G(sim), zero-suppressed (:meth:`~.networks.ShowerCodec.suppress`);
- discriminator: 0.5 (BCE(D(sim, fake), 0) + BCE(D(sim, real), 1)); one Adam step;
- generator, discriminator frozen: BCE(D(sim, fake), 1) + ``lambda_l1`` x L1(fake, real) + the
  energy term; one Adam step.

Pairs. Row i of ``sim`` and of ``real`` must be the same shower seen by the two detectors. The
simulator makes such pairs (:func:`sim2real_fast.simulate.paired_showers`: the same events with the
same particle, energy, shower-physics draws and, as far as the residuals allow, the same sampling and
readout draws, under two sets of detector effects). Real pairs need an experiment that knows each
real shower's true content, e.g. test-beam data of a known particle and energy, simulated event by
event; collision data give no pairs (use an unpaired translator such as
:class:`~.cyclegan.CycleGAN`). :meth:`~.base.Translator.fit` keeps the pairs aligned (one epoch
order for both) and refuses sim and real of different lengths.

BCE is taken on the discriminator's logits (the reference's ``vanilla`` GAN mode,
``BCEWithLogitsLoss``), L1 on the networks' view x = log1p(E / MeV) / ``log_scale`` averaged over the
real cells (:meth:`~.networks.ShowerCodec.l1`). The energy term (not in the reference) is
``energy_weight`` x :func:`~.networks.energy_loss` of the translation's total energy against its
input's, with ``energy_tolerance`` (as :class:`~.cyclegan.CycleGAN`).

Defaults, the reference's and ours:

===============================  ============================  ====================================
                                 reference                     here
===============================  ============================  ====================================
generator                        unet_256: 8 stride-2 4 x 4    :class:`LayeredUnetGenerator`
                                 convs, ngf 64, concatenated   ``channels`` (8, 16, 32, 32): 3
                                 skips at every level          halvings per layer group
                                                               (:func:`~.networks.halve_grid`),
                                                               concatenated skips at every level
norm / dropout                   batch norm / dropout 0.5 in   instance norm / none: a translation
                                 the 3 innermost up-steps,     is deterministic (eval mode)
                                 kept at test time
output                           tanh                          x + a zero-initialised 1 x 1
                                                               correction (untrained: identity)
discriminator                    70 x 70 PatchGAN on           :class:`ConditionalPatchDiscriminator`
                                 (A, B) concatenated, ndf 64   on (sim, image) concatenated per
                                                               layer group, ``discriminator_channels``
                                                               (8, 16)
GAN loss                         vanilla (BCE with logits)     vanilla (BCE with logits)
lambda_L1                        100                           ``lambda_l1`` 100
image pool                       0                             none
Adam                             lr 2e-4, betas (0.5, 0.999)   ``lr`` 2e-4, ``beta1`` 0.5, 0.999
schedule                         100 epochs at lr + 100        ``decay_fraction`` 0.5
                                 decaying linearly             (:func:`~.base.linear_decay`)
batch size                       1                             64 (instance norm: per shower anyway)
===============================  ============================  ====================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import geometry as _geometry
from .base import Translator, check_number, register
from .networks import (
    GlobalCode, GridConv, LayerGroup, LayeredNetwork, ResidualGenerator, energy_loss, halve_grid, init_weights,
    instance_norm, upsample_to,
)

__all__ = ["ConditionalPatchDiscriminator", "LayeredUnetGenerator", "Pix2Pix", "vanilla_gan_loss"]


def vanilla_gan_loss(prediction: torch.Tensor, real: bool) -> torch.Tensor:
    """The original GAN loss on logits: mean BCE(sigmoid(prediction), 1 if ``real`` else 0)."""
    target = torch.ones_like(prediction) if real else torch.zeros_like(prediction)
    return F.binary_cross_entropy_with_logits(prediction, target)


def _widths(owner: str, channels: Sequence[int], minimum: int) -> tuple[int, ...]:
    channels = tuple(channels)
    if len(channels) < minimum or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
        raise ValueError(f"{owner}: channels must be {minimum} or more positive ints, got {channels!r}")
    return channels


def _code_size(owner: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: code_size must be an int >= 1, got {value!r}")
    return value


# ---- generator -----------------------------------------------------------------------------------
class _UnetBranch(nn.Module):
    """Encoder, decoder with concatenated skips, and output of one layer group."""

    def __init__(self, group: LayerGroup, channels: tuple[int, ...]) -> None:
        super().__init__()
        cyl, size = group.cylindrical, (group.rows, group.cols)
        k = len(group.layers)
        self.stem = GridConv(k, channels[0], cylindrical=cyl)
        self.position = nn.Parameter(torch.zeros(channels[0], *size))
        self.sizes = [size]
        self.down = nn.ModuleList()
        for c_in, c_out in zip(channels, channels[1:]):
            stride, after = halve_grid(self.sizes[-1])
            self.down.append(nn.Sequential(
                nn.LeakyReLU(0.2), GridConv(c_in, c_out, cylindrical=cyl, stride=stride), instance_norm(c_out, after)
            ))
            self.sizes.append(after)
        #: up[i] maps cat(upsampled level i + 1, encoder level i) to level i, finest last
        self.up = nn.ModuleList(
            nn.Sequential(nn.ReLU(), GridConv(channels[i + 1] + channels[i], channels[i], cylindrical=cyl),
                          instance_norm(channels[i], self.sizes[i]))
            for i in range(len(channels) - 2, -1, -1)
        )
        self.out = nn.Conv2d(channels[0], k, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [self.stem(x) + self.position]
        for down in self.down:
            features.append(down(features[-1]))
        return features

    def decode(self, h: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        for up, skip in zip(self.up, reversed(features[:-1])):
            h = up(torch.cat([upsample_to(h, skip.shape[-2:]), skip], 1))
        return self.out(F.relu(h))


class LayeredUnetGenerator(ResidualGenerator):
    """U-Net generator (Ronneberger et al. 2015; pix2pix's ``unet_256``) adapted to layered showers.

    ``forward(x)``: (N, L, R, C) x -> (N, L, R, C) raw output y = x + correction (padding 0); pass it
    through :meth:`~.networks.ShowerCodec.suppress` to get the image. Per layer group: a 3 x 3 stem +
    a learned per-cell embedding, ``len(channels) - 1`` blocks of LeakyReLU(0.2), 3 x 3 conv with the
    stride of :func:`~.networks.halve_grid` and instance norm; at the coarsest grid a
    :class:`~.networks.GlobalCode` couples the groups (and reads the layer energies); each decoder step
    upsamples (:func:`~.networks.upsample_to`) to the next finer grid, concatenates the encoder's
    features of that grid (the U-Net skip) and applies ReLU, 3 x 3 conv and instance norm; a
    zero-initialised 1 x 1 conv gives the correction.

    Args:
        geometry: a preset name or Geometry.
        channels: widths at the full grid and after each downsampling (two or more).
        code_size: hidden width of the global coupling MLP.
        log_scale: the codec's divisor (to read layer energies from x).
    """

    def __init__(self, geometry: str | _geometry.Geometry, *, channels: Sequence[int] = (8, 16, 32, 32),
                 code_size: int = 32, log_scale: float = 10.0) -> None:
        geometry = _geometry.get(geometry)
        super().__init__(geometry, log_scale)
        channels = _widths("LayeredUnetGenerator", channels, 2)
        _code_size("LayeredUnetGenerator", code_size)
        self.branches = nn.ModuleList(_UnetBranch(g, channels) for g in self.groups)
        widths = [channels[-1]] * len(self.groups)
        self.code = GlobalCode(widths, widths, geometry.n_layers, code_size)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs, energies = self.split(x)
        features = [branch.encode(xg) for branch, xg in zip(self.branches, inputs)]
        bottom = [f[-1] for f in features]
        bottom = self.code(bottom, energies, bottom)
        outputs = [xg + branch.decode(h, f) for branch, xg, h, f in zip(self.branches, inputs, bottom, features)]
        return self.join(x, outputs)


# ---- discriminator -------------------------------------------------------------------------------
class _ConditionalPatchBranch(nn.Module):
    def __init__(self, group: LayerGroup, channels: tuple[int, ...]) -> None:
        super().__init__()
        cyl, size = group.cylindrical, (group.rows, group.cols)
        convs, c_in = [], 2 * len(group.layers)
        for i, c_out in enumerate(channels):
            stride, after = halve_grid(size) if i < len(channels) - 1 else ((1, 1), size)
            layers = [GridConv(c_in, c_out, cylindrical=cyl, stride=stride)]
            layers += [instance_norm(c_out, after)] if i > 0 else []
            convs.append(nn.Sequential(*layers, nn.LeakyReLU(0.2)))
            c_in, size = c_out, after
        self.first, self.rest = convs[0], nn.Sequential(*convs[1:])
        self.out = GridConv(channels[-1], 1, cylindrical=cyl)


class ConditionalPatchDiscriminator(LayeredNetwork):
    """Conditional PatchGAN (Isola et al. 2017): scores an image given its input, per layer group.

    ``forward(condition, image)``: two (N, L, R, C) views -> (N, P) logits, the patches of every group
    concatenated. Per group, the two views' layers are concatenated as channels (the reference's
    ``torch.cat((real_A, fake_B), 1)``) and pass the convolutions of
    :class:`~.networks.LayeredPatchDiscriminator`; the :class:`~.networks.GlobalCode` reads the pooled
    first-conv features and the standardised layer log energies of both views (2 L values).

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
        channels = _widths("ConditionalPatchDiscriminator", channels, 1)
        _code_size("ConditionalPatchDiscriminator", code_size)
        self.branches = nn.ModuleList(_ConditionalPatchBranch(g, channels) for g in self.groups)
        n = len(self.groups)
        self.code = GlobalCode([channels[0]] * n, [channels[-1]] * n, 2 * geometry.n_layers, code_size)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """N(0, 0.02) weights, zero biases."""
        init_weights(self, generator)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        given, given_energies = self.split(condition)
        seen, seen_energies = self.split(image)
        first = [branch.first(torch.cat([a, b], 1)) for branch, a, b in zip(self.branches, given, seen)]
        last = [branch.rest(h) for branch, h in zip(self.branches, first)]
        last = self.code(first, torch.cat([given_energies, seen_energies], 1), last)
        return torch.cat([branch.out(h).flatten(1) for branch, h in zip(self.branches, last)], 1)


# ---- translator ----------------------------------------------------------------------------------
@register
class Pix2Pix(Translator):
    """Pix2Pix on layered showers: paired sim and real (row i of each the same shower), sim -> real.

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        channels: U-Net widths at the full grid and after each downsampling (reference: 64 ... 512, 8 levels).
        discriminator_channels: discriminator conv widths (reference: 64, 128, 256, 512).
        code_size: hidden width of the global coupling MLPs.
        lambda_l1: weight of L1(G(sim), real) (reference 100).
        energy_weight: weight of the energy term; 0 turns it off.
        energy_tolerance: dead zone of the energy term in log total energy.
        lr, beta1: Adam's learning rate and first beta (the second is 0.999).
        decay_fraction: the last ``floor(decay_fraction x epochs)`` epochs decay the lr linearly.
        log_scale, threshold_mev: the energy codec (:class:`~.networks.ShowerCodec`).
    """

    name = "pix2pix"
    summary = "Pix2Pix (Isola et al. 2017): U-Net, conditional PatchGAN, BCE GAN + 100 x L1, paired sim and real"
    paired = True
    invertible = False
    default_epochs = 6
    default_batch_size = 64

    def __init__(
        self,
        geometry: str | _geometry.Geometry = "calogan",
        *,
        channels: Sequence[int] = (8, 16, 32, 32),
        discriminator_channels: Sequence[int] = (8, 16),
        code_size: int = 32,
        lambda_l1: float = 100.0,
        energy_weight: float = 10.0,
        energy_tolerance: float = 0.1,
        lr: float = 2e-4,
        beta1: float = 0.5,
        decay_fraction: float = 0.5,
        log_scale: float = 10.0,
        threshold_mev: float | Sequence[float] = 1.0,
    ) -> None:
        channels, discriminator_channels = list(channels), list(discriminator_channels)
        threshold = threshold_mev if isinstance(threshold_mev, (int, float)) else list(threshold_mev)
        super().__init__(geometry, hparams=dict(
            channels=channels, discriminator_channels=discriminator_channels, code_size=code_size,
            lambda_l1=lambda_l1, energy_weight=energy_weight, energy_tolerance=energy_tolerance, lr=lr,
            beta1=beta1, decay_fraction=decay_fraction, log_scale=log_scale, threshold_mev=threshold,
        ))
        self.lambda_l1 = check_number("Pix2Pix", "lambda_l1", lambda_l1, zero=True)
        self.set_training(energy_weight=energy_weight, energy_tolerance=energy_tolerance, lr=lr, beta1=beta1,
                          decay_fraction=decay_fraction)
        #: netG of the reference: sim -> real
        self.generator = LayeredUnetGenerator(self.geometry, channels=channels, code_size=code_size,
                                              log_scale=log_scale)
        #: netD of the reference: (sim, real) pairs vs (sim, generator(sim))
        self.critic = ConditionalPatchDiscriminator(self.geometry, channels=discriminator_channels,
                                                    code_size=code_size, log_scale=log_scale)
        self._optimizers: dict[str, torch.optim.Adam] = {}

    def network(self, reverse: bool = False) -> nn.Module:
        return self.generator

    # ---- training ------------------------------------------------------------------------------
    def start_fit(self, *, epochs: int) -> None:
        betas = (self.beta1, 0.999)
        self._optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas),
                            "critic": torch.optim.Adam(self.critic.parameters(), lr=self.lr, betas=betas)}

    def generator_losses(self, sim: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted generator losses of a batch: (N, L, R, C) views of sim, its real pair and its translation."""
        losses = {"gan": vanilla_gan_loss(self.critic(sim, fake), True),
                  "l1": self.lambda_l1 * self.codec.l1(fake, real)}
        if self.energy_weight > 0:
            losses["energy"] = self.energy_weight * energy_loss(
                self.codec.total_energy(fake), self.codec.total_energy(sim), tolerance=self.energy_tolerance
            )
        return losses

    def critic_losses(self, sim: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """0.5 (BCE(D(sim, fake), 0) + BCE(D(sim, real), 1)), the fake detached."""
        return {"critic": 0.5 * (vanilla_gan_loss(self.critic(sim, fake.detach()), False)
                                 + vanilla_gan_loss(self.critic(sim, real), True))}

    def train_step(self, sim: torch.Tensor, real: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        fake = self.generate(self.generator, sim)
        critic_losses = self.critic_losses(sim, real, fake)
        self.step(self._optimizers["critic"], sum(critic_losses.values()))
        self.critic.requires_grad_(False)
        try:
            losses = self.generator_losses(sim, real, fake)
            self.step(self._optimizers["generator"], sum(losses.values()))
        finally:
            self.critic.requires_grad_(True)
        return {k: v.detach() for k, v in {**losses, **critic_losses}.items()}

    def training_state(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self._optimizers.items()}}

    def load_training_state(self, state: dict) -> None:
        for key, optimizer in self._optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
