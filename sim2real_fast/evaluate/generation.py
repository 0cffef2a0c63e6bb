"""CaloChallenge-grade evaluation of generated showers against reference showers, next to the floor.

:func:`evaluate_generation` judges any pair of shower samples, each an object with ``.images`` (N,
n_cells) MeV, ``.labels`` (N,) int64 or None and ``.energy`` (N,) incident energy in GeV
(:class:`sim2real_fast.io.Showers`, simulated showers, :class:`sim2real_fast.generate.Samples`). Every
distance is computed twice, side by side: generated vs reference and the floor, a second reference
sample (another simulator seed) vs the reference, or, without one, one random half of the reference vs
the other. :func:`write_generation_report` writes ``results.json``, ``report.md`` and the figures.

The classifier test follows the CaloChallenge's ``code/evaluate.py``: equal numbers of events of both
samples, split 60 / 20 / 20 into train, validation and test; an MLP (3 x 512 LeakyReLU, BCE with
logits, Adam at 2e-4, batches of 1000, 50 epochs) keeps the epoch with the best validation accuracy;
its test predictions, calibrated by isotonic regression fitted on the validation predictions, give
the AUC and JSD = (ln 2 - BCE) / ln 2.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import geometry as _geometry
from ..io._atomic import atomic_path
from ..ops import shower_features
from .physics import _default_bins, fpd, kpd, ks_statistic, separation_power, wasserstein1

__all__ = ["classifier_test", "evaluate_generation", "write_generation_report"]

#: The feature added to :meth:`ShowerFeatures.names`: total deposited / incident energy.
RATIO = "total_over_incident"
#: The two comparisons of every metric: generated vs reference, and the floor (reference vs reference).
COMPARISONS = ("generated", "floor")

_MIN_EVENTS = 20
_SPLIT = (0.6, 0.2, 0.2)  # train, validation (epoch choice and calibration), test
_EPOCHS = 50
_HIDDEN = 512
_BATCH = 1000
_LR = 2e-4
_DPI = 110
_PARTICLE_FEATURES = ("energy_", "width_x_", "sparsity_", "max_fraction", RATIO)  # per-particle figure panels
_NOTES = {
    "sample": "reference vs reference: the given floor sample (another seed of the reference) vs the reference",
    "halves": (
        "reference vs reference: two random halves of the reference (no floor sample was given); each half has "
        "half the events, so the floor's statistical part is larger than at full statistics (a conservative floor)"
    ),
}


class _Sample(NamedTuple):
    images: torch.Tensor  # (N, n_cells) float64 MeV, CPU
    labels: np.ndarray | None  # (N,) int64 >= 0
    energy: np.ndarray  # (N,) float64 GeV, > 0

    def subset(self, index: np.ndarray) -> _Sample:
        labels = None if self.labels is None else self.labels[index]
        return _Sample(self.images[torch.from_numpy(index)], labels, self.energy[index])


def _sample(name: str, x, geometry: _geometry.Geometry) -> _Sample:
    """``x``'s images, labels and energies, checked; ValueError naming ``name`` otherwise."""
    if not all(hasattr(x, key) for key in ("images", "labels", "energy")):
        raise ValueError(f"{name}: expected an object with .images, .labels and .energy, got {type(x).__name__}")
    images = torch.as_tensor(x.images).detach().cpu()
    if images.dim() != 2 or images.shape[1] != geometry.n_cells:
        got = tuple(images.shape)
        raise ValueError(f"{name}.images: expected (N, {geometry.n_cells}) for geometry {geometry.name!r}, got {got}")
    n = len(images)
    if n == 0:
        raise ValueError(f"{name}: the sample is empty")
    if not images.dtype.is_floating_point or not bool(torch.isfinite(images).all()):
        got = images.dtype if not images.dtype.is_floating_point else "NaN or inf"
        raise ValueError(f"{name}.images: expected finite floating-point energies (MeV), got {got}")
    energy = np.asarray(torch.as_tensor(x.energy).detach().cpu(), dtype=np.float64)
    if energy.shape != (n,) or not (np.isfinite(energy).all() and (energy > 0).all()):
        raise ValueError(f"{name}.energy: expected ({n},) finite incident energies > 0 (GeV)")
    labels = None
    if x.labels is not None:
        labels = torch.as_tensor(x.labels).detach().cpu()
        if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"{name}.labels: expected ({n},) integer class indices or None, got {labels.dtype}")
        labels = labels.numpy().astype(np.int64)
        if (labels < 0).all():  # io.Showers marks a source without labels with -1
            labels = None
        elif (labels < 0).any():
            raise ValueError(f"{name}.labels: expected class indices >= 0 (or all -1 for none)")
    if n < _MIN_EVENTS:
        raise ValueError(f"{name}: expected at least {_MIN_EVENTS} showers, got {n}")
    return _Sample(images.double(), labels, energy)


