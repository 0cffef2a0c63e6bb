"""``rescale_layers``: a label-free trivial baseline that matches each layer's energy scale to real data.

Per layer l, the scale r_l = mean real layer energy / mean simulated layer energy (unlabelled real
events, MeV) multiplies the simulation's cells of that layer before training, so the model learns on
simulation at the real detector's per-layer scale (a sampling-fraction or calibration residual) and
reads real events as they are.
"""

from __future__ import annotations

import torch

from .base import Method, register

__all__ = ["RescaleLayers", "layer_scales"]


def layer_scales(source: torch.Tensor, target: torch.Tensor, geometry) -> torch.Tensor:
    """(n_layers,) float64 mean target / mean source layer energy of (N, n_cells) MeV images (1 where source is 0)."""
    means = []
    for x in (source, target):
        layers = geometry.split_layers(x.double().clamp_min(0))
        means.append(torch.stack([layer.sum((-2, -1)).mean() for layer in layers]))
    ratio = means[1] / means[0]
    return torch.where(means[0] > 0, ratio, torch.ones_like(ratio))


@register
class RescaleLayers(Method):
    name, order = "rescale_layers", 3
    sees = frozenset({"target"})
    summary = "scales each simulated layer by the real / sim ratio of its mean energy (unlabelled real data)"

    def prepare(self, run) -> None:
        geometry = getattr(run.model, "geometry", None)
        if geometry is None:
            raise ValueError("rescale_layers: the model has no .geometry to find the layers")
        self.scales = layer_scales(run.labelled.inputs, run.target.inputs, geometry)
        self.cell_scale = torch.repeat_interleave(
            self.scales, torch.tensor([layer.n_cells for layer in geometry.layers])).float()

    def source_transform(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs * self.cell_scale.to(inputs.device)

    def epoch_record(self) -> dict:
        return {"layer_scales": [round(float(s), 6) for s in self.scales]}
