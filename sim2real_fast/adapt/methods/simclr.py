"""``simclr``: NT-Xent pretraining on source + target under calorimeter augmentations (Chen et al., ICML 2020),
then the supervised stages on augmented labelled batches."""

from __future__ import annotations

import torch
from torch import nn

from ... import distributed
from ..augment import CaloAugment
from .base import Method, Stage, register


class ProjectionHead(nn.Module):
    """MLP (N, n_features) -> (N, out_features): Linear-ReLU-Linear, used only while pretraining."""

    def __init__(self, n_features: int, out_features: int = 64, *, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or n_features
        for name, value in (("n_features", n_features), ("out_features", out_features), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHead: {name} must be a positive int, got {value!r}")
        self.mlp = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy of two views (N, D) of the same N events; a 0-dim mean.

    Each of the 2N projections is L2-normalised; row i's positive is its other view, the other
    2N - 2 projections are its negatives: loss_i = -log softmax_j(cos(z_i, z_j) / temperature)[pos(i)].
    """
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(f"nt_xent: expected two (N, D) views with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature!r}")
    n = z1.shape[0]
    z = nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    similarity = (z @ z.T) / temperature
    similarity = similarity.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return nn.functional.cross_entropy(similarity, positive)


@register
class SimCLR(Method):
    name, order = "simclr", 9
    sees = frozenset({"target"})
    summary = "contrastive pretraining on unlabelled sim + real, then the classifier on augmented labelled batches"

    def stages(self):
        c = self.config
        return (Stage("pretrain", 0, c.simclr_epochs, c.simclr_lr, "pretrain", owner=self.name),)

    def prepare(self, run) -> None:
        if run.augment is None:
            if getattr(run.model, "geometry", None) is None:
                raise ValueError(f"fit({run.name!r}): the model has no .geometry for the default CaloAugment; "
                                 "pass augment=")
            run.augment = CaloAugment(run.model.geometry)

    def stage_modules(self, run, stage):
        return {"projection": ProjectionHead(run.model.n_features, self.config.simclr_projection)}

    def augment_labelled(self, run, inputs):
        return run.augment(inputs, run.generator) if self.config.simclr_augment_labelled else inputs

    def run_epoch(self, run, stage, bar) -> dict:
        """One pass of NT-Xent over source + target events, two augmented views of each.

        Data-parallel as the supervised steps are: every rank draws and augments the whole batch, puts
        its shard of the views through ``model.features`` and computes the loss on the gathered features.
        """
        c, g, device = self.config, run.generator, run.device
        pool = torch.cat([run.labelled.inputs, run.target.inputs])
        projection, optimizer = run.heads["projection"], run.optimizers[stage.optimizer]
        total = torch.zeros((), device=device)
        batches = run.batches(len(pool))
        for index in batches:
            x = pool[index].to(device)
            views = torch.cat([run.augment(x, g), run.augment(x, g)])
            z = projection(distributed.gather(run.model.features(distributed.shard(views))))
            loss = nt_xent(z[: len(x)], z[len(x):], temperature=c.simclr_temperature)
            run.optimize(optimizer, loss)
            total += loss.detach()
            if bar is not None:
                bar.update(1)
        mean = float(total) / len(batches)
        return {"steps": len(batches), "loss": mean, "contrastive": mean}

    def steps(self, run) -> int:
        return run.n_batches(len(run.labelled) + len(run.target))