def _limited(sample: _Sample, max_events: int | None, rng: np.random.Generator) -> _Sample:
    """At most ``max_events`` showers of ``sample``, a random subset in the original order."""
    if max_events is None or len(sample.images) <= max_events:
        return sample
    return sample.subset(np.sort(rng.permutation(len(sample.images))[:max_events]))


def _samples(generated, reference, floor, geometry, seed: int, max_events: int | None) -> dict[str, _Sample]:
    """The checked samples: the pairs ("generated", "reference") and ("floor", "floor_reference")."""
    rng = np.random.default_rng(seed)
    samples = {"generated": _sample("generated", generated, geometry),
               "reference": _sample("reference", reference, geometry)}
    if floor is not None:
        samples["floor"] = _sample("floor", floor, geometry)
    samples = {key: _limited(s, max_events, rng) for key, s in samples.items()}
    if floor is None:
        n = len(samples["reference"].images)
        if n < 2 * _MIN_EVENTS:
            least = 2 * _MIN_EVENTS
            raise ValueError(f"reference: expected at least {least} showers for the floor's two halves, got {n}")
        order = rng.permutation(n)
        samples["floor"] = samples["reference"].subset(np.sort(order[: n // 2]))
        samples["floor_reference"] = samples["reference"].subset(np.sort(order[n // 2 :]))
    else:
        samples["floor_reference"] = samples["reference"]
    return samples


def _features(sample: _Sample, geometry) -> tuple[np.ndarray, list[str]]:
    """(N, F) float64 shower features and E_total / E_incident, and their names."""
    features = shower_features(sample.images, geometry)
    x = features.as_tensor().numpy()
    ratio = x[:, 0] / (1000.0 * sample.energy)
    return np.column_stack([x, ratio]), [*features.names(), RATIO]


def _bin_edges(names: list[str], reference: np.ndarray) -> list[np.ndarray]:
    """CaloChallenge's binning by feature kind over the reference's range (:func:`physics._default_bins`)."""
    edges = []
    for j, name in enumerate(names):
        choice = _default_bins(name)
        edges.append(np.histogram_bin_edges(reference[:, j], bins=choice) if isinstance(choice, int) else choice)
    return edges


# ---- the classifier test -------------------------------------------------------------------------------
def _mlp(n_inputs: int) -> torch.nn.Sequential:
    """The CaloChallenge's DNN: an input layer and 2 hidden layers of 512 LeakyReLU units, one logit out."""
    layers = [torch.nn.Linear(n_inputs, _HIDDEN), torch.nn.LeakyReLU()]
    for _ in range(2):
        layers += [torch.nn.Linear(_HIDDEN, _HIDDEN), torch.nn.LeakyReLU()]
    return torch.nn.Sequential(*layers, torch.nn.Linear(_HIDDEN, 1))


@torch.no_grad()
def _probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(torch.cat([model(batch) for batch in x.split(4096)])[:, 0]).double().numpy()


def _splits(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Train, validation and test indices of n events: the CaloChallenge's 60 / 20 / 20 (``ttv_split``)."""
    cuts = np.cumsum((np.asarray(_SPLIT[:2]) * n).astype(int))
    return np.split(rng.permutation(n), cuts)


def classifier_test(reference: np.ndarray, candidate: np.ndarray, *, seed: int = 0) -> dict:
    """The CaloChallenge's classifier two-sample test: calibrated AUC and JSD telling ``candidate`` from ``reference``.

    Args:
        reference, candidate: (N, d) and (M, d) classifier inputs; min(N, M) random events of each are used.
        seed: the subsample, the splits, the initialisation and the batch order.

    Inputs are standardised with the training split's mean and std (the CaloChallenge uses its inputs as
    they come). The batch size is the CaloChallenge's 1000, or less so that an epoch has >= 10 batches.
    Returns ``{"auc", "jsd", "auc_uncalibrated", "accuracy", "best_epoch", "n_train", "n_validation",
    "n_test"}`` (the AUC and accuracy of the test split, counts of events of both samples together).
    JSD: 0 for indistinguishable samples, 1 for disjoint ones (it can be slightly negative).
    """
    from sklearn.isotonic import IsotonicRegression
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    n = min(len(reference), len(candidate))
    a, b = reference[rng.permutation(len(reference))[:n]], candidate[rng.permutation(len(candidate))[:n]]
    parts = [(np.concatenate([a[i], b[j]]), np.r_[np.zeros(len(i)), np.ones(len(j))])
             for i, j in zip(_splits(n, rng), _splits(n, rng))]
    mean, std = parts[0][0].mean(0), parts[0][0].std(0)
    std = np.where(std > 0, std, 1.0)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = [
        (torch.from_numpy((x - mean) / std).float(), y) for x, y in parts
    ]
    batch = max(1, min(_BATCH, math.ceil(len(x_train) / 10)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _mlp(x_train.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=_LR)
    order = torch.Generator().manual_seed(seed)
    target = torch.from_numpy(y_train).float()[:, None]
    best, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, _EPOCHS + 1):
        model.train()
        for index in torch.randperm(len(x_train), generator=order).split(batch):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x_train[index]), target[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        accuracy = float(np.mean((_probabilities(model, x_val) > 0.5) == y_val))
        if accuracy > best:
            best, best_epoch = accuracy, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if accuracy == 1.0:
            break
    model.load_state_dict(best_state)
    p_val, p_test = _probabilities(model, x_val), _probabilities(model, x_test)
    calibrated = IsotonicRegression(out_of_bounds="clip", y_min=1e-6, y_max=1 - 1e-6).fit(p_val, y_val).predict(p_test)
    bce = -np.mean(y_test * np.log(calibrated) + (1 - y_test) * np.log1p(-calibrated))
    return {
        "auc": float(roc_auc_score(y_test, calibrated)),
        "jsd": float((math.log(2.0) - bce) / math.log(2.0)),
        "auc_uncalibrated": float(roc_auc_score(y_test, p_test)),
        "accuracy": float(np.mean((calibrated > 0.5) == y_test)),
        "best_epoch": best_epoch,
        "n_train": len(y_train),
        "n_validation": len(y_val),
        "n_test": len(y_test),
    }


def _conditions(sample: _Sample, n_classes: int) -> np.ndarray:
    """(N, 1 [+ C]) classifier conditions: log10(E_inc / MeV) and the one-hot particle (when C > 0)."""
    columns = [np.log10(1000.0 * sample.energy)[:, None]]
    if n_classes:
        columns.append(np.eye(n_classes)[sample.labels])
    return np.concatenate(columns, 1)


def _cell_inputs(sample: _Sample, n_classes: int) -> np.ndarray:
    """The CaloChallenge's low-level inputs: conditions and 100 x cell energy / incident energy."""
    cells = 100.0 * sample.images.numpy() / (1000.0 * sample.energy[:, None])
    return np.concatenate([_conditions(sample, n_classes), cells], 1)


def _feature_inputs(sample: _Sample, features: np.ndarray, names: list[str], n_classes: int) -> np.ndarray:
    """High-level inputs: conditions and the features, energies as log10(max(E, 0) / MeV + 1e-8) (CaloChallenge)."""
    energies = np.array([name.startswith("energy_") for name in names])
    x = features.copy()
    x[:, energies] = np.log10(np.clip(x[:, energies], 0.0, None) + 1e-8)
    return np.concatenate([_conditions(sample, n_classes), x], 1)


# ---- per-sample quantities -----------------------------------------------------------------------------
def _sparsity(sample: _Sample, geometry) -> dict:
    """Per layer: mean over showers of the fraction of non-zero cells, and its standard error."""
    fractions = np.stack([(layer != 0).flatten(1).double().mean(1).numpy()
                          for layer in geometry.split_layers(sample.images)], 1)
    n = len(fractions)
    return {"mean": fractions.mean(0).tolist(), "error": (fractions.std(0, ddof=1) / math.sqrt(n)).tolist()}


def _response(ratio: np.ndarray) -> dict:
    """Response (mean E_total / E_inc) and resolution (std / mean) of one group, with errors (NaN where undefined)."""
    n = len(ratio)
    mean = float(ratio.mean()) if n else math.nan
    std = float(ratio.std(ddof=1)) if n > 1 else math.nan
    resolution = std / mean if n > 1 and mean != 0 else math.nan
    return {"n": n, "response": mean, "response_error": std / math.sqrt(n) if n > 1 else math.nan,
            "resolution": resolution, "resolution_error": resolution / math.sqrt(2 * (n - 1)) if n > 1 else math.nan}


def _energy_table(sample: _Sample, ratio: np.ndarray, edges: np.ndarray, particle: int | None) -> list[dict]:
    """:func:`_response` per incident-energy bin, for one particle (None: all)."""
    chosen = np.ones(len(ratio), bool) if particle is None else sample.labels == particle
    which = np.digitize(sample.energy, edges[1:-1])
    inside = chosen & (sample.energy >= edges[0]) & (sample.energy <= edges[-1])
    return [_response(ratio[inside & (which == k)]) for k in range(len(edges) - 1)]


def _particle_names(n_classes: int) -> list[str]:
    """The simulator's particle names (e+, gamma, pi+) for up to three classes, else class_k."""
    from ..simulate import PARTICLES

    names = sorted(PARTICLES, key=PARTICLES.get)
    return names[:n_classes] if n_classes <= len(names) else [f"class_{k}" for k in range(n_classes)]


def _energy_bins(energy_bins, reference: _Sample) -> np.ndarray:
    if energy_bins is None:
        edges = np.unique(np.quantile(reference.energy, np.linspace(0.0, 1.0, 6)))
        return edges if len(edges) > 1 else np.array([edges[0] * 0.5, edges[0] * 1.5])
    edges = np.asarray(energy_bins, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise ValueError(f"energy_bins: expected at least 2 finite, increasing edges (GeV), got {energy_bins!r}")
    return edges


def evaluate_generation(
    generated,
    reference,
    *,
    geometry,
    floor=None,
    seed: int = 0,
    energy_bins=None,
    max_events: int | None = None,
) -> dict:
    """Every CaloChallenge distance of generated showers to reference showers, with the floor next to each.

    Args:
        generated, reference, floor: objects with ``.images`` (N, n_cells) MeV, ``.labels`` (N,) int64
            class indices or None (all -1: none) and ``.energy`` (N,) incident energies in GeV (> 0).
            ``floor``: a second reference sample (another seed of the simulator), compared with the
            reference as the generated one is; None: one random half of the reference vs the other
            (half the statistics each: ``"floor_note"`` says so).
        geometry: a :class:`~sim2real_fast.geometry.Geometry` or a preset name.
        seed: the subsets, the halves, the FPD / KPD batches and the classifiers.
        energy_bins: incident-energy bin edges in GeV for the response and resolution; default up to 5
            bins with equal numbers of reference showers. Showers outside them are left out there.
        max_events: at most this many showers of each sample, a random subset (default all).

    Returns a dict; ``"generated"`` and ``"floor"`` (:data:`COMPARISONS`) key every comparison:

    - ``"features"``: {comparison: {feature: {"separation_power", "ks", "w1"}}} over the features of
      :func:`sim2real_fast.shower_features` and ``total_over_incident`` (E_total / E_incident):
      separation power with the CaloChallenge's binning by feature kind over the whole reference's range
      (:func:`compare_features`; an underflow and an overflow bin count as separated), W1 in the
      feature's unit;
    - ``"fpd"``, ``"kpd"``: {comparison: {"value", "error"}} on the features standardised with the whole
      reference's mean and std (:func:`fpd`, :func:`kpd`, jetnet's definitions);
    - ``"classifier"``: {"cells" | "features": {comparison: :func:`classifier_test`}}; inputs are the
      CaloChallenge's (log10 E_inc, 100 x cells / E_inc, or the features with log10 energies) and the
      one-hot particle where both samples have labels;
    - ``"sparsity"``: {"layers", comparison: {"sample", "reference": {"mean", "error"} per layer}};
    - ``"energy"``: {"bins", "particles": {"all" | particle: {comparison: {"sample", "reference": [per bin
      {"n", "response", "response_error", "resolution", "resolution_error"}]}}}}; resolution = std / mean
      of E_total / E_inc, its error the Gaussian std / mean / sqrt(2 (n - 1));
    - ``"average_shower"``: {"layers", "generated", "reference": [(rows, cols) float64 mean MeV per layer]};
    - ``"geometry"``, ``"seed"``, ``"max_events"``, ``"n"`` {"generated", "reference", "floor",
      "floor_reference"}, ``"floor_source"`` ("sample" | "halves"), ``"floor_note"``, ``"feature_names"``,
      ``"particles"`` (names of the label indices).

    In each comparison the second sample is the reference: the whole reference for "generated", the
    reference (or its other half) for "floor". Values are Python floats (NaN where undefined) except
    the average showers. Raises a one-line ValueError naming the argument for mismatched cells, empty
    samples, NaNs or energies <= 0.
    """
    geometry = _geometry.get(geometry)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")
    if max_events is not None and (isinstance(max_events, bool) or not isinstance(max_events, numbers.Integral)
                                   or max_events < _MIN_EVENTS):
        raise ValueError(f"max_events: expected None or an integer >= {_MIN_EVENTS}, got {max_events!r}")
    samples = _samples(generated, reference, floor, geometry, int(seed), max_events)
    pairs = {"generated": ("generated", "reference"), "floor": ("floor", "floor_reference")}
    computed = {key: _features(s, geometry) for key, s in samples.items()}
    names = computed["reference"][1]
    features = {key: x for key, (x, _) in computed.items()}
    edges = _bin_edges(names, features["reference"])
    mean, std = features["reference"].mean(0), features["reference"].std(0)
    std = np.where(std > 0, std, 1.0)
    labelled = [s.labels for s in samples.values() if s.labels is not None]
    particles = _particle_names(int(max(labels.max() for labels in labelled)) + 1) if labelled else []

    result: dict = {
        "geometry": geometry.name, "seed": int(seed), "max_events": max_events,
        "n": {key: len(s.images) for key, s in samples.items()},
        "floor_source": "halves" if floor is None else "sample",
        "floor_note": _NOTES["halves" if floor is None else "sample"],
        "feature_names": names, "particles": particles,
        "features": {}, "fpd": {}, "kpd": {}, "classifier": {"cells": {}, "features": {}},
        "sparsity": {"layers": [layer.name for layer in geometry.layers]},
    }
    bins = _energy_bins(energy_bins, samples["reference"])
    energy = {"bins": bins.tolist(), "particles": {}}
    for comparison, (key, ref_key) in pairs.items():
        sample, ref = samples[key], samples[ref_key]
        x, r = features[key], features[ref_key]
        separation = [separation_power(r[:, j], x[:, j], bins=edges[j]) for j in range(len(names))]
        ks, w1 = ks_statistic(r, x), wasserstein1(r, x)
        result["features"][comparison] = {
            name: {"separation_power": float(separation[j]), "ks": float(ks[j]), "w1": float(w1[j])}
            for j, name in enumerate(names)
        }
        scaled = ((r - mean) / std, (x - mean) / std)
        for metric, function in (("fpd", fpd), ("kpd", kpd)):
            value, error = function(*scaled, scale=None, seed=seed)
            result[metric][comparison] = {"value": value, "error": error}
        n_classes = len(particles) if sample.labels is not None and ref.labels is not None else 0
        result["classifier"]["cells"][comparison] = classifier_test(
            _cell_inputs(ref, n_classes), _cell_inputs(sample, n_classes), seed=seed)
        result["classifier"]["features"][comparison] = classifier_test(
            _feature_inputs(ref, r, names, n_classes), _feature_inputs(sample, x, names, n_classes), seed=seed)
        result["sparsity"][comparison] = {"sample": _sparsity(sample, geometry), "reference": _sparsity(ref, geometry)}
        groups = {"all": None, **({name: c for c, name in enumerate(particles)} if n_classes else {})}
        for group, particle in groups.items():
            energy["particles"].setdefault(group, {})[comparison] = {
                "sample": _energy_table(sample, x[:, -1], bins, particle),
                "reference": _energy_table(ref, r[:, -1], bins, particle),
            }
    result["energy"] = energy
    result["average_shower"] = {
        "layers": result["sparsity"]["layers"],
        **{key: [layer.mean(0).numpy() for layer in geometry.split_layers(samples[key].images)]
           for key in ("generated", "reference")},
    }
    return result


# ---- the report ----------------------------------------------------------------------------------------
def _plain(value):
    """JSON-ready: NaN and infinities -> None, NumPy arrays -> lists, NumPy scalars -> Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _style():
    """A context that draws in mplhep's ROOT style when mplhep is installed, else in matplotlib's."""
    import matplotlib.style

    try:
        import mplhep
    except ImportError:
        return matplotlib.style.context({})
    return matplotlib.style.context(mplhep.style.ROOT)


def _figure(width: float, height: float, *, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)


def _plot_average_showers(path: Path, average: Mapping) -> None:
    """Mean energy per cell, rows reference and generated, one column per layer (log colour scale per column)."""
    from matplotlib.colors import LogNorm

    rows = ("reference", "generated")
    layers = average["layers"]
    figure = _figure(3.4 * len(layers) + 1.0, 2.6 * len(rows))
    axes = figure.subplots(len(rows), len(layers), squeeze=False)
    for j, layer in enumerate(layers):
        values = np.concatenate([np.ravel(average[row][j]) for row in rows])
        positive = values[values > 0]
        norm = LogNorm(max(positive.min(), positive.max() * 1e-5), positive.max()) if len(positive) else None
        for i, row in enumerate(rows):
            shown = axes[i, j].imshow(np.ma.masked_less_equal(np.asarray(average[row][j]), 0), norm=norm,
                                      origin="lower", aspect="auto", cmap="viridis", interpolation="nearest")
            axes[i, j].set_title(f"{row}: {layer}", fontsize="medium")
            axes[i, j].set(xlabel="column", ylabel="row")
        figure.colorbar(shown, ax=list(axes[:, j]), label="mean energy [MeV]")
    _save(figure, path)


_STYLES = {"reference": {"color": "black"}, "generated": {"color": "tab:orange"},
           "floor": {"color": "tab:blue", "linestyle": "--"}}


def _plot_features(path: Path, features: Mapping[str, np.ndarray], names: list[str], *, title: str) -> None:
    """Unit-area histograms of each feature per sample, with each sample's ratio to the reference below
    (grey band: the reference's relative statistical error per bin)."""
    from ..report.plots import _edges

    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _figure(4.0 * columns, 3.6 * rows, layout=None)  # constrained layout takes seconds with 40 axes
    margin = 1.0 / (3.6 * rows)
    grid = figure.add_gridspec(rows, columns, left=0.06, right=0.98, bottom=0.5 * margin, top=1 - 0.6 * margin,
                               wspace=0.3, hspace=0.35)
    for k, name in enumerate(names):
        pair = grid[divmod(k, columns)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        top = figure.add_subplot(pair[0])
        bottom = figure.add_subplot(pair[1], sharex=top)
        edges = _edges([x[:, k] for x in features.values()], 40)
        counts = {key: np.histogram(np.clip(x[:, k], edges[0], edges[-1]), bins=edges)[0]
                  for key, x in features.items()}
        density = {key: c / (c.sum() * np.diff(edges)) for key, c in counts.items()}
        ref = density["reference"]
        relative = np.divide(1.0, np.sqrt(counts["reference"]), out=np.full(len(ref), np.nan),
                             where=counts["reference"] > 0)
        bottom.stairs(1 + relative, edges, baseline=1 - relative, fill=True, color="0.85")
        for key, h in density.items():
            top.stairs(h, edges, linewidth=1.2, label=f"{key} ({len(features[key])})", **_STYLES[key])
            if key != "reference":
                ratio = np.divide(h, ref, out=np.full(len(h), np.nan), where=ref > 0)
                bottom.stairs(ratio, edges, linewidth=1.2, **_STYLES[key])
        bottom.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
        bottom.set_ylim(0.0, 2.0)
        bottom.set_yticks([0.5, 1.0, 1.5])
        bottom.set(xlabel=name, ylabel="/ reference")
        top.set(ylabel="density")
        top.tick_params(labelbottom=False)
        if k == 0:
            top.legend(loc="best", fontsize="small")
    figure.suptitle(title)
    _save(figure, path)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else {"+": "plus", "-": "minus"}.get(c, "_") for c in name)


def _figures(folder: Path, results: Mapping, samples: Mapping[str, _Sample], geometry) -> dict[str, str]:
    """The report's PNGs in ``folder``: {caption: file name}."""
    names = list(results["feature_names"])
    features = {key: _features(s, geometry)[0] for key, s in samples.items()}
    figures = {"average shower per layer (reference, generated)": "average_shower.png",
               "shower features, all particles (ratio to the reference below)": "features.png"}
    _plot_average_showers(folder / "average_shower.png", results["average_shower"])
    _plot_features(folder / "features.png", features, names, title="all particles")
    if any(s.labels is None for s in samples.values()):
        return figures
    shown = [k for k, name in enumerate(names) if name.startswith(_PARTICLE_FEATURES)]
    for c, particle in enumerate(results["particles"]):
        chosen = {key: s.labels == c for key, s in samples.items()}
        if all(m.sum() >= 2 for m in chosen.values()):
            file = f"features_{_slug(particle)}.png"
            per_particle = {key: features[key][m][:, shown] for key, m in chosen.items()}
            _plot_features(folder / file, per_particle, [names[k] for k in shown], title=particle)
            figures[f"shower features, {particle} (ratio to the reference below)"] = file
    return figures


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _number(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _with_error(item: Mapping, scale: float = 1.0, digits: int = 3) -> str:
    if item["value"] is None:
        return "–"
    error = None if item["error"] is None else scale * item["error"]
    return f"{_number(scale * item['value'], digits)} ± {_number(error, digits)}"


def _summary_rows(results: Mapping) -> list[list[str]]:
    def feature_mean(comparison: str, key: str) -> str:
        return _number(float(np.mean([f[key] for f in results["features"][comparison].values()])))

    def worst(comparison: str) -> str:
        name, item = max(results["features"][comparison].items(), key=lambda kv: kv[1]["separation_power"])
        return f"{_number(item['separation_power'])} ({name})"

    rows = [["FPD x 10^3", *(_with_error(results["fpd"][c], 1e3, 2) for c in COMPARISONS)],
            ["KPD x 10^3", *(_with_error(results["kpd"][c], 1e3, 3) for c in COMPARISONS)]]
    for level in ("cells", "features"):
        for key in ("auc", "jsd"):
            rows.append([f"classifier {key.upper()}, {level}",
                         *(_number(results["classifier"][level][c][key]) for c in COMPARISONS)])
    rows += [["mean separation power", *(feature_mean(c, "separation_power") for c in COMPARISONS)],
             ["largest separation power", *(worst(c) for c in COMPARISONS)],
             ["mean KS statistic", *(feature_mean(c, "ks") for c in COMPARISONS)]]
    return rows


def _report(results: Mapping) -> str:
    """report.md: headline distances, per-feature distances, sparsity, energy response and resolution, figures."""
    n = results["n"]
    header = ["metric", "generated vs reference", "floor (reference vs reference)"]
    lines = [
        "# Generation report", "",
        f"Geometry {results['geometry']}; generated {n['generated']} showers, reference {n['reference']}; floor "
        f"{n['floor']} vs {n['floor_reference']} showers. Lower is closer (AUC: 0.5 and JSD: 0 are "
        "indistinguishable); a number is only as good as it is close to the floor next to it.", "",
        f"Floor: {results['floor_note']}.", "",
        "## Distances to the reference", "", *_table(header, _summary_rows(results)), "",
        "Classifier: the CaloChallenge's test (MLP trained / validated / tested on 60 / 20 / 20 % splits, "
        "isotonic calibration on the validation split); its test split has "
        f"{results['classifier']['cells']['generated']['n_test']} showers (generated) and "
        f"{results['classifier']['cells']['floor']['n_test']} (floor).", "",
        "## Per feature", "",
        "Separation power, KS statistic and Wasserstein-1 (in the feature's unit), floor next to each.", "",
    ]
    rows = []
    for name in results["feature_names"]:
        entries = [results["features"][c][name] for c in COMPARISONS]
        rows.append([name, *(_number(e["separation_power"]) for e in entries), *(_number(e["ks"]) for e in entries),
                     *(f"{e['w1']:.4g}" for e in entries)])
    lines += [*_table(["feature", "sep. power", "floor", "KS", "floor", "W1", "floor"], rows), ""]

    sparsity = results["sparsity"]
    lines += ["## Sparsity", "",
              "Mean fraction of non-zero cells per layer (± standard error); Δ: sample - its reference.", ""]
    rows = []
    for j, layer in enumerate(sparsity["layers"]):
        gen, floor = sparsity["generated"], sparsity["floor"]
        rows.append([layer, f"{_number(gen['reference']['mean'][j], 4)} ± {_number(gen['reference']['error'][j], 4)}",
                     f"{_number(gen['sample']['mean'][j], 4)} ± {_number(gen['sample']['error'][j], 4)}",
                     f"{gen['sample']['mean'][j] - gen['reference']['mean'][j]:+.4f}",
                     f"{floor['sample']['mean'][j] - floor['reference']['mean'][j]:+.4f}"])
    lines += [*_table(["layer", "reference", "generated", "Δ generated", "Δ floor"], rows), ""]

    def cell(entry: Mapping, key: str) -> str:
        return f"{_number(entry[key])} ± {_number(entry[key + '_error'])}"

    def delta(pair: Mapping, k: int, key: str) -> str:
        a, b = pair["sample"][k][key], pair["reference"][k][key]
        return "–" if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) else f"{a - b:+.4f}"

    bins = results["energy"]["bins"]
    lines += ["## Energy response and resolution", "",
              "Response: mean E_total / E_incident; resolution: its std / mean (± standard errors), per "
              "incident-energy bin; Δ: sample - its reference.", ""]
    rows = []
    for particle, entry in results["energy"]["particles"].items():
        gen, floor = entry["generated"], entry.get("floor")
        for k, (lo, hi) in enumerate(zip(bins[:-1], bins[1:])):
            ref, sample = gen["reference"][k], gen["sample"][k]
            rows.append([particle, f"{lo:.3g}-{hi:.3g}", f"{ref['n']} / {sample['n']}", cell(ref, "response"),
                         cell(sample, "response"), delta(gen, k, "response"),
                         "–" if floor is None else delta(floor, k, "response"), cell(ref, "resolution"),
                         cell(sample, "resolution"), delta(gen, k, "resolution"),
                         "–" if floor is None else delta(floor, k, "resolution")])
    lines += [*_table(["particle", "E_inc [GeV]", "showers ref / gen", "response ref", "response gen", "Δ gen",
                       "Δ floor", "resolution ref", "resolution gen", "Δ gen", "Δ floor"], rows), ""]
    lines += ["## Figures", "", *(f"![{caption}]({file})\n" for caption, file in results["figures"].items())]
    return "\n".join(lines)


def write_generation_report(results: Mapping, out, *, generated, reference, geometry, floor=None) -> Path:
    """Write ``out/results.json``, ``out/report.md`` and the figures of :func:`evaluate_generation`'s results.

    Args:
        results: what :func:`evaluate_generation` returned for these samples.
        out: the folder (created if missing).
        generated, reference, floor: the samples given to :func:`evaluate_generation` (with its ``seed``
            and ``max_events``, read from ``results``, the figures show the same showers).
        geometry: a :class:`~sim2real_fast.geometry.Geometry` or a preset name.

    Figures: ``average_shower.png`` (mean shower per layer, reference and generated), ``features.png``
    (per-feature histograms with ratio panels; the floor sample too when one was given) and
    ``features_<particle>.png`` where every sample has labels; in mplhep's style when it is installed.
    ``results.json`` is ``results`` made JSON-ready (NaN -> null, arrays -> lists) plus ``"figures"``
    {caption: file}. Each file is written atomically. Returns the path of ``report.md``.
    """
    geometry = _geometry.get(geometry)
    if not isinstance(results, Mapping) or "feature_names" not in results or "average_shower" not in results:
        raise ValueError("results: expected the dict evaluate_generation returned")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"out: {folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    samples = _samples(generated, reference, floor, geometry, results["seed"], results["max_events"])
    shown = {"reference": samples["reference"], "generated": samples["generated"]}
    if floor is not None:
        shown["floor"] = samples["floor"]
    with _style():
        figures = _figures(folder, results, shown, geometry)
    plain = _plain({**results, "figures": figures})
    with atomic_path(folder / "results.json") as tmp:
        tmp.write_text(json.dumps(plain, indent=2) + "\n")
    report = folder / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text(_report(plain) + "\n")
    return report
