"""The report's figures as PNG files: ROC curves, feature embeddings, shower distributions, training curves.

Each function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot,
no global backend change) and writes the PNG atomically. Arrays may be NumPy arrays or CPU tensors.
matplotlib and scikit-learn are imported when a figure is drawn, not when the package is imported.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .. import geometry as _geometry
from ..io._atomic import atomic_path
from ..ops import shower_features

__all__ = ["plot_distributions", "plot_embeddings", "plot_roc", "plot_training_curves", "shower_quantities"]

_DPI = 110
_PANEL_SIZE = (4.2, 3.4)  # inches per panel
_MAX_COLUMNS = 4
_PERCENTILES = (0.5, 99.5)  # plot_distributions' binning range


def _figure(n_panels: int, *, columns: int = _MAX_COLUMNS):
    """A Figure with an Agg canvas and a grid of n_panels axes (unused grid cells removed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(n_panels, columns)
    rows = math.ceil(n_panels / columns)
    figure = Figure(figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n_panels:]:
        ax.remove()
    return figure, axes[:n_panels]


def _save(figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)


def _non_empty(name: str, argument: str, mapping) -> None:
    if not isinstance(mapping, Mapping) or not mapping:
        raise ValueError(f"{name}: {argument} must be a non-empty dict, got {mapping!r:.80}")


def _array(name: str, argument: str, value, ndim: int) -> np.ndarray:
    """value as a float64 NumPy array with ndim dims (ValueError naming the argument otherwise)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: {argument} must be a {ndim}-D array of numbers ({error})") from None
    if array.ndim != ndim:
        raise ValueError(f"{name}: {argument} must be {ndim}-D, got shape {array.shape}")
    return array


def plot_roc(path: str | os.PathLike, labels, probs_by_method: Mapping, *, class_names: Sequence[str]) -> None:
    """One-vs-rest ROC curves, one panel per class, one curve per method (its AUC in the legend).

    Args:
        path: the PNG to write.
        labels: (N,) true class indices in [0, C).
        probs_by_method: {method: (N, C) class probabilities (or any scores)}, drawn in the dict's order.
        class_names: C names, one per column of the probabilities.

    A class with no positive or no negative event has no ROC curve; its panel says so.
    """
    from sklearn.metrics import auc, roc_curve

    _non_empty("plot_roc", "probs_by_method", probs_by_method)
    class_names = list(class_names)
    n_classes = len(class_names)
    if n_classes < 2:
        raise ValueError(f"plot_roc: class_names must name at least 2 classes, got {class_names!r}")
    labels = _array("plot_roc", "labels", labels, 1)
    if labels.size == 0 or not np.all((labels == np.round(labels)) & (labels >= 0) & (labels < n_classes)):
        raise ValueError(f"plot_roc: labels must be a non-empty (N,) array of class indices in [0, {n_classes})")
    probs_by_method = {m: _array("plot_roc", f"probs_by_method[{m!r}]", p, 2) for m, p in probs_by_method.items()}
    for method, probs in probs_by_method.items():
        if probs.shape != (len(labels), n_classes):
            raise ValueError(
                f"plot_roc: probs_by_method[{method!r}] must be (N, C) = ({len(labels)}, {n_classes}) "
                f"to match labels and class_names, got {probs.shape}"
            )
        if not np.isfinite(probs).all():
            raise ValueError(f"plot_roc: probs_by_method[{method!r}] has non-finite values")

    figure, axes = _figure(n_classes)
    for c, (ax, class_name) in enumerate(zip(axes, class_names)):
        positive = labels == c
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate")
        ax.set_title(f"{class_name} vs rest")
        if positive.all() or not positive.any():
            ax.text(0.5, 0.5, "no ROC: labels hold only one side", ha="center", va="center", transform=ax.transAxes)
            continue
        for method, probs in probs_by_method.items():
            fpr, tpr, _ = roc_curve(positive, probs[:, c])
            ax.plot(fpr, tpr, linewidth=1.3, label=f"{method} (AUC {auc(fpr, tpr):.3f})")
        ax.legend(loc="lower right", fontsize="small")
    _save(figure, path)


def plot_embeddings(
    path: str | os.PathLike, features: Mapping, *, seed: int = 0, max_points: int = 2000
) -> None:
    """Sim and real features projected on their first two principal components, one panel per model.

    Args:
        path: the PNG to write.
        features: {model: (sim (n, F), real (m, F))}, panels in the dict's order (e.g. source_only
            first as "before", then each adapted method as "after").
        seed: seeds the subsampling.
        max_points: at most this many points per domain and panel (drawn without replacement).

    Per panel, a PCA (scikit-learn) is fitted on the union of the drawn sim and real points, so the
    axes show the directions of largest spread of that model's features.
    """
    from sklearn.decomposition import PCA

    _non_empty("plot_embeddings", "features", features)
    if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 1:
        raise ValueError(f"plot_embeddings: max_points must be a positive int, got {max_points!r}")
    pairs = {}
    for model, pair in features.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"plot_embeddings: features[{model!r}] must be a (sim, real) pair of (n, F) arrays")
        sim, real = (_array("plot_embeddings", f"features[{model!r}][{i}]", x, 2) for i, x in enumerate(pair))
        if sim.shape[1] != real.shape[1] or sim.shape[1] < 2 or len(sim) == 0 or len(real) == 0:
            raise ValueError(
                f"plot_embeddings: features[{model!r}] must be non-empty (n, F) and (m, F) arrays with the "
                f"same F >= 2, got {sim.shape} and {real.shape}"
            )
        if not (np.isfinite(sim).all() and np.isfinite(real).all()):
            raise ValueError(f"plot_embeddings: features[{model!r}] has non-finite values")
        pairs[model] = sim, real

    rng = np.random.default_rng(seed)
    figure, axes = _figure(len(pairs))
    for ax, (model, (sim, real)) in zip(axes, pairs.items()):
        sim, real = (x[rng.choice(len(x), size=min(len(x), max_points), replace=False)] for x in (sim, real))
        pca = PCA(n_components=2, random_state=seed).fit(np.concatenate([sim, real]))
        for points, domain, colour in ((sim, "sim", "tab:blue"), (real, "real", "tab:orange")):
            xy = pca.transform(points)
            ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.35, color=colour, linewidths=0, label=f"{domain} ({len(xy)})")
        explained = 100 * pca.explained_variance_ratio_
        ax.set(xlabel=f"PCA 1 ({explained[0]:.0f}% var.)", ylabel=f"PCA 2 ({explained[1]:.0f}% var.)")
        ax.set_title(model)
        ax.legend(loc="best", fontsize="small", markerscale=3)
    _save(figure, path)


def _edges(values: list[np.ndarray], bins: int) -> np.ndarray:
    """bins + 1 edges from the lowest 0.5th to the highest 99.5th percentile of the domains (widened if equal)."""
    low = min(np.percentile(v, _PERCENTILES[0]) for v in values)
    high = max(np.percentile(v, _PERCENTILES[1]) for v in values)
    if high <= low:
        half = 0.05 * abs(low) or 0.5
        low, high = low - half, high + half
    return np.linspace(low, high, bins + 1)


def plot_distributions(
    path: str | os.PathLike, quantities: Mapping, *, bins: int = 50, log_y: bool = False
) -> None:
    """Histograms of per-event quantities, one panel per quantity, one step line per domain.

    Args:
        path: the PNG to write.
        quantities: {quantity label: {domain: (N,) values}}, e.g. {"total energy [GeV]": {"sim": a,
            "real": b}}; panels and domains in the dicts' order.
        bins: bins per panel, shared by the domains, from the lowest 0.5th to the highest 99.5th
            percentile of the domains' finite values; values beyond count in the first or last bin.
        log_y: logarithmic density axis.

    Each histogram has unit area. Non-finite values are left out.
    """
    _non_empty("plot_distributions", "quantities", quantities)
    if not isinstance(bins, int) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"plot_distributions: bins must be a positive int, got {bins!r}")
    panels = {}
    for quantity, by_domain in quantities.items():
        _non_empty("plot_distributions", f"quantities[{quantity!r}]", by_domain)
        panel = {}
        for domain, values in by_domain.items():
            values = _array("plot_distributions", f"quantities[{quantity!r}][{domain!r}]", values, 1)
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise ValueError(f"plot_distributions: quantities[{quantity!r}][{domain!r}] has no finite value")
            panel[domain] = values
        panels[quantity] = panel

    figure, axes = _figure(len(panels))
    for ax, (quantity, panel) in zip(axes, panels.items()):
        edges = _edges(list(panel.values()), bins)
        for domain, values in panel.items():
            density, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges, density=True)
            ax.stairs(density, edges, linewidth=1.3, label=f"{domain} ({len(values)})")
        ax.set(xlabel=quantity, ylabel="density")
        if log_y:
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize="small")
    _save(figure, path)


def plot_training_curves(path: str | os.PathLike, histories: Mapping) -> None:
    """Per-epoch training loss (and cross-entropy where recorded), one panel per method.

    Args:
        path: the PNG to write.
        histories: {method: [{"stage": str, "epoch": int, "loss": float, "ce": float (optional), ...}]},
            one entry per epoch in training order. The x axis counts epochs over all stages; a dotted
            line and the stage's name mark where each stage starts.
    """
    _non_empty("plot_training_curves", "histories", histories)
    for method, history in histories.items():
        if not isinstance(history, Sequence) or not history:
            raise ValueError(f"plot_training_curves: histories[{method!r}] must be a non-empty list of epoch dicts")
        for i, entry in enumerate(history):
            if not isinstance(entry, Mapping) or not {"stage", "epoch", "loss"} <= entry.keys():
                raise ValueError(
                    f"plot_training_curves: histories[{method!r}][{i}] must be a dict with 'stage', 'epoch' "
                    f"and 'loss', got {entry!r:.120}"
                )

    figure, axes = _figure(len(histories), columns=3)
    for ax, (method, history) in zip(axes, histories.items()):
        x = np.arange(1, len(history) + 1)
        ax.plot(x, [float(entry["loss"]) for entry in history], marker=".", label="loss")
        if any("ce" in entry for entry in history):
            ce = [float(entry.get("ce", math.nan)) for entry in history]
            ax.plot(x, ce, marker=".", linestyle="--", label="cross-entropy")
        for i, entry in enumerate(history):
            if i == 0 or entry["stage"] != history[i - 1]["stage"]:
                ax.axvline(x[i] - 0.5, color="0.6", linestyle=":", linewidth=1)
                ax.text(x[i] - 0.4, 0.98, str(entry["stage"]), transform=ax.get_xaxis_transform(),
                        va="top", fontsize="small", color="0.35")
        ax.set(xlabel="epoch", ylabel="loss")
        ax.set_title(method)
        ax.legend(loc="upper right", fontsize="small")
    _save(figure, path)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().double().numpy()


def shower_quantities(images, energy, geometry) -> dict[str, np.ndarray]:
    """Per-event shower quantities for :func:`plot_distributions`, from :func:`sim2real_fast.shower_features`.

    Args:
        images: (N, n_cells) cell energies in MeV.
        energy: (N,) incident energies in GeV.
        geometry: a :class:`~sim2real_fast.geometry.Geometry` or a preset name.

    Returns:
        {label: (N,) float64}: ``total energy [GeV]``, ``incident energy [GeV]``, then per layer
        ``<layer> energy fraction`` (of the total; 0 for an empty shower), ``<layer> centroid x [mm]``,
        ``... centroid y``, ``... width x``, ``... width y`` (in ``[cells]`` for layers without a cell
        size) and ``sparsity <layer>`` (fraction of the layer's cells with energy > 0).
    """
    geometry = _geometry.get(geometry)
    images = torch.as_tensor(images)
    if isinstance(energy, torch.Tensor):
        energy = energy.detach().cpu()
    energy = np.asarray(energy, dtype=np.float64)
    if images.dim() != 2 or energy.shape != (images.shape[0],):
        raise ValueError(
            f"shower_quantities: expected images (N, n_cells) and energy (N,), got {tuple(images.shape)} "
            f"and {energy.shape}"
        )
    features = shower_features(images.detach(), geometry)
    total = _numpy(features.total)
    quantities = {"total energy [GeV]": total / 1000.0, "incident energy [GeV]": energy}
    fraction = _numpy(features.layer_energy) / np.where(total > 0, total, np.inf)[:, None]
    for i, layer in enumerate(geometry.layers):
        unit = "cells" if layer.kind == "cartesian" and layer.cell_size is None else "mm"
        quantities[f"{layer.name} energy fraction"] = fraction[:, i]
        for feature in ("centroid_x", "centroid_y", "width_x", "width_y"):
            label = feature.replace("_", " ")
            quantities[f"{layer.name} {label} [{unit}]"] = _numpy(getattr(features, feature)[:, i])
        quantities[f"sparsity {layer.name}"] = _numpy(features.sparsity[:, i])
    return quantities
