"""The figures of ``sim2real dqm``: occupancy sim vs real, fault ROC curves, anomaly maps, run robustness."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch

from .plots import _figure, _save

__all__ = ["plot_anomaly_maps", "plot_fault_roc", "plot_occupancy", "plot_run_robustness"]

_SHAPE = (7, 72, 84)


def plot_occupancy(path: str | os.PathLike, mean_sim: torch.Tensor, mean_real: torch.Tensor) -> None:
    """Per depth, the mean per-event occupancy of good maps vs ieta (averaged over iphi), sim and real."""
    sim, real = (np.asarray(m.reshape(_SHAPE).mean(1)) for m in (mean_sim, mean_real))
    depths = [d for d in range(_SHAPE[0]) if sim[d].any() or real[d].any()]
    figure, axes = _figure(len(depths))
    for ax, d in zip(axes, depths):
        ax.plot(sim[d], drawstyle="steps-mid", label="sim")
        ax.plot(real[d], drawstyle="steps-mid", label="real")
        ax.set(title=f"depth {d + 1}", xlabel="ieta column", ylabel="hits per event (mean over iphi)")
        ax.legend(fontsize="small")
    _save(figure, path)


def plot_fault_roc(path: str | os.PathLike, labels: torch.Tensor, scores: Mapping[str, torch.Tensor]) -> None:
    """ROC curves of faulty (label > 0) against good maps, one curve per detector (its AUC in the legend)."""
    from sklearn.metrics import auc, roc_curve

    faulty = np.asarray(labels) > 0
    figure, (ax,) = _figure(1)
    ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
    for name, values in scores.items():
        fpr, tpr, _ = roc_curve(faulty, np.asarray(values, dtype=np.float64))
        ax.plot(fpr, tpr, linewidth=1.3, label=f"{name} (AUC {auc(fpr, tpr):.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-alarm rate (good maps)", ylabel="fault efficiency",
           title=f"real test maps: {int(faulty.sum())} faulty, {int((~faulty).sum())} good")
    ax.legend(loc="lower right", fontsize="small")
    _save(figure, path)


def plot_anomaly_maps(path: str | os.PathLike, touched: torch.Tensor, channel_scores: Mapping[str, torch.Tensor],
                      titles: list[str]) -> None:
    """Per row one test LS: the touched cells and each detector's channel scores, at the depth the fault
    touches most. ``touched`` (k, 42336) bool, ``channel_scores`` {name: (k, 42336)}."""
    k, names = len(touched), list(channel_scores)
    figure, axes = _figure(k * (1 + len(names)), columns=1 + len(names))
    axes = axes.reshape(k, 1 + len(names))
    for i in range(k):
        cells = touched[i].reshape(_SHAPE)
        depth = int(cells.flatten(1).sum(1).argmax())
        panels = [("fault (touched cells)", cells[depth].float())]
        panels += [(name, channel_scores[name][i].reshape(_SHAPE)[depth]) for name in names]
        for ax, (name, image) in zip(axes[i], panels):
            ax.imshow(np.asarray(image), origin="lower", aspect="auto", cmap="viridis")
            ax.set(title=f"{titles[i]}, depth {depth + 1}: {name}", xlabel="ieta column", ylabel="iphi row")
    _save(figure, path)


def plot_run_robustness(path: str | os.PathLike, curves: Mapping[str, list[dict]]) -> None:
    """Run-classification AUC per LS range of the test half, one curve per (model, normalisation):
    ``curves`` {label: [{"ls": [first, last], "auc": a}, ...]}."""
    figure, (ax,) = _figure(1)
    for name, points in curves.items():
        centres = [(p["ls"][0] + p["ls"][1]) / 2 for p in points]
        ax.plot(centres, [np.nan if p["auc"] is None else p["auc"] for p in points], marker="o", label=name)
    ax.set(ylim=(0.4, 1.02), xlabel="LS of the test half (trained on the first half)", ylabel="ROC AUC run A vs B")
    ax.axhline(0.5, color="0.7", linestyle=":", linewidth=1)
    ax.legend(fontsize="small")
    _save(figure, path)
