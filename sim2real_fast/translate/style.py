"""Style transfer (Gatys et al., CVPR 2016) from simulated to real showers, feed-forward (Johnson et al., ECCV 2016).

Gatys et al. optimise one image at a time so that its features in a fixed loss network match a
content image (content loss) and the Gram matrices of its features match a style image's (style
loss); Johnson et al. train a feed-forward image transformation network on the same perceptual
losses, so a translation is one forward pass. This translator is Johnson's: the transformation
network T is :class:`~.networks.LayeredResnetGenerator` (Johnson's residual architecture, as
CycleGAN's generator; zero-initialised output: an untrained T is the identity) and the loss network
phi is the project's classifier :class:`~sim2real_fast.models.CaloCNN`.

Loss network. No pretrained VGG can be downloaded, and the features of a network trained on natural
photographs are the wrong prior for calorimeter showers: phi is a CaloCNN of the geometry trained at
the start of :meth:`StyleTransfer.fit` on the labelled sim showers (cross-entropy on the particle
labels, ``feature_epochs`` passes, Adam at ``feature_lr``, batch order from torch's generator, which
``fit`` seeds), then frozen (eval mode, ``requires_grad`` False) for the rest of the fit. Hence
**fit needs sim_labels** (``needs_sim_labels``). phi is a submodule: its weights are saved with the
translator. Its feature maps (:meth:`StyleTransfer.feature_maps`) are the ReLU outputs of the first
("conv1") and second ("conv2") 3 x 3 convolution of each of its layer-group branches, computed on
the codec's view x = log1p(E / MeV) / ``log_scale``, which is exactly the branches' input inside
CaloCNN (same ``log_scale``), so gradients reach T's output without leaving that view.

Every step, on encoded batches (:meth:`~.networks.ShowerCodec.encode`), T's output y = suppress(T(sim))
(non-negative, zero-suppressed: :meth:`~.networks.ShowerCodec.suppress`) pays

- content: ``content_weight`` x the sum over ``content_layers`` and branches of the MSE between
  phi's feature maps of y and of sim;
- style: ``style_weight`` x the sum over ``style_layers`` and branches of the MSE between the mean
  Gram matrix (:func:`gram_matrix`, normalised by C x H x W as Johnson) of the translated batch and
  that of the real batch. Gatys' style target is one image; a domain's is its mean Gram matrix, and
  matching the two means is matching the feature distributions in the MMD of a quadratic kernel
  (Li et al., IJCAI 2017). Matching each translated shower's Gram matrix to the real mean instead
  would pull every shower, a 1 GeV electron and a 100 GeV pion alike, toward one average shower,
  and its distance is dominated by the spread within a domain, not by the gap between them;
- energy: ``energy_weight`` x :func:`~.networks.energy_loss` of y's total energy against sim's with
  ``energy_tolerance`` (not in the papers; as :class:`~.cyclegan.CycleGAN`): a translated shower may
  change its total energy by a factor within exp(+-0.1) = 0.905-1.105 at no cost;

and Adam makes one step on T. The style transfer maps sim to real only:
``translate(..., reverse=True)`` raises.

Data-parallel training (:mod:`sim2real_fast.distributed`): the mean Gram matrices are of the step's
whole batches (each process's Gram matrices gathered), so the style loss is the one-process loss, the
same in every process (a ``gathered`` :meth:`~.base.Translator.step`). Every process trains the whole
loss network alike, from the same seed.

Defaults, the papers' and ours:

===============================  ==============================  ========================================
                                 Gatys / Johnson                 here
===============================  ==============================  ========================================
loss network                     VGG-16/19 trained on ImageNet   :class:`~sim2real_fast.models.CaloCNN`,
                                                                 ``feature_channels`` (8, 16), trained
                                                                 on sim labels for ``feature_epochs`` 4
                                                                 (Adam ``feature_lr`` 2e-3, batch
                                                                 ``feature_batch_size`` 64), then frozen
content layers                   relu4_2 / relu2_2               ``content_layers`` ("conv2",)
style layers                     relu1_1 ... relu5_1 /           ``style_layers`` ("conv1", "conv2")
                                 relu1_2 ... relu4_3
Gram normalisation               1 / (4 N^2 M^2) in the loss /   C x H x W
                                 C x H x W
style target                     one style image                 mean Gram matrix of the real batch,
                                                                 matched by the translated batch's
weights                          alpha / beta 1e-3 ... 1e-4 /    ``content_weight`` 1, ``style_weight``
                                 tuned per style                 1e5 (the style term of sim against
                                                                 CaloGAN's stress preset starts at
                                                                 O(0.1)), ``energy_weight`` 10
total variation                  -- / 1e-6 ... 1e-4              none (the codec's zero suppression
                                                                 already removes sub-threshold noise)
transformation network           -- / 2 stride-2 downsamplings,  ``channels`` (8, 16, 16), ``n_blocks``
                                 5 residual blocks               2; see :mod:`.networks`
optimiser                        L-BFGS on the image / Adam      Adam ``lr`` 1e-3, ``beta1`` 0.9, 0.999;
                                 lr 1e-3, batch 4, 2 epochs      the last ``decay_fraction`` 0.5 of the
                                 over 80k images                 epochs decay linearly
epochs, batch                    --                              4 epochs, batch 64: about 15 s with
                                                                 the loss network's training, on 2,000
                                                                 + 2,000 CaloGAN showers, one CPU thread
===============================  ==============================  ========================================

Resume. A resumed fit trains phi again from the same seed (the same weights), then loads the
checkpoint's weights; the checkpoint also holds a SHA-256 digest of ``sim_labels`` and resuming
with other labels raises.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from .. import distributed
from .. import geometry as _geometry
from ..models.calo_cnn import CaloCNN
from .base import Translator, check_number, register
from .networks import LayeredResnetGenerator, energy_loss

__all__ = ["FEATURE_LAYERS", "StyleTransfer", "gram_matrix"]

#: names of the loss network's feature maps: the ReLU outputs of each branch's first and second convolution
FEATURE_LAYERS = ("conv1", "conv2")


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) feature maps -> (N, C, C) Gram matrices F F^T / (C H W), F the (C, H W) map of a shower."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def _layers(name: str, value: Sequence[str]) -> list[str]:
    names = [value] if isinstance(value, str) else list(value)
    if len(set(names)) != len(names) or not set(names) <= set(FEATURE_LAYERS):
        raise ValueError(f"StyleTransfer: {name} must be distinct names from {FEATURE_LAYERS}, got {value!r}")
    return names


def _count(name: str, value: int, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"StyleTransfer: {name} must be an int >= {minimum}, got {value!r}")
    return value


def _reset_classifier(network: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default initialisation of every Conv2d and Linear (kaiming-uniform weights with a = sqrt(5),
    biases U(+-1 / sqrt(fan_in))), drawn from ``generator``."""
    for m in network.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(m.weight[0].numel())
            nn.init.uniform_(m.bias, -bound, bound, generator=generator)


