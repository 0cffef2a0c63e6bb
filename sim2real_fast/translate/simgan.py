"""SimGAN refiner (Shrivastava et al., CVPR 2017) from simulated to real showers.

One network, the refiner R (:class:`~.networks.LayeredResnetGenerator` with ``channels=(c,)``: a
stem, residual blocks at the full cell grid, no striding or pooling, and a zero-initialised output
added to its input, so that an untrained refiner is the identity) and one local discriminator D
(:class:`~.networks.LayeredPatchDiscriminator`: one real/refined score per patch of every layer
group). Every step, as the paper's Algorithm 1:

- ``refiner_steps`` times (K_g), D frozen: the local adversarial loss of D(R(sim)) against "real",
  the self-regularisation ``lambda_reg`` x L1(R(sim), sim) and the energy term (below); one Adam
  step on R.
- ``critic_steps`` times (K_d): the local adversarial loss of D(real) against "real" plus that of
  D(refined) against "refined", where half the refined batch comes from R's latest output and
  the other half from a :class:`HistoryBuffer` of earlier refined showers (queried once a step);
  one Adam step on D.

The local adversarial loss is the mean over showers and patches of the cross-entropy of each
patch's score (a logit) with its target (the paper's per-patch cross-entropy, summed there over
patches: a constant factor, absorbed by the learning rate); ``adversarial="lsgan"`` takes
CycleGAN's least-squares loss instead. L1 is taken on the networks' view
x = log1p(E / MeV) / ``log_scale``, averaged over the real cells (the paper's psi is the
identity; on log energies a per-cent change of a cell costs the same at 10 MeV and 10 GeV).
The energy term (not in the paper; the same as :class:`~.cyclegan.CycleGAN`'s) is
``energy_weight`` x :func:`~.networks.energy_loss` of the refined total energy against the
simulated one with ``energy_tolerance``: a refined shower may change its total energy by a factor
within exp(+-0.1) = 0.905-1.105 at no cost and pays linearly beyond. The codec makes every refined
shower non-negative and zero-suppressed (:meth:`~.networks.ShowerCodec.suppress`). The refiner maps
sim to real only: ``translate(..., reverse=True)`` raises.

Defaults, the paper's and ours:

===============================  ====================================  ====================================
                                 paper (eye gaze, UnityEyes)           here
===============================  ====================================  ====================================
refiner                          3 x 3 conv with 64 maps, 4 ResNet     ``channels`` (8,), ``n_blocks`` 4
                                 blocks of two 3 x 3 convs, no         (no downsampling), each block after
                                 striding or pooling, 1 x 1 output     a global coupling; see :mod:`.networks`
self-regularisation              lambda x L1 norm of R(x) - x, a sum   ``lambda_reg`` 1 x mean absolute R(x) - x
                                 over pixels (psi = identity)          over the cells of the log1p view
local adversarial loss           cross-entropy per patch of D's        ``adversarial`` "cross_entropy"
                                 probability map                       (mean over patches); or "lsgan"
discriminator mini-batch         b/2 current refined + b/2 from the    the same: :class:`HistoryBuffer`,
                                 history buffer; b/2 buffer slots      ``history_size`` 512 showers
                                 replaced by new refined images        (no history while it holds < b/2)
updates per step                 K_g refiner, K_d discriminator        ``refiner_steps`` 1, ``critic_steps``
                                 updates alternate (Algorithm 1)       1, on the step's batch
pre-training                     R on the self-regularisation only,    none: R starts as the identity, the
                                 then D, before adversarial training   minimum of the self-regularisation
optimiser, schedule              --                                    Adam lr 2e-4, betas (0.5, 0.999);
                                                                       the last ``decay_fraction`` 0.5 of
                                                                       the epochs decay linearly (as CycleGAN)
===============================  ====================================  ====================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .. import geometry as _geometry
from .base import ImagePool, Translator, check_number, register
from .networks import LayeredPatchDiscriminator, LayeredResnetGenerator, energy_loss, lsgan_loss

__all__ = ["HistoryBuffer", "SimGAN", "local_adversarial_loss"]

_ADVERSARIAL = ("cross_entropy", "lsgan")


def local_adversarial_loss(scores: torch.Tensor, real: bool, *, kind: str = "cross_entropy") -> torch.Tensor:
    """Mean over showers and patches of a (N, P) map of patch scores against the target "real" or "refined".

    ``kind`` "cross_entropy" (the paper): scores are logits of P(real), the loss is
    -log sigmoid(s) for ``real`` and -log(1 - sigmoid(s)) otherwise; "lsgan": :func:`~.networks.lsgan_loss`.
    """
    if kind == "cross_entropy":
        target = torch.ones_like(scores) if real else torch.zeros_like(scores)
        return F.binary_cross_entropy_with_logits(scores, target)
    if kind == "lsgan":
        return lsgan_loss(scores, real)
    raise ValueError(f"kind: expected one of {', '.join(_ADVERSARIAL)}, got {kind!r}")


class HistoryBuffer(ImagePool):
    """The paper's history of refined images: half of every discriminator mini-batch comes from it.

    :meth:`query` takes a batch of b refined images and returns b images: the first b - b // 2 of
    the batch followed by b // 2 stored images, distinct, drawn uniformly (``randperm(count)``);
    while the buffer holds fewer than b // 2 images it returns the batch as given. Then the batch's
    first b - b // 2 images are stored: into free slots while there are any, the rest each into
    a distinct slot drawn uniformly (``randperm(size)``), replacing what it held. ``size`` 0 returns
    the batch and stores nothing. State and files are :class:`~.base.ImagePool`'s.
    """

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(b, ...) refined images (detached) -> (b, ...) images for the discriminator."""
        if self.size == 0:
            return images
        images = images.detach()
        if self.images is None:
            self.images = images.new_zeros((self.size, *images.shape[1:]))
        half = len(images) // 2
        fresh = images[: len(images) - half]
        out = images.clone()
        if half > 0 and self.count >= half:
            picks = torch.randperm(self.count, generator=generator)[:half].to(images.device)
            out[len(fresh):] = self.images[picks]
        new = fresh[: self.size]
        free = min(self.size - self.count, len(new))
        self.images[self.count: self.count + free] = new[:free]
        self.count += free
        rest = new[free:]
        if len(rest):
            slots = torch.randperm(self.size, generator=generator)[: len(rest)].to(images.device)
            self.images[slots] = rest
        return out


