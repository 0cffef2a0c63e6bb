"""Batched inference: features, logits and class probabilities of a features + head model."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["Predictions", "predict"]


class Predictions(NamedTuple):
    """What :func:`predict` returns (float32, on the CPU)."""

    features: torch.Tensor  # (N, n_features)
    logits: torch.Tensor  # (N, n_classes)
    probs: torch.Tensor  # (N, n_classes) softmax of the logits


@torch.no_grad()
def predict(model: nn.Module, inputs: torch.Tensor, *, batch_size: int = 4096) -> Predictions:
    """Run ``model.features`` and ``model.head`` over (N, ...) inputs in eval mode, batch by batch.

    The model must have ``features(x) -> (B, F)`` and ``head(f) -> (B, C)``; its train/eval mode
    is restored afterwards. Batches run on the model's device; results come back to the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size!r}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features, logits = [], []
    try:
        for batch in inputs.split(batch_size):
            f = model.features(batch.to(device))
            features.append(f.float().cpu())
            logits.append(model.head(f).float().cpu())
    finally:
        model.train(was_training)
    n_classes = getattr(model, "n_classes", None)
    if not features:
        n_features = getattr(model, "n_features", 0)
        features, logits = [torch.zeros(0, n_features)], [torch.zeros(0, n_classes or 0)]
    logits = torch.cat(logits)
    return Predictions(torch.cat(features), logits, torch.softmax(logits, 1))