def _digest(labels: torch.Tensor) -> str:
    return hashlib.sha256(labels.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@register
class StyleTransfer(Translator):
    """Feed-forward style transfer on layered showers with a CaloCNN loss network: unpaired sim and
    real, sim -> real only. ``fit`` needs ``sim_labels``.

    Args:
        geometry: a preset name or :class:`~sim2real_fast.geometry.Geometry`.
        channels: transformation network widths at the full grid and after each downsampling.
        n_blocks: transformation network residual blocks.
        code_size: hidden width of the global coupling MLPs.
        n_classes: classes of ``sim_labels`` (3: e+, gamma, pi+).
        feature_channels: the loss network's two convolution widths (CaloCNN's ``channels``).
        feature_epochs: passes over the labelled sim showers that train the loss network; 0 keeps
            it at its random initialisation.
        feature_batch_size: showers per step of that training.
        feature_lr: its Adam learning rate.
        content_layers: feature maps of the content loss (names from :data:`FEATURE_LAYERS`); may be empty.
        style_layers: feature maps of the style loss; may be empty.
        content_weight, style_weight: weights of the content and style losses.
        energy_weight: weight of the energy term; 0 turns it off.
        energy_tolerance: dead zone of the energy term in log total energy.
        lr, beta1: Adam's learning rate and first beta (the second is 0.999) of the transformation network.
        decay_fraction: the last ``floor(decay_fraction x epochs)`` epochs decay the lr linearly.
        log_scale, threshold_mev: the energy codec (:class:`~.networks.ShowerCodec`).

    Attributes:
        transform_network: T, the :class:`~.networks.LayeredResnetGenerator` that translates.
        feature_network: phi, the :class:`~sim2real_fast.models.CaloCNN` loss network (frozen
            outside the first stage of :meth:`fit`, always in eval mode outside it).

    ``history`` starts with one record per feature epoch ("stage" "features", "epoch", "lr",
    "feature_loss", "feature_accuracy" on the training batches, "seconds"), then one per epoch of T.
    """

    name = "style"
    summary = ("Style transfer (Gatys et al. 2016), feed-forward (Johnson et al. 2016): content and Gram-matrix "
               "style losses in a CaloCNN trained on sim labels")
    invertible = False
    needs_sim_labels: ClassVar[bool] = True
    default_epochs = 4
    default_batch_size = 64

    def __init__(
        self,
        geometry: str | _geometry.Geometry = "calogan",
        *,
        channels: Sequence[int] = (8, 16, 16),
        n_blocks: int = 2,
        code_size: int = 32,
        n_classes: int = 3,
        feature_channels: Sequence[int] = (8, 16),
        feature_epochs: int = 4,
        feature_batch_size: int = 64,
        feature_lr: float = 2e-3,
        content_layers: Sequence[str] = ("conv2",),
        style_layers: Sequence[str] = ("conv1", "conv2"),
        content_weight: float = 1.0,
        style_weight: float = 1e5,
        energy_weight: float = 10.0,
        energy_tolerance: float = 0.1,
        lr: float = 1e-3,
        beta1: float = 0.9,
        decay_fraction: float = 0.5,
        log_scale: float = 10.0,
        threshold_mev: float | Sequence[float] = 1.0,
    ) -> None:
        channels, feature_channels = list(channels), list(feature_channels)
        content = _layers("content_layers", content_layers)
        style = _layers("style_layers", style_layers)
        threshold = threshold_mev if isinstance(threshold_mev, (int, float)) else list(threshold_mev)
        super().__init__(geometry, hparams=dict(
            channels=channels, n_blocks=n_blocks, code_size=code_size, n_classes=n_classes,
            feature_channels=feature_channels, feature_epochs=feature_epochs, feature_batch_size=feature_batch_size,
            feature_lr=feature_lr, content_layers=content, style_layers=style, content_weight=content_weight,
            style_weight=style_weight, energy_weight=energy_weight, energy_tolerance=energy_tolerance, lr=lr,
            beta1=beta1, decay_fraction=decay_fraction, log_scale=log_scale, threshold_mev=threshold,
        ))
        self.n_classes = _count("n_classes", n_classes, 2)
        self.feature_epochs = _count("feature_epochs", feature_epochs, 0)
        self.feature_batch_size = _count("feature_batch_size", feature_batch_size, 1)
        self.feature_lr = check_number("StyleTransfer", "feature_lr", feature_lr)
        self.content_weight = check_number("StyleTransfer", "content_weight", content_weight, zero=True)
        self.style_weight = check_number("StyleTransfer", "style_weight", style_weight, zero=True)
        self.content_layers, self.style_layers = content, style
        self.set_training(energy_weight=energy_weight, energy_tolerance=energy_tolerance, lr=lr, beta1=beta1,
                          decay_fraction=decay_fraction)
        if len(feature_channels) != 2 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0
                                                 for c in feature_channels):
            raise ValueError(f"StyleTransfer: feature_channels must be two positive ints, got {feature_channels!r}")
        self.transform_network = LayeredResnetGenerator(self.geometry, channels=channels, n_blocks=n_blocks,
                                                        code_size=code_size, log_scale=log_scale)
        self.feature_network = CaloCNN(self.geometry, n_classes, channels=tuple(feature_channels),
                                       log_scale=log_scale)
        self.feature_network.requires_grad_(False).eval()
        self._optimizers: dict[str, torch.optim.Adam] = {}
        self._labelled: tuple[torch.Tensor, torch.Tensor] | None = None
        self._labels_digest: str | None = None

    def network(self, reverse: bool = False) -> nn.Module:
        if reverse:
            raise ValueError("reverse: style translates sim to real only")
        return self.transform_network

    def train(self, mode: bool = True) -> StyleTransfer:
        """Sets T's mode; the loss network stays in eval mode (it is frozen)."""
        super().train(mode)
        self.feature_network.eval()
        return self

    def reset_parameters(self, generator: torch.Generator) -> None:
        """T as :meth:`~.networks.ResidualGenerator.reset_parameters` (the identity), then the loss network
        with PyTorch's default initialisation, both drawn from ``generator``."""
        self.transform_network.reset_parameters(generator)
        _reset_classifier(self.feature_network, generator)

    # ---- losses --------------------------------------------------------------------------------
    def feature_maps(self, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """(N, L, R, C) x -> for each name of :data:`FEATURE_LAYERS`, one (N, C_k, rows, cols) map per
        branch of the loss network: the ReLU outputs of the branch's first and second convolution."""
        maps: dict[str, list[torch.Tensor]] = {name: [] for name in FEATURE_LAYERS}
        for branch, ((rows, cols), layers) in zip(self.feature_network.branches, self.feature_network.groups.items()):
            h = branch[1](branch[0](x[:, layers, :rows, :cols]))
            maps["conv1"].append(h)
            maps["conv2"].append(branch[3](branch[2](h)))
        return maps

    def style_targets(self, real: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """(B, L, R, C) encoded real showers -> per style layer, one (C_k, C_k) mean Gram matrix per branch (in
        data-parallel training: of every process's showers, gathered)."""
        with torch.no_grad():
            maps = self.feature_maps(real)
            return {name: [distributed.gather(gram_matrix(m)).mean(0) for m in maps[name]]
                    for name in self.style_layers}

    def style_loss(self, x: torch.Tensor, targets: dict[str, list[torch.Tensor]]) -> torch.Tensor:
        """Unweighted style loss of (N, L, R, C) x: the sum over style layers and branches of the MSE
        between the mean Gram matrix of x's showers (in data-parallel training: of every process's, gathered)
        and the target (:meth:`style_targets`)."""
        maps = self.feature_maps(x)
        return sum((F.mse_loss(distributed.gather(gram_matrix(m)).mean(0), t)
                    for name in self.style_layers for m, t in zip(maps[name], targets[name])), x.new_zeros(()))

    def content_loss(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Unweighted content loss: the sum over content layers and branches of the MSE between the
        feature maps of (N, L, R, C) x and of ``reference`` (same shape)."""
        maps = self.feature_maps(x)
        with torch.no_grad():
            wanted = self.feature_maps(reference)
        return sum((F.mse_loss(m, w) for name in self.content_layers for m, w in zip(maps[name], wanted[name])),
                   x.new_zeros(()))

    def transfer_losses(self, sim: torch.Tensor, real: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weighted losses of encoded (B, L, R, C) sim and real batches, and the translated sim batch."""
        codec = self.codec
        translated = self.generate(self.transform_network, sim)
        losses = {
            "content": self.content_weight * self.content_loss(translated, sim),
            "style": self.style_weight * self.style_loss(translated, self.style_targets(real)),
        }
        if self.energy_weight > 0:
            losses["energy"] = self.energy_weight * energy_loss(
                codec.total_energy(translated), codec.total_energy(sim), tolerance=self.energy_tolerance)
        return losses, translated

    # ---- training ------------------------------------------------------------------------------
    def fit(self, sim: torch.Tensor, real: torch.Tensor, *, sim_labels: torch.Tensor | None = None,
            **kwargs) -> StyleTransfer:
        """:meth:`Translator.fit` with ``sim_labels``, the (N,) int64 class indices of ``sim`` (in
        [0, ``n_classes``)) that train the loss network; the other keywords are :meth:`Translator.fit`'s."""
        self.check_images("sim", sim)
        if sim_labels is None:
            raise ValueError("fit: style needs sim_labels, the (N,) int64 class indices of the sim showers "
                             "(its loss network is a classifier trained on them)")
        ok = (isinstance(sim_labels, torch.Tensor) and sim_labels.dtype == torch.int64
              and tuple(sim_labels.shape) == (len(sim),))
        if not ok or not bool(((sim_labels >= 0) & (sim_labels < self.n_classes)).all()):
            got = (f"{sim_labels.dtype} {tuple(sim_labels.shape)}" if isinstance(sim_labels, torch.Tensor)
                   else type(sim_labels).__name__)
            raise ValueError(f"fit: sim_labels must be a ({len(sim)},) int64 tensor of class indices in "
                             f"[0, {self.n_classes}), one per sim shower, got {got}")
        self._labelled = (sim, sim_labels)
        try:
            return super().fit(sim, real, **kwargs)
        finally:
            self._labelled = None

    def start_fit(self, *, epochs: int) -> None:
        if self._labelled is None:
            raise RuntimeError("start_fit: call fit(sim, real, sim_labels=...), which trains the loss network")
        self.train_features(*self._labelled)
        self._optimizers = {"transform": torch.optim.Adam(self.transform_network.parameters(), lr=self.lr,
                                                          betas=(self.beta1, 0.999))}

    def train_features(self, sim: torch.Tensor, labels: torch.Tensor) -> None:
        """Train the loss network on (N, n_cells) MeV sim showers and their (N,) labels for ``feature_epochs``
        (batch order from torch's global generator), append its records to ``history``, and freeze it."""
        network, device = self.feature_network, self.codec.mask.device
        network.requires_grad_(True).train()
        optimizer = torch.optim.Adam(network.parameters(), lr=self.feature_lr)
        try:
            for epoch in range(1, self.feature_epochs + 1):
                start, loss_sum, right = time.perf_counter(), 0.0, 0
                order = torch.randperm(len(sim)).split(self.feature_batch_size)
                for index in order:
                    target = labels[index].to(device)
                    logits = network(sim[index].to(device))
                    loss = F.cross_entropy(logits, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.item()
                    right += int((logits.argmax(1) == target).sum())
                self.history.append({"stage": "features", "epoch": epoch, "lr": self.feature_lr,
                                     "feature_loss": loss_sum / len(order), "feature_accuracy": right / len(sim),
                                     "seconds": time.perf_counter() - start})
        finally:
            network.requires_grad_(False).eval()
        self._labels_digest = _digest(labels)

    def train_step(self, sim: torch.Tensor, real: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        losses, _ = self.transfer_losses(sim, real)
        # the style loss is of the gathered batches, the same in every process: the gradients are averaged
        # plainly, and the other losses, means over this process's showers, weighted by share x W (1 for one process)
        scale = self._share * distributed.world_size()
        objective = sum(v if k == "style" else v * scale for k, v in losses.items())
        self.step(self._optimizers["transform"], objective, gathered=True)
        return {k: v.detach() for k, v in losses.items()}

    def training_state(self) -> dict:
        return {"optimizers": {k: o.state_dict() for k, o in self._optimizers.items()},
                "sim_labels": self._labels_digest}

    def load_training_state(self, state: dict) -> None:
        if state["sim_labels"] != self._labels_digest:
            raise ValueError("fit: the checkpoint's run was trained with other sim_labels; resume with the same "
                             "sim_labels, or use another checkpoint_dir")
        for key, optimizer in self._optimizers.items():
            optimizer.load_state_dict(state["optimizers"][key])
