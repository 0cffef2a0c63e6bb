"""CaloChallenge-style distances between shower distributions, for image translation, fast simulation and the report.

The question they answer: how far are translated (or generated) showers from real ones, next to where
simulation starts (sim vs real) and the floor (real vs real)?

- per feature: Wasserstein-1 (:func:`wasserstein1`), Kolmogorov-Smirnov (:func:`ks_statistic`) and
  CaloChallenge's separation power (:func:`separation_power`);
- all features at once: the Frechet and kernel physics distances (:func:`fpd`, :func:`kpd`) of jetnet and
  a classifier two-sample AUC (:func:`classifier_auc`, on features or on cells);
- physics kept by a translation: :func:`label_preservation`, :func:`energy_response`;
- :func:`compare_features`: all of the above for named candidates against a reference, with the floor,
  as a plain nested dict for ``results.json``.

Features are the columns of :meth:`sim2real_fast.ShowerFeatures.as_tensor`, named by its ``names()``:
``energy_total``, ``energy_<layer>`` (MeV), ``centroid_x_<layer>``, ``centroid_y_<layer>``,
``width_x_<layer>``, ``width_y_<layer>`` (mm, or cells for ``hcal``), ``sparsity_<layer>`` (fraction of
cells above threshold) and ``max_fraction`` (highest cell / total). Inputs are tensors or arrays; every
computation is in float64 NumPy.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from scipy import optimize, stats

from ..ops import ShowerFeatures
from ._arrays import as_numpy
from .shift import two_sample_auc

__all__ = [
    "classifier_auc",
    "compare_features",
    "energy_response",
    "fpd",
    "kpd",
    "ks_statistic",
    "label_preservation",
    "separation_power",
    "wasserstein1",
]

_SCALES = ("std", "max_abs", None)

_FLOOR_NOTE = (
    "reference vs reference: two random halves of the reference sample; each half has half the events, "
    "so the floor's statistical part is larger than at full statistics (a conservative floor)"
)


def _check_int(op: str, name: str, value, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{op}: {name} must be an integer >= {least}, got {value!r}")
    return int(value)


def _samples(op: str, name: str, x, *, min_samples: int) -> tuple[np.ndarray, bool]:
    """``x`` as an (N, F) float64 array, and whether it was 1-D (N,)."""
    ndim = x.dim() if isinstance(x, torch.Tensor) else np.ndim(x)
    if ndim not in (1, 2):
        raise ValueError(f"{op}: {name} must be (N,) or (N, F), got {ndim}-D input of shape {np.shape(x)}")
    array = as_numpy(x, op, name, ndim=ndim)
    if len(array) < min_samples:
        raise ValueError(f"{op}: {name} needs at least {min_samples} samples, got {len(array)}")
    return (array[:, None], True) if ndim == 1 else (array, False)


def _pair(op: str, a, b, names: tuple[str, str], *, min_samples: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Two samples as (N, F) and (M, F) float64 arrays with the same F, and whether both were 1-D."""
    a, a_flat = _samples(op, names[0], a, min_samples=min_samples)
    b, b_flat = _samples(op, names[1], b, min_samples=min_samples)
    if a_flat != b_flat or a.shape[1] != b.shape[1]:
        shapes = f"{a.shape if not a_flat else (len(a),)} and {b.shape if not b_flat else (len(b),)}"
        raise ValueError(f"{op}: {names[1]} must have the same number of features as {names[0]}, got shapes {shapes}")
    return a, b, a_flat


def _per_feature(values: list[float], flat: bool):
    return values[0] if flat else np.asarray(values, dtype=np.float64)


def _given_edges(op: str, bins) -> np.ndarray:
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        edges = np.empty(0)
    if edges.ndim != 1 or len(edges) < 2 or not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise ValueError(f"{op}: bins must be at least 2 finite, increasing edges, got {bins!r}")
    return edges


def _edges(op: str, bins, column: np.ndarray) -> np.ndarray:
    """Bin edges: ``bins`` equal bins over the column's [min, max], or the given increasing edges."""
    if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        return np.histogram_bin_edges(column, bins=_check_int(op, "bins", bins, 1))
    return _given_edges(op, bins)