def _count(name: str, value: int, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"SimGAN: {name} must be an int >= {minimum}, got {value!r}")
    return value


@register
class SimGAN(Translator):
    """SimGAN refiner on layered showers: unpaired sim and real, sim -> real only.

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        channels: refiner width, one int (no downsampling; the paper: 64). More than one entry
            adds CycleGAN's downsamplings.
        n_blocks: refiner residual blocks (the paper: 4).
        discriminator_channels: discriminator conv widths.
        code_size: hidden width of the global coupling MLPs.
        lambda_reg: weight of the self-regularisation L1 between refined and simulated showers.
        adversarial: "cross_entropy" (the paper) or "lsgan" (:func:`local_adversarial_loss`).
        energy_weight: weight of the energy term; 0 turns it off.
        energy_tolerance: dead zone of the energy term in log total energy.
        history_size: refined showers in the :class:`HistoryBuffer`; 0 turns it off.
        refiner_steps, critic_steps: the paper's K_g and K_d, updates of each network per step.
        lr, beta1: Adam's learning rate and first beta (the second is 0.999).
        decay_fraction: the last ``floor(decay_fraction x epochs)`` epochs decay the lr linearly.
        log_scale, threshold_mev: the energy codec (:class:`~.networks.ShowerCodec`).
    """

    name = "simgan"
    summary = ("SimGAN refiner (Shrivastava et al. 2017): ResNet refiner, self-regularisation L1, "
               "local adversarial loss, history of refined showers")
    invertible = False
    default_epochs = 6
    default_batch_size = 64

    def __init__(
        self,
        geometry: str | _geometry.Geometry = "calogan",
        *,
        channels: Sequence[int] = (8,),
        n_blocks: int = 4,
        discriminator_channels: Sequence[int] = (8, 16),
        code_size: int = 32,
        lambda_reg: float = 1.0,
        adversarial: str = "cross_entropy",
        energy_weight: float = 10.0,
        energy_tolerance: float = 0.1,
        history_size: int = 512,
        refiner_steps: int = 1,
        critic_steps: int = 1,
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
            code_size=code_size, lambda_reg=lambda_reg, adversarial=adversarial, energy_weight=energy_weight,
            energy_tolerance=energy_tolerance, history_size=history_size, refiner_steps=refiner_steps,
            critic_steps=critic_steps, lr=lr, beta1=beta1, decay_fraction=decay_fraction, log_scale=log_scale,
            threshold_mev=threshold,
        ))
        self.lambda_reg = check_number("SimGAN", "lambda_reg", lambda_reg, zero=True)
        if adversarial not in _ADVERSARIAL:
            raise ValueError(f"SimGAN: adversarial must be one of {', '.join(_ADVERSARIAL)}, got {adversarial!r}")
        self.adversarial = adversarial
        self.set_training(energy_weight=energy_weight, energy_tolerance=energy_tolerance, lr=lr, beta1=beta1,
                          decay_fraction=decay_fraction)
        self.history_size = _count("history_size", history_size, 0)
        self.refiner_steps = _count("refiner_steps", refiner_steps, 1)
        self.critic_steps = _count("critic_steps", critic_steps, 1)
        self.refiner = LayeredResnetGenerator(self.geometry, channels=channels, n_blocks=n_blocks,
                                              code_size=code_size, log_scale=log_scale)
        self.critic = LayeredPatchDiscriminator(self.geometry, channels=discriminator_channels,
                                                code_size=code_size, log_scale=log_scale)
        self._optimizers: dict[str, torch.optim.Adam] = {}
        self._history = HistoryBuffer(self.history_size)

    def network(self, reverse: bool = False) -> nn.Module:
        if reverse:
            raise ValueError("reverse: simgan refines sim to real only")
        return self.refiner

    # ---- training ------------------------------------------------------------------------------
    def start_fit(self, *, epochs: int) -> None:
        betas = (self.beta1, 0.999)
        self._optimizers = {"refiner": torch.optim.Adam(self.refiner.parameters(), lr=self.lr, betas=betas),
                            "critic": torch.optim.Adam(self.critic.parameters(), lr=self.lr, betas=betas)}
        self._history = HistoryBuffer(self.history_size)

    def refiner_losses(self, sim: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weighted refiner losses of an encoded (B, L, R, C) sim batch, and the refined batch."""
        codec = self.codec
        refined = self.generate(self.refiner, sim)
        losses = {
            "adversarial": local_adversarial_loss(self.critic(refined), True, kind=self.adversarial),
            "self_regularisation": self.lambda_reg * codec.l1(refined, sim),
        }
        if self.energy_weight > 0:
            losses["energy"] = self.energy_weight * energy_loss(
                codec.total_energy(refined), codec.total_energy(sim), tolerance=self.energy_tolerance)
        return losses, refined

    def critic_losses(self, real: torch.Tensor, refined: torch.Tensor) -> dict[str, torch.Tensor]:
        """The discriminator's loss: real showers against "real" plus ``refined`` (as given) against "refined"."""
        kind = self.adversarial
        return {"critic": local_adversarial_loss(self.critic(real), True, kind=kind)
                + local_adversarial_loss(self.critic(refined.detach()), False, kind=kind)}

    def train_step(self, sim: torch.Tensor, real: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        self.critic.requires_grad_(False)
        for _ in range(self.refiner_steps):
            losses, _ = self.refiner_losses(sim)
            self.step(self._optimizers["refiner"], sum(losses.values()))
        self.critic.requires_grad_(True)
        with torch.no_grad():
            refined = self.generate(self.refiner, sim)
        refined = self.query_pool(self._history, refined, generator)
        for _ in range(self.critic_steps):
            critic_losses = self.critic_losses(real, refined)
            self.step(self._optimizers["critic"], critic_losses["critic"])
        return {k: v.detach() for k, v in {**losses, **critic_losses}.items()}

    def training_state(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self._optimizers.items()},
                "history": self._history.state_dict()}

    def load_training_state(self, state: dict) -> None:
        for key, optimizer in self._optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
        self._history.load_state_dict(state["history"])
