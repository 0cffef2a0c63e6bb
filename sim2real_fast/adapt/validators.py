"""Model selection without target labels: score checkpoints from their predictions, pick the best.

Each validator turns a checkpoint's :class:`~sim2real_fast.models.Predictions` (features,
logits, probs of :func:`~sim2real_fast.models.predict`) into one number, and HIGHER IS BETTER for
all of them:

- ``"source_accuracy"``: accuracy on held-out labelled simulation (the naive choice);
- ``"im"``: information maximisation (:func:`information_maximization`);
- ``"snd"``: soft neighbourhood density (:func:`soft_neighborhood_density`);
- ``"dev"``: minus the deep-embedded-validation risk (:func:`deep_embedded_validation`).

:func:`validator_scores` computes all four for one checkpoint; :func:`select` picks, per
validator, the best of a list of checkpoints. pytorch-adapt implements the same validators
(``IMValidator``, ``SNDValidator``, ``DeepEmbeddedValidator``); the tests compare against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..models import Predictions

__all__ = [
    "VALIDATORS",
    "deep_embedded_validation",
    "information_maximization",
    "select",
    "soft_neighborhood_density",
    "source_accuracy",
    "validator_scores",
]

VALIDATORS = ("source_accuracy", "im", "snd", "dev")
#: Domain probabilities are clipped to [eps, 1 - eps] before forming density ratios.
_DOMAIN_PROB_EPS = 1e-6


def _predictions(op: str, name: str, predictions: Predictions, *, min_samples: int = 1) -> Predictions:
    """Checks features (N, F), logits and probs (N, C); returns them as float64 CPU tensors."""
    parts = {}
    for field in Predictions._fields:
        t = getattr(predictions, field, None)
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.dtype.is_floating_point:
            got = f"shape {tuple(t.shape)}, {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{op}: {name}.{field} must be a 2-D floating-point tensor, got {got}")
        parts[field] = t.detach().to("cpu", torch.float64)
    n = parts["features"].shape[0]
    if parts["logits"].shape[0] != n or parts["probs"].shape != parts["logits"].shape:
        shapes = {field: tuple(t.shape) for field, t in parts.items()}
        raise ValueError(f"{op}: {name} must have features (N, F), logits and probs (N, C) for one N, got {shapes}")
    if n < min_samples:
        raise ValueError(f"{op}: {name} needs at least {min_samples} samples, got {n}")
    return Predictions(**parts)


def _labels(op: str, labels, n: int, n_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).detach().cpu()
    if labels.shape != (n,) or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        got = f"shape {tuple(labels.shape)}, {labels.dtype}"
        raise ValueError(f"{op}: labels must be an integer tensor of shape ({n},), got {got}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        got = f"[{int(labels.min())}, {int(labels.max())}]"
        raise ValueError(f"{op}: labels must be class indices in [0, {n_classes - 1}], got values in {got}")
    return labels.long()


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row of p (..., C), with 0 log 0 = 0."""
    return -torch.special.xlogy(p, p).sum(-1)


def source_accuracy(source_val: Predictions, labels) -> float:
    """Accuracy (fraction in [0, 1]) of the argmax prediction on labelled held-out source data."""
    source_val = _predictions("source_accuracy", "source_val", source_val, min_samples=1)
    labels = _labels("source_accuracy", labels, source_val.logits.shape[0], source_val.logits.shape[1])
    return float((source_val.logits.argmax(1) == labels).double().mean())


def information_maximization(target: Predictions) -> float:
    """Information maximisation score ``H(mean_i p_i) - mean_i H(p_i)`` (nats) of the target predictions.

    The entropy of the marginal class distribution (high when the predicted classes are
    balanced) minus the mean conditional entropy (low when each prediction is confident): the
    mutual information between input and predicted class, between 0 and log C. Shi & Sha, ICML
    2012; the objective of SHOT (Liang et al., ICML 2020); pytorch-adapt's ``IMValidator``.
    """
    p = _predictions("information_maximization", "target", target, min_samples=1).probs
    return float(_entropy(p.mean(0)) - _entropy(p).mean())