def _unit_histogram(op: str, name: str, x: np.ndarray, edges: np.ndarray, overflow: bool, feature: int) -> np.ndarray:
    counts = np.histogram(x, bins=edges)[0].astype(np.float64)
    if overflow:
        counts = np.r_[np.count_nonzero(x < edges[0]), counts, np.count_nonzero(x > edges[-1])]
    total = counts.sum()
    if total == 0:
        raise ValueError(f"{op}: {name} has no entries inside the bin edges of feature {feature}")
    return counts / total


def _triangular(h1: np.ndarray, h2: np.ndarray) -> float:
    total = h1 + h2
    filled = total > 0
    return float(0.5 * np.sum((h1[filled] - h2[filled]) ** 2 / total[filled]))


def separation_power(a, b, *, bins=100, overflow: bool = True):
    """CaloChallenge's separation power of two samples, per feature: 0 for the same histogram, 1 for disjoint ones.

    ``0.5 * sum_i (h_a,i - h_b,i)^2 / (h_a,i + h_b,i)`` over histograms normalised to unit sum (the
    triangular discrimination, eq. 15 of arXiv:2009.03796; CaloChallenge/homepage
    ``code/evaluate_plotting_helper.py``, ``_separation_power``); bins empty in both contribute 0.

    Args:
        a: (N,) or (N, F) reference sample; with an integer ``bins`` its range sets the edges.
        b: (M,) or (M, F) sample compared with it (same F).
        bins: an integer: that many equal bins over ``a``'s [min, max], per feature, as CaloChallenge's
            ``plt.hist(reference, bins=40)`` (it uses 40 for layer energies, 100 over a fixed window for
            centroids and widths, 20 over [0, 1] for sparsity); or increasing edges, for every feature.
        overflow: entries outside the edges fill an underflow and an overflow bin, so that ``b``
            outside ``a``'s range counts as separated. False drops them and normalises each histogram
            over its entries inside the edges, as CaloChallenge's ``density=True`` histograms do.

    Returns:
        a float for 1-D inputs, else an (F,) float64 array.
    """
    op = "separation_power"
    a, b, flat = _pair(op, a, b, ("a", "b"), min_samples=1)
    values = []
    for j in range(a.shape[1]):
        edges = _edges(op, bins, a[:, j])
        h_a = _unit_histogram(op, "a", a[:, j], edges, overflow, j)
        h_b = _unit_histogram(op, "b", b[:, j], edges, overflow, j)
        values.append(_triangular(h_a, h_b))
    return _per_feature(values, flat)


def wasserstein1(a, b):
    """Wasserstein-1 (earth mover's) distance per feature, in the feature's unit (``scipy.stats.wasserstein_distance``).

    ``a`` (N,) or (N, F), ``b`` (M,) or (M, F). Returns a float for 1-D inputs, else an (F,) float64 array.
    """
    a, b, flat = _pair("wasserstein1", a, b, ("a", "b"), min_samples=1)
    return _per_feature([float(stats.wasserstein_distance(a[:, j], b[:, j])) for j in range(a.shape[1])], flat)


def ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic per feature, in [0, 1] (``scipy.stats.ks_2samp``).

    ``a`` (N,) or (N, F), ``b`` (M,) or (M, F). Returns a float for 1-D inputs, else an (F,) float64 array.
    """
    a, b, flat = _pair("ks_statistic", a, b, ("a", "b"), min_samples=1)
    return _per_feature([float(s) for s in np.atleast_1d(stats.ks_2samp(a, b, axis=0).statistic)], flat)


def _scaled(op: str, real: np.ndarray, gen: np.ndarray, scale) -> tuple[np.ndarray, np.ndarray]:
    if scale == "std":
        center, width = real.mean(0), real.std(0)
    elif scale == "max_abs":
        center, width = np.zeros(real.shape[1]), np.abs(real).max(0)
    elif scale is None:
        return real, gen
    else:
        raise ValueError(f"{op}: scale must be one of {_SCALES}, got {scale!r}")
    width = np.where(width > 0, width, 1.0)  # a constant feature is left unscaled
    return (real - center) / width, (gen - center) / width


def _draw(rng: np.random.Generator, x: np.ndarray, size: int, replace: bool) -> np.ndarray:
    return x[rng.choice(len(x), size=size, replace=replace)]


def _frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """``||mu_x - mu_y||^2 + tr(C_x + C_y - 2 (C_x C_y)^(1/2))`` of the samples' means and covariances.

    ``tr (C_x C_y)^(1/2)`` is the sum of the square roots of the eigenvalues of the symmetric
    ``C_x^(1/2) C_y C_x^(1/2)``, which has the same spectrum and avoids a non-symmetric matrix root.
    """
    c_x, c_y = np.atleast_2d(np.cov(x, rowvar=False)), np.atleast_2d(np.cov(y, rowvar=False))
    w, v = np.linalg.eigh(c_x)
    root_x = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_x @ c_y @ root_x), 0.0, None)).sum()
    shift = x.mean(0) - y.mean(0)
    return float(shift @ shift + np.trace(c_x) + np.trace(c_y) - 2.0 * cross)


def fpd(
    real,
    gen,
    *,
    min_samples: int | None = None,
    max_samples: int | None = None,
    num_batches: int = 20,
    num_points: int = 10,
    scale: str | None = "std",
    replace: bool = False,
    seed: int = 0,
) -> tuple[float, float]:
    """Frechet physics distance (FPD) of arXiv:2211.10295 and its error: ``(value, error)``.

    The definition of jet-net/JetNet ``jetnet/evaluation/gen_metrics.py`` (``fpd``): the Frechet
    distance between Gaussians fitted to ``b`` random events of each sample, averaged over
    ``num_batches`` draws, at ``num_points`` batch sizes ``b`` evenly spaced in 1/b from
    ``min_samples`` to ``max_samples``; a straight line in 1/b is fitted (intercept and slope >= 0,
    ``scipy.optimize.curve_fit``) and its intercept, the distance at infinite statistics, is the FPD;
    the error is the intercept's fitted standard deviation. Two Gaussians with means mu_1, mu_2 and
    one covariance have FPD ||mu_1 - mu_2||^2 (in the scaled units). The CaloChallenge reports it x 10^3.

    Args:
        real: (N, F) reference features (e.g. real showers).
        gen: (M, F) features compared with them.
        min_samples, max_samples: smallest and largest batch size. jetnet uses 20,000 and 50,000 (the
            CaloChallenge 10,000 and 50,000); the default here is max_samples = min(50,000, N, M),
            min_samples = 2/5 of it (jetnet's ratio).
        num_batches, num_points: draws per batch size and number of batch sizes (jetnet's defaults).
        scale: ``"std"`` standardises both samples with the real sample's mean and standard deviation;
            ``"max_abs"`` divides both by the real sample's largest |value| per feature (jetnet's
            ``normalise=True``); None uses them as given. Constant features are left unscaled.
        replace: draw batches with replacement, as jetnet does. Without (the default) a batch is a
            random subset: drawing with replacement adds the full samples' own finite-size term (about
            tr(C) (1/N + 1/M)) to the extrapolated value.
        seed: seed of the NumPy generator that draws the batches.
    """
    op = "fpd"
    x, y, _ = _pair(op, real, gen, ("real", "gen"), min_samples=3)
    n = min(len(x), len(y))
    max_samples = min(50_000, n) if max_samples is None else _check_int(op, "max_samples", max_samples, 3)
    if min_samples is None:
        min_samples = max(2, round(0.4 * max_samples))
    min_samples = _check_int(op, "min_samples", min_samples, 2)
    if min_samples >= max_samples:
        raise ValueError(f"{op}: min_samples must be < max_samples, got {min_samples} and {max_samples}")
    if not replace and max_samples > n:
        raise ValueError(f"{op}: max_samples must be <= the smaller sample ({n}) when replace=False, got {max_samples}")
    num_batches = _check_int(op, "num_batches", num_batches, 1)
    num_points = _check_int(op, "num_points", num_points, 3)
    x, y = _scaled(op, x, y, scale)
    sizes = np.unique((1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype(np.int64))
    if len(sizes) < 3:
        raise ValueError(f"{op}: min_samples={min_samples} and max_samples={max_samples} give fewer than 3 batch sizes")
    rng = np.random.default_rng(seed)
    means = [
        np.mean([_frechet_distance(_draw(rng, x, b, replace), _draw(rng, y, b, replace)) for _ in range(num_batches)])
        for b in sizes
    ]
    (intercept, _), covariance = optimize.curve_fit(
        lambda inverse, c, slope: c + slope * inverse, 1.0 / sizes, means, bounds=([0, 0], [np.inf, np.inf])
    )
    return float(intercept), float(np.sqrt(covariance[0, 0]))


def _kernel_sum(x: np.ndarray, y: np.ndarray, degree: int, block: int = 1024) -> float:
    """Sum of the polynomial kernel ``(x . y / F + 1)^degree`` over all pairs, ``block`` rows of x at a time."""
    gamma = 1.0 / x.shape[1]
    return float(sum(np.sum((x[i : i + block] @ y.T * gamma + 1.0) ** degree) for i in range(0, len(x), block)))


def _mmd2_polynomial(x: np.ndarray, y: np.ndarray, degree: int) -> float:
    """Unbiased quadratic MMD^2 estimate with the polynomial kernel (i == j left out of k(x_i, x_j) and k(y_i, y_j))."""
    m, n = len(x), len(y)
    gamma = 1.0 / x.shape[1]
    diag_x = np.sum((np.einsum("ij,ij->i", x, x) * gamma + 1.0) ** degree)
    diag_y = np.sum((np.einsum("ij,ij->i", y, y) * gamma + 1.0) ** degree)
    xx = (_kernel_sum(x, x, degree) - diag_x) / (m * (m - 1))
    yy = (_kernel_sum(y, y, degree) - diag_y) / (n * (n - 1))
    return xx + yy - 2.0 * _kernel_sum(x, y, degree) / (m * n)


def kpd(
    real,
    gen,
    *,
    num_batches: int = 10,
    batch_size: int | None = None,
    degree: int = 4,
    scale: str | None = "std",
    replace: bool = False,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel physics distance (KPD) of arXiv:2211.10295 and its error: ``(median, error)``.

    The definition of jet-net/JetNet ``jetnet/evaluation/gen_metrics.py`` (``kpd``): the unbiased
    quadratic MMD^2 estimate with the polynomial kernel ``k(x, y) = (x . y / F + 1)^degree`` on
    ``num_batches`` batches of ``batch_size`` events of each sample; the KPD is the median over
    batches, its error half the 16.275-83.725 percentile range (a Gaussian's +-1 sigma). jetnet's
    kernel has degree 4 (the KID of image generation uses 3). About 0 (it can be negative: the
    estimator is unbiased) when both samples come from one distribution. Kernel matrices are summed
    1024 rows at a time, never held whole.

    Args:
        real: (N, F) reference features.
        gen: (M, F) features compared with them.
        num_batches: number of batches (jetnet: 10).
        batch_size: events per batch and sample; jetnet uses 5,000 (the CaloChallenge 10,000); the
            default here is min(5,000, N // 2, M // 2), so that batches drawn without replacement differ.
        degree: degree of the polynomial kernel.
        scale: ``"std"``, ``"max_abs"`` or None, as for :func:`fpd`.
        replace: draw batches with replacement, as jetnet does; repeated events then enter the
            within-sample sums and bias the value upwards by about (E k(x, x) - E k(x, x')) (1/N + 1/M).
        seed: seed of the NumPy generator that draws the batches.
    """
    op = "kpd"
    x, y, _ = _pair(op, real, gen, ("real", "gen"), min_samples=4)
    n = min(len(x), len(y))
    batch_size = min(5_000, n // 2) if batch_size is None else _check_int(op, "batch_size", batch_size, 2)
    if not replace and batch_size > n:
        raise ValueError(f"{op}: batch_size must be <= the smaller sample ({n}) when replace=False, got {batch_size}")
    num_batches = _check_int(op, "num_batches", num_batches, 1)
    degree = _check_int(op, "degree", degree, 1)
    x, y = _scaled(op, x, y, scale)
    rng = np.random.default_rng(seed)
    values = [
        _mmd2_polynomial(_draw(rng, x, batch_size, replace), _draw(rng, y, batch_size, replace), degree)
        for _ in range(num_batches)
    ]
    low, high = np.percentile(values, [16.275, 83.725])
    return float(np.median(values)), float((high - low) / 2.0)


def classifier_auc(
    a, b, *, on: str = "features", repeats: int = 5, seed: int = 0, max_samples: int = 4000
) -> tuple[float, float]:
    """Classifier two-sample test: held-out ROC AUC telling ``b`` from ``a``, ``(mean, std)`` over ``repeats`` splits.

    Each repeat is :func:`sim2real_fast.evaluate.two_sample_auc` (gradient-boosted trees trained on
    half of a balanced sample of at most ``max_samples`` events per side, scored on the other half)
    with seed ``seed + r``: a new subsample, split and classifier. 0.5: indistinguishable, 1: fully
    separable. The CaloChallenge runs the same test with an MLP on cells ("low-level") and on
    high-level features (its Geant4 vs Geant4 low-level AUCs: 0.50 to 0.61).

    Args:
        a, b: (N, d) and (M, d) (or (N,) and (M,)): features (``on="features"``) or cell energies in MeV
            (``on="cells"``, compared as log1p(E / MeV), negative energies clamped to 0).
        repeats: number of splits, >= 2; the std is over them (ddof = 1).
    """
    op = "classifier_auc"
    if on not in ("features", "cells"):
        raise ValueError(f"{op}: on must be 'features' or 'cells', got {on!r}")
    repeats = _check_int(op, "repeats", repeats, 2)
    _check_int(op, "max_samples", max_samples, 4)
    a, b, _ = _pair(op, a, b, ("a", "b"), min_samples=4)
    if on == "cells":
        a, b = np.log1p(np.clip(a, 0.0, None)), np.log1p(np.clip(b, 0.0, None))
    aucs = [two_sample_auc(a, b, seed=seed + r, max_samples=max_samples) for r in range(repeats)]
    return float(np.mean(aucs)), float(np.std(aucs, ddof=1))


def _images(op: str, name: str, x, n: int | None = None) -> torch.Tensor:
    """(N, ...) floating-point tensor of images; N == n when given."""
    tensor = torch.as_tensor(x)
    if not tensor.dtype.is_floating_point:
        raise TypeError(f"{op}: {name} must hold floating-point energies, got dtype {tensor.dtype}")
    if tensor.dim() < 2:
        raise ValueError(f"{op}: {name} must be (N, n_cells), got shape {tuple(tensor.shape)}")
    if n is not None and len(tensor) != n:
        raise ValueError(f"{op}: {name} must have {n} events like sim_images, got {len(tensor)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{op}: {name} holds NaN or infinite values")
    return tensor


def _labels(op: str, labels, n: int) -> np.ndarray:
    labels = as_numpy(labels, op, "labels", ndim=1, dtype=np.int64)
    if len(labels) != n:
        raise ValueError(f"{op}: labels must have {n} entries like sim_images, got {len(labels)}")
    return labels


@torch.no_grad()
def _predicted(model: Callable, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """(N,) argmax of the model's (N, C) scores, in eval mode (restored afterwards), batch by batch."""
    module = model if isinstance(model, torch.nn.Module) else None
    parameter = next(module.parameters(), None) if module is not None else None
    device = parameter.device if parameter is not None else images.device
    dtype = parameter.dtype if parameter is not None else images.dtype
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        predicted = [model(batch.to(device, dtype)).argmax(1).cpu() for batch in images.split(batch_size)]
    finally:
        if module is not None:
            module.train(was_training)
    return torch.cat(predicted).numpy()


def label_preservation(model: Callable, sim_images, translated_images, labels, *, batch_size: int = 4096) -> dict:
    """Whether translation keeps the class: accuracy of a sim-trained classifier on sim and on translated sim.

    Args:
        model: a classifier (e.g. :class:`~sim2real_fast.models.CaloCNN` trained on sim) mapping
            (B, n_cells) images to (B, C) scores; an ``nn.Module`` runs in eval mode on its parameters'
            device and dtype, its mode restored afterwards.
        sim_images: (N, n_cells) simulated showers (MeV).
        translated_images: (N, n_cells) the same showers after translation.
        labels: (N,) true class indices.

    Returns:
        ``{"accuracy_sim", "accuracy_translated"}`` (fractions), ``"difference_points"`` = 100 x
        (translated - sim) (negative: translation loses class information) and ``"n"``.
    """
    op = "label_preservation"
    if not callable(model):
        raise TypeError(f"{op}: model must be callable (images -> scores), got {type(model).__name__}")
    batch_size = _check_int(op, "batch_size", batch_size, 1)
    sim = _images(op, "sim_images", sim_images)
    translated = _images(op, "translated_images", translated_images, len(sim))
    labels = _labels(op, labels, len(sim))
    if len(labels) == 0:
        raise ValueError(f"{op}: sim_images is empty; accuracy needs at least one event")
    accuracy_sim = float(np.mean(_predicted(model, sim, batch_size) == labels))
    accuracy_translated = float(np.mean(_predicted(model, translated, batch_size) == labels))
    return {
        "accuracy_sim": accuracy_sim,
        "accuracy_translated": accuracy_translated,
        "difference_points": 100.0 * (accuracy_translated - accuracy_sim),
        "n": len(labels),
    }


def energy_response(
    sim_images, translated_images, labels, incident_energy, *, class_names: Sequence[str], bins
) -> dict:
    """Energy response of a translation: total translated / total simulated energy, per particle and energy bin.

    Args:
        sim_images: (N, n_cells) simulated showers (MeV).
        translated_images: (N, n_cells) the same showers after translation.
        labels: (N,) class indices into ``class_names``.
        incident_energy: (N,) incident energies (GeV for the embedded simulator).
        class_names: the class names.
        bins: increasing incident-energy bin edges, in the unit of ``incident_energy``; events outside
            them are left out.

    Per event r = sum(translated) / sum(sim); events whose simulated total is <= 0 are left out (r
    is undefined). Returns ``{"bins": edges, "classes": {name: {"mean", "error", "n"}}}``, each a
    list over the bins: mean of r, its standard error std / sqrt(n) (ddof = 1; NaN for n < 2) and
    the number of events (mean NaN for n = 0).
    """
    op = "energy_response"
    sim = _images(op, "sim_images", sim_images)
    translated = _images(op, "translated_images", translated_images, len(sim))
    if translated.shape != sim.shape:
        shapes = f"{tuple(sim.shape)}, got {tuple(translated.shape)}"
        raise ValueError(f"{op}: translated_images must have the shape of sim_images {shapes}")
    labels = _labels(op, labels, len(sim))
    energy = as_numpy(incident_energy, op, "incident_energy", ndim=1)
    if len(energy) != len(sim):
        raise ValueError(f"{op}: incident_energy must have {len(sim)} entries like sim_images, got {len(energy)}")
    names = [str(name) for name in class_names]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{op}: class_names must be distinct names, got {list(class_names)!r}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        got = f"[{labels.min()}, {labels.max()}]"
        raise ValueError(f"{op}: labels must be class indices in [0, {len(names) - 1}], got values in {got}")
    edges = _given_edges(op, bins)
    sim_total = sim.flatten(1).sum(1, dtype=torch.float64).cpu().numpy()
    translated_total = translated.flatten(1).sum(1, dtype=torch.float64).cpu().numpy()
    valid = sim_total > 0
    ratio = np.divide(translated_total, sim_total, out=np.full(len(sim_total), np.nan), where=valid)
    which = np.digitize(energy, edges[1:-1])
    inside = valid & (energy >= edges[0]) & (energy <= edges[-1])
    classes = {}
    for c, name in enumerate(names):
        means, errors, counts = [], [], []
        for k in range(len(edges) - 1):
            r = ratio[inside & (labels == c) & (which == k)]
            counts.append(len(r))
            means.append(float(r.mean()) if len(r) else math.nan)
            errors.append(float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else math.nan)
        classes[name] = {"mean": means, "error": errors, "n": counts}
    return {"bins": [float(e) for e in edges], "classes": classes}


def _default_bins(name: str):
    """CaloChallenge's binning by feature kind (its evaluate_plotting_helper.py): 40 bins for energies,
    20 over [0, 1] for sparsity, 100 for the rest (it uses 100 over a fixed window for centroids and widths)."""
    if name.startswith("energy_"):
        return 40
    if name.startswith("sparsity_"):
        return np.linspace(0.0, 1.0, 21)
    return 100


def _feature_matrix(op: str, name: str, x) -> np.ndarray:
    if isinstance(x, ShowerFeatures):
        x = x.as_tensor()
    return _samples(op, name, x, min_samples=4)[0]


def _distances(
    reference: np.ndarray, candidate: np.ndarray, scaled: tuple[np.ndarray, np.ndarray], names, edges, seed, max_samples
) -> dict:
    w1 = wasserstein1(reference, candidate)
    ks = ks_statistic(reference, candidate)
    separation = [separation_power(reference[:, j], candidate[:, j], bins=edges[j]) for j in range(len(names))]
    fpd_value, fpd_error = fpd(*scaled, scale=None, seed=seed)
    kpd_value, kpd_error = kpd(*scaled, scale=None, seed=seed)
    auc, auc_error = classifier_auc(reference, candidate, seed=seed, max_samples=max_samples)
    return {
        "n": len(candidate),
        "features": {
            name: {"w1": float(w1[j]), "ks": float(ks[j]), "separation_power": separation[j]}
            for j, name in enumerate(names)
        },
        "fpd": {"value": fpd_value, "error": fpd_error},
        "kpd": {"value": kpd_value, "error": kpd_error},
        "auc": {"value": auc, "error": auc_error},
    }


def compare_features(
    reference,
    candidates: Mapping[str, object],
    *,
    names: Sequence[str] | None = None,
    bins=None,
    floor: bool = True,
    seed: int = 0,
    max_samples: int = 4000,
) -> dict:
    """Every distance of this module for named candidates against a reference, with the floor, as a JSON-ready dict.

    Args:
        reference: (N, F) reference features (real showers), or a :class:`~sim2real_fast.ShowerFeatures`.
        candidates: name -> (M, F) features (or ShowerFeatures), e.g. ``{"sim": ..., "translated": ...}``.
        names: the F feature names; default: the reference's ``ShowerFeatures.names()``.
        bins: separation-power binning: None for CaloChallenge's choice by feature kind (40 equal
            bins over the reference's range for ``energy_*``, 20 over [0, 1] for ``sparsity_*``, 100
            over the reference's range otherwise), an integer for every feature, or a mapping
            name -> integer or edges overriding the default for those features. Edges come from the
            whole reference and are shared by every comparison.
        floor: add ``"floor"``: the reference's two random halves compared with each other.
        seed: seeds the halves, the FPD/KPD batches and the classifier splits.
        max_samples: events per side for the classifier AUC (:func:`classifier_auc`, 5 repeats).

    FPD and KPD (:func:`fpd`, :func:`kpd`, default batch sizes) use features standardised with the
    whole reference's mean and std, the same for every comparison. Returns::

        {"names": [...], "n_reference": N, "floor": entry, "floor_note": str, "candidates": {name: entry}}
        entry = {"n", "features": {feature: {"w1", "ks", "separation_power"}},
                 "fpd": {"value", "error"}, "kpd": {"value", "error"}, "auc": {"value", "error"}}

    W1 is in the feature's unit; KS, separation power and AUC are in [0, 1]; all values are Python floats.
    """
    op = "compare_features"
    if names is None:
        if not isinstance(reference, ShowerFeatures):
            raise ValueError(f"{op}: names is required unless reference is a ShowerFeatures")
        names = reference.names()
    names = [str(name) for name in names]
    ref = _feature_matrix(op, "reference", reference)
    if len(names) != ref.shape[1] or len(set(names)) != len(names):
        raise ValueError(f"{op}: names must be {ref.shape[1]} distinct names (one per reference column), got {names}")
    if not isinstance(candidates, Mapping) or not candidates:
        got = type(candidates).__name__
        raise ValueError(f"{op}: candidates must be a non-empty mapping name -> features, got {got}")
    if floor and len(ref) < 8:
        raise ValueError(f"{op}: reference needs at least 8 samples for the floor's two halves, got {len(ref)}")
    if not (bins is None or isinstance(bins, (numbers.Integral, Mapping))):
        raise ValueError(f"{op}: bins must be None, an integer or a mapping name -> bins, got {type(bins).__name__}")
    overrides = dict(bins) if isinstance(bins, Mapping) else {}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"{op}: bins names features that are not in names: {unknown}")
    edges = []
    for j, name in enumerate(names):
        choice = overrides.get(name, bins if isinstance(bins, numbers.Integral) else _default_bins(name))
        edges.append(_edges(op, choice, ref[:, j]))

    mean, std = ref.mean(0), ref.std(0)
    std = np.where(std > 0, std, 1.0)

    def standardised(x: np.ndarray) -> np.ndarray:
        return (x - mean) / std

    result: dict = {"names": names, "n_reference": len(ref)}
    if floor:
        order = np.random.default_rng(seed).permutation(len(ref))
        first, second = ref[order[: len(ref) // 2]], ref[order[len(ref) // 2 :]]
        scaled = (standardised(first), standardised(second))
        result["floor"] = _distances(first, second, scaled, names, edges, seed, max_samples)
        result["floor_note"] = _FLOOR_NOTE
    result["candidates"] = {}
    for key, features in candidates.items():
        x = _feature_matrix(op, f"candidates[{key!r}]", features)
        if x.shape[1] != ref.shape[1]:
            got = x.shape[1]
            raise ValueError(f"{op}: candidates[{key!r}] must have {ref.shape[1]} features like reference, got {got}")
        scaled = (standardised(ref), standardised(x))
        result["candidates"][str(key)] = _distances(ref, x, scaled, names, edges, seed, max_samples)
    return result
