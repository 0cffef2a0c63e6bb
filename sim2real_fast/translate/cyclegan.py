"""CycleGAN (Zhu et al., ICCV 2017) between simulated and real showers.

Two generators (sim -> real, real -> sim: :class:`~.networks.LayeredResnetGenerator`) and two
discriminators (:class:`~.networks.LayeredPatchDiscriminator`, one per domain). Every step, as the
reference (junyanz/pytorch-CycleGAN-and-pix2pix, ``CycleGANModel.optimize_parameters``):

- generators, discriminators frozen: LSGAN loss of each translation against 1, cycle losses
  ``lambda_cycle`` x L1(G_rs(G_sr(sim)), sim) and the same for real, identity losses
  ``lambda_identity`` x ``lambda_cycle`` x L1(G_sr(real), real) and L1(G_rs(sim), sim), plus the
  energy term (below); one Adam step on both generators.
- discriminators: 0.5 (MSE(D(real), 1) + MSE(D(pool(fake)), 0)) per domain, the fakes drawn through
  an :class:`~.base.ImagePool` of ``pool_size``; one Adam step on both.

L1 distances are taken on the networks' view x = log1p(E / MeV) / ``log_scale``, averaged over the
real cells. The energy term (not in the reference) is ``energy_weight`` x
:func:`~.networks.energy_loss` of each translation's total energy against its input's, with
``energy_tolerance``: a translated shower may change its total energy by a factor within
exp(+-0.1) = 0.905-1.105 at no cost and pays linearly beyond (without the term, a short training on
a 20% energy-scale shift overshoots to factors of 1.3 to 4).

Defaults, the reference's and ours:

===============================  ============================  ====================================
                                 reference                     here
===============================  ============================  ====================================
lambda_A = lambda_B              10                            ``lambda_cycle`` 10
lambda_identity                  0.5 (x lambda)                ``lambda_identity`` 0.5 (x lambda)
GAN loss                         LSGAN                         LSGAN
image pool                       50                            ``pool_size`` 50
Adam                             lr 2e-4, betas (0.5, 0.999)   ``lr`` 2e-4, ``beta1`` 0.5, 0.999
schedule                         100 epochs at lr + 100        ``decay_fraction`` 0.5: the last half
                                 decaying linearly             of the epochs decays linearly
                                                               (:func:`~.base.linear_decay`)
batch size                       1                             64 (instance norm: per shower anyway)
generator / discriminator        resnet_9blocks ngf 64 /       (8, 16, 16) x 2 blocks / (8, 16);
                                 70 x 70 PatchGAN ndf 64       see :mod:`.networks`
epochs                           200 over ~1,000 images        6 over 20,000 + 20,000 showers (3 at
                                                               lr, 3 decaying): about 40 s an epoch
                                                               on 2 CPU threads
===============================  ============================  ====================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import geometry as _geometry
from .base import ImagePool, Translator, check_number, register
from .networks import LayeredPatchDiscriminator, LayeredResnetGenerator, energy_loss, lsgan_loss

__all__ = ["CycleGAN"]


@register
class CycleGAN(Translator):
    """CycleGAN on layered showers: unpaired sim and real, sim -> real and real -> sim.

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        channels: generator widths at the full grid and after each downsampling (reference: 64, 128, 256).
        n_blocks: generator residual blocks (reference: 9).
        discriminator_channels: discriminator conv widths (reference: 64, 128, 256, 512).
        code_size: hidden width of the global coupling MLPs.
        lambda_cycle: weight of each cycle L1 loss (reference lambda_A = lambda_B = 10).
        lambda_identity: identity L1 weight as a fraction of ``lambda_cycle`` (reference 0.5).
        energy_weight: weight of the energy term; 0 turns it off.
        energy_tolerance: dead zone of the energy term in log total energy.
        pool_size: images in each discriminator's history pool (reference 50).
        lr, beta1: Adam's learning rate and first beta (the second is 0.999).
        decay_fraction: the last ``floor(decay_fraction x epochs)`` epochs decay the lr linearly.
        log_scale, threshold_mev: the energy codec (:class:`~.networks.ShowerCodec`).
    """

    name = "cyclegan"
    summary = "CycleGAN (Zhu et al. 2017): two generators, LSGAN, cycle and identity L1, unpaired sim and real"
    invertible = True
    default_epochs = 6
    default_batch_size = 64

    def __init__(
        self,
        geometry: str | _geometry.Geometry = "calogan",
        *,
        channels: Sequence[int] = (8, 16, 16),
        n_blocks: int = 2,
        discriminator_channels: Sequence[int] = (8, 16),
        code_size: int = 32,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        energy_weight: float = 10.0,
        energy_tolerance: float = 0.1,
        pool_size: int = 50,
        lr: float = 2e-4,
        beta1: float = 0.5,
        decay_fraction: float = 0.5,
        log_scale: float = 10.0,
        threshold_mev: float | Sequence[float] = 1.0,
    ) -> None:
        channels, discriminator_channels = list(channels), list(discriminator_channels)
        threshold = threshold_mev if isinstance(threshold_mev, (int, float)) else list(threshold_mev)
        super().__init__(geometry, hparams=dict(
            channels=channels, n_blocks=n_blocks, discriminator_channels=discriminator_channels,
            code_size=code_size, lambda_cycle=lambda_cycle, lambda_identity=lambda_identity,
            energy_weight=energy_weight, energy_tolerance=energy_tolerance, pool_size=pool_size, lr=lr,
            beta1=beta1, decay_fraction=decay_fraction, log_scale=log_scale, threshold_mev=threshold,
        ))
        self.lambda_cycle = check_number("CycleGAN", "lambda_cycle", lambda_cycle, zero=True)
        self.lambda_identity = check_number("CycleGAN", "lambda_identity", lambda_identity, zero=True)
        self.set_training(energy_weight=energy_weight, energy_tolerance=energy_tolerance, lr=lr, beta1=beta1,
                          decay_fraction=decay_fraction)
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 0:
            raise ValueError(f"CycleGAN: pool_size must be an int >= 0, got {pool_size!r}")
        self.pool_size = pool_size
        g = dict(channels=channels, n_blocks=n_blocks, code_size=code_size, log_scale=log_scale)
        d = dict(channels=discriminator_channels, code_size=code_size, log_scale=log_scale)
        #: G_A of the reference: sim -> real, and G_B: real -> sim
        self.sim_to_real = LayeredResnetGenerator(self.geometry, **g)
        self.real_to_sim = LayeredResnetGenerator(self.geometry, **g)
        #: D_A of the reference: real showers vs sim_to_real's, and D_B: sim showers vs real_to_sim's
        self.real_critic = LayeredPatchDiscriminator(self.geometry, **d)
        self.sim_critic = LayeredPatchDiscriminator(self.geometry, **d)
        self._optimizers: dict[str, torch.optim.Adam] = {}
        self._pools: dict[str, ImagePool] = {}

    def network(self, reverse: bool = False) -> nn.Module:
        return self.real_to_sim if reverse else self.sim_to_real

    # ---- training ------------------------------------------------------------------------------
    def start_fit(self, *, epochs: int) -> None:
        betas = (self.beta1, 0.999)
        generators = [*self.sim_to_real.parameters(), *self.real_to_sim.parameters()]
        critics = [*self.real_critic.parameters(), *self.sim_critic.parameters()]
        self._optimizers = {"generators": torch.optim.Adam(generators, lr=self.lr, betas=betas),
                            "critics": torch.optim.Adam(critics, lr=self.lr, betas=betas)}
        self._pools = {"real": ImagePool(self.pool_size), "sim": ImagePool(self.pool_size)}

    def generator_losses(
        self, sim: torch.Tensor, real: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The weighted generator losses of a batch and the two translations (fake real, fake sim)."""
        codec, lam = self.codec, self.lambda_cycle
        fake_real = self.generate(self.sim_to_real, sim)
        fake_sim = self.generate(self.real_to_sim, real)
        losses = {
            "gan_sim_to_real": lsgan_loss(self.real_critic(fake_real), True),
            "gan_real_to_sim": lsgan_loss(self.sim_critic(fake_sim), True),
            "cycle_sim": lam * codec.l1(self.generate(self.real_to_sim, fake_real), sim),
            "cycle_real": lam * codec.l1(self.generate(self.sim_to_real, fake_sim), real),
        }
        if self.lambda_identity > 0:
            weight = lam * self.lambda_identity
            losses["identity_real"] = weight * codec.l1(self.generate(self.sim_to_real, real), real)
            losses["identity_sim"] = weight * codec.l1(self.generate(self.real_to_sim, sim), sim)
        if self.energy_weight > 0:
            tol = self.energy_tolerance
            losses["energy"] = self.energy_weight * (
                energy_loss(codec.total_energy(fake_real), codec.total_energy(sim), tolerance=tol)
                + energy_loss(codec.total_energy(fake_sim), codec.total_energy(real), tolerance=tol)
            )
        return losses, fake_real, fake_sim

    def critic_losses(self, sim: torch.Tensor, real: torch.Tensor, fake_real: torch.Tensor,
                      fake_sim: torch.Tensor) -> dict[str, torch.Tensor]:
        """0.5 (LSGAN(D(real), 1) + LSGAN(D(fake), 0)) of each discriminator (fakes as given)."""
        return {
            "critic_real": 0.5 * (lsgan_loss(self.real_critic(real), True)
                                  + lsgan_loss(self.real_critic(fake_real.detach()), False)),
            "critic_sim": 0.5 * (lsgan_loss(self.sim_critic(sim), True)
                                 + lsgan_loss(self.sim_critic(fake_sim.detach()), False)),
        }

    def train_step(self, sim: torch.Tensor, real: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        critics = (self.real_critic, self.sim_critic)
        for critic in critics:
            critic.requires_grad_(False)
        losses, fake_real, fake_sim = self.generator_losses(sim, real)
        self.step(self._optimizers["generators"], sum(losses.values()))
        for critic in critics:
            critic.requires_grad_(True)
        fake_real = self.query_pool(self._pools["real"], fake_real, generator)
        fake_sim = self.query_pool(self._pools["sim"], fake_sim, generator)
        critic_losses = self.critic_losses(sim, real, fake_real, fake_sim)
        self.step(self._optimizers["critics"], sum(critic_losses.values()))
        return {k: v.detach() for k, v in {**losses, **critic_losses}.items()}

    def training_state(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self._optimizers.items()},
                "pools": {k: p.state_dict() for k, p in self._pools.items()}}

    def load_training_state(self, state: dict) -> None:
        for key, optimizer in self._optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        for key, pool in self._pools.items():
            pool.load_state_dict(state["pools"][key])