def soft_neighborhood_density(
    target: Predictions, *, temperature: float = 0.05, max_samples: int = 2000, seed: int = 0
) -> float:
    """Soft neighbourhood density (Saito et al., ICCV 2021, "Tune it the right way"), higher is better.

    The softmax vectors of (at most ``max_samples``, drawn without replacement with ``seed``)
    target samples are L2-normalised; each sample's cosine similarities to the others (itself
    excluded) go through a softmax with ``temperature``; the score is the mean entropy of these
    rows (nats). It is high when samples have many close neighbours in prediction space, i.e.
    the predictions form dense clusters. Identical predictions for all samples reach the
    maximum, log(n - 1): read SND next to IM, which scores such a collapse 0. Costs O(n^2)
    memory for n = min(N, max_samples).
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"soft_neighborhood_density: temperature must be positive, got {temperature!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2:
        raise ValueError(f"soft_neighborhood_density: max_samples must be an integer >= 2, got {max_samples!r}")
    p = _predictions("soft_neighborhood_density", "target", target, min_samples=2).probs
    if p.shape[0] > max_samples:
        p = p[torch.randperm(p.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]]
    p = torch.nn.functional.normalize(p, dim=1)
    similarity = (p @ p.T).fill_diagonal_(-math.inf)
    return float(_entropy(torch.softmax(similarity / temperature, dim=1)).mean())


def _control_variate_risk(weights: np.ndarray, losses: np.ndarray) -> float:
    """DEV's risk estimate: ``mean(w L) + eta mean(w) - eta`` with ``eta = -Cov(w L, w) / Var(w)``.

    Since E[w] = 1 under the source, ``eta (mean(w) - 1)`` is a zero-mean control variate; the
    chosen eta minimises the variance of the estimate. eta = 0 when all weights are equal.
    """
    weighted = weights * losses
    var_w = np.var(weights, ddof=1)
    eta = -np.cov(weighted, weights, ddof=1)[0, 1] / var_w if var_w > 0 else 0.0
    return float(weighted.mean() + eta * weights.mean() - eta)


def deep_embedded_validation(
    source_val: Predictions, source_labels, target: Predictions, *, seed: int = 0, max_samples: int = 5000
) -> float:
    """Minus the deep embedded validation (DEV) risk of You et al., ICML 2019 (higher is better).

    DEV estimates the target risk from labelled source data by importance weighting:

    1. a domain classifier (logistic regression on standardised features) tells source_val
       features from target features; each source_val sample gets an out-of-fold (5-fold
       cross-fitted) probability ``q = P(target | x)``, clipped to [1e-6, 1 - 1e-6];
    2. density ratio ``w = q / (1 - q) * n_source / n_target``;
    3. per-sample cross-entropy ``L`` of source_val's logits against ``source_labels``;
    4. risk ``mean(w L) + eta mean(w) - eta`` with the control variate ``eta = -Cov(w L, w) / Var(w)``.

    At most ``max_samples`` rows of each set are used (drawn without replacement with ``seed``).
    The original trains an MLP discriminator on separate source-training features; the
    cross-fitting here keeps the weights out-of-sample without a third data set.
    """
    op = "deep_embedded_validation"
    source_val = _predictions(op, "source_val", source_val, min_samples=2)
    target = _predictions(op, "target", target, min_samples=2)
    if source_val.features.shape[1] != target.features.shape[1] or source_val.logits.shape[1] != target.logits.shape[1]:
        raise ValueError(
            f"{op}: source_val and target must have the same feature and class sizes, got features "
            f"{tuple(source_val.features.shape)} and {tuple(target.features.shape)}, logits "
            f"{tuple(source_val.logits.shape)} and {tuple(target.logits.shape)}"
        )
    labels = _labels(op, source_labels, *source_val.logits.shape)
    generator = torch.Generator().manual_seed(seed)
    if source_val.features.shape[0] > max_samples:
        keep = torch.randperm(source_val.features.shape[0], generator=generator)[:max_samples]
        source_val, labels = Predictions(*(t[keep] for t in source_val)), labels[keep]
    target_features = target.features
    if target_features.shape[0] > max_samples:
        target_features = target_features[torch.randperm(target_features.shape[0], generator=generator)[:max_samples]]

    n_source, n_target = source_val.features.shape[0], target_features.shape[0]
    features = torch.cat([source_val.features, target_features]).numpy()
    is_target = np.r_[np.zeros(n_source), np.ones(n_target)]
    folds = StratifiedKFold(n_splits=min(5, n_source, n_target), shuffle=True, random_state=seed)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with threadpool_limits(limits=1):  # BLAS threads fighting torch's for the cores: 10-40x slower
        q = cross_val_predict(classifier, features, is_target, cv=folds, method="predict_proba")[:n_source, 1]
    q = np.clip(q, _DOMAIN_PROB_EPS, 1.0 - _DOMAIN_PROB_EPS)
    weights = q / (1.0 - q) * (n_source / n_target)
    losses = torch.nn.functional.cross_entropy(source_val.logits, labels, reduction="none").numpy()
    return -_control_variate_risk(weights, losses)


def validator_scores(source_val: Predictions, source_labels, target: Predictions, *, seed: int = 0) -> dict[str, float]:
    """All :data:`VALIDATORS` for one checkpoint: ``{name: score}``, higher is better."""
    return {
        "source_accuracy": source_accuracy(source_val, source_labels),
        "im": information_maximization(target),
        "snd": soft_neighborhood_density(target, seed=seed),
        "dev": deep_embedded_validation(source_val, source_labels, target, seed=seed),
    }


def select(scores: Sequence[Mapping[str, float]]) -> dict[str, int]:
    """Index of the best checkpoint for each validator, from one ``{validator: score}`` per checkpoint.

    Higher scores win; NaN (or a missing score) never wins; ties go to the later checkpoint
    (the longer-trained one, when checkpoints are in training order). A validator whose scores
    are all NaN is left out of the result.
    """
    if not scores:
        raise ValueError("select: scores is empty; pass one {validator: score} dict per checkpoint")
    names = list(dict.fromkeys(name for checkpoint in scores for name in checkpoint))
    best: dict[str, int] = {}
    for name in names:
        values = [float(checkpoint.get(name, math.nan)) for checkpoint in scores]
        for i, value in enumerate(values):
            if not math.isnan(value) and (name not in best or value >= values[best[name]]):
                best[name] = i
    return best
