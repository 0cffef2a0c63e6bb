"""Learned detectors of faulty HCAL occupancy maps: network inputs, models, map and channel scores.

A detector is a features + head classifier (:func:`build_model`: the ``"cnn"``
:class:`~sim2real_fast.models.OccupancyCNN` or timm's ``"vit"``
:class:`~sim2real_fast.models.OccupancyViT`) of the 7 depths as channels, with 1 + 5 classes (good
and the fault types, :data:`~sim2real_fast.dqm.FAULTS`), trained on simulated maps through
:func:`sim2real_fast.adapt.fit` with any adaptation method. It sees the maps as :func:`model_inputs`
makes them: by default the signed per-channel z-scores against the run's reference, the classic DQM
comparison (a first attempt found that a ViT on raw maps did not learn the fault classes).

- :func:`map_scores`: the log-odds of "faulty", logsumexp(logits[1:]) - logits[0], higher is more
  anomalous (no saturation at probability 1, unlike 1 - p(good));
- :func:`channel_scores`: per channel |x * d(map score)/dx|, the input-times-gradient attribution
  (Shrikumar et al., arXiv:1605.01713): the channels that make the map look faulty.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..io import OccupancyMaps
from ..simulate.dqm import FAULTS, N_DEPTHS, N_IETA, N_IPHI
from .normalise import Reference, normalise

__all__ = ["MODELS", "build_model", "channel_scores", "map_scores", "model_inputs"]

MODELS = ("cnn", "vit")
_LOG_COUNTS = math.log1p(2000.0)  # counts per LS reach the LS's events, 1000-2100 in run 306138


def model_inputs(
    maps: OccupancyMaps | torch.Tensor,
    how: str = "zscore",
    *,
    reference: Reference | None = None,
    events: torch.Tensor | None = None,
) -> torch.Tensor:
    """(LS, 42336) float32 network inputs: the maps normalised as ``how`` (:data:`~sim2real_fast.dqm.NORMALISATIONS`), then
    brought to order one: ``raw`` log1p(counts) / log1p(2000), ``events`` the per-event occupancy in
    [0, 1], ``median`` log1p(counts / median), ``reference`` log10 of the ratio clipped to
    [1e-3, 1e3], ``zscore`` asinh(z) (linear for |z| < 1, logarithmic beyond)."""
    x = normalise(maps, how, events=events, reference=reference)
    if how == "raw":
        return (torch.log1p(x) / _LOG_COUNTS).float()
    if how == "median":
        return torch.log1p(x).float()
    if how == "reference":
        return torch.log10(x.clamp(1e-3, 1e3)).float()
    if how == "zscore":
        return torch.asinh(x).float()
    return x.float()


def build_model(name: str, *, n_classes: int = len(FAULTS), seed: int = 0) -> nn.Module:
    """A freshly initialised detector of (N, 7 depths, 72 iphi, 84 ieta) maps, seeded by ``seed``."""
    from ..models import OccupancyCNN, OccupancyViT

    if name not in MODELS:
        raise ValueError(f"model: expected one of {MODELS}, got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "cnn":
            return OccupancyCNN((N_IPHI, N_IETA), N_DEPTHS, n_classes)
        return OccupancyViT((N_IPHI, N_IETA), N_DEPTHS, n_classes)


def _log_odds(logits: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits[:, 1:], 1) - logits[:, 0]


@torch.no_grad()
def map_scores(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores (N,), probs (N, n_classes))`` of (N, 42336) inputs: the log-odds of "faulty" and the
    class probabilities, in eval mode, on the CPU."""
    from ..models import predict

    out = predict(model, inputs, batch_size=batch_size)
    return _log_odds(out.logits), out.probs


def channel_scores(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 64) -> torch.Tensor:
    """(N, 42336) per-channel attributions |x * d(log-odds of faulty)/dx| of (N, 42336) inputs (eval mode)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in inputs.split(batch_size):
            x = batch.to(device).detach().requires_grad_(True)
            with torch.enable_grad():
                score = _log_odds(model.head(model.features(x)))
            (grad,) = torch.autograd.grad(score.sum(), x)
            out.append((grad * x).abs().detach().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else inputs.new_zeros(inputs.shape)

