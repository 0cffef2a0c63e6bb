"""Physics scores of an e+ / gamma / pi+ classifier: the EM pair on its own, and pions against EM showers.

The 3-class accuracy mixes two problems of very different difficulty: pions are told from EM showers
by their depth and width; e+ from gamma only by the photon's later start. These scores keep them apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from ._arrays import as_numpy

__all__ = ["PARTICLE_CLASSES", "particle_metrics"]

#: The class names these scores need, in any order.
PARTICLE_CLASSES = ("e+", "gamma", "pi+")


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    return float(skm.roc_auc_score(positive, score)) if 0 < positive.sum() < len(positive) else math.nan


def particle_metrics(labels, probs, *, class_names: Sequence[str]) -> dict[str, float]:
    """``em_accuracy``, ``em_auc`` and ``pion_auc`` of (N,) labels and (N, 3) class probabilities.

    - em_accuracy: on true e+ and gamma events, the fraction whose larger of p(e+), p(gamma) is the right one;
    - em_auc: ROC AUC of p(e+) / (p(e+) + p(gamma)) for e+ against gamma (true EM events only);
    - pion_auc: ROC AUC of p(pi+) for pi+ against e+ and gamma.

    Empty dict when the classes are not :data:`PARTICLE_CLASSES`; NaN where a class is missing.
    """
    names = list(class_names)
    if sorted(names) != sorted(PARTICLE_CLASSES):
        return {}
    labels = as_numpy(labels, "particle_metrics", "labels", ndim=1, dtype=np.int64)
    probs = as_numpy(probs, "particle_metrics", "probs", ndim=2)
    if probs.shape != (len(labels), len(names)):
        raise ValueError(f"particle_metrics: expected probs ({len(labels)}, {len(names)}), got {probs.shape}")
    e, g, p = (names.index(n) for n in PARTICLE_CLASSES)
    em = (labels == e) | (labels == g)
    pair = probs[em][:, [e, g]]
    is_e = labels[em] == e
    em_accuracy = float(((pair[:, 0] >= pair[:, 1]) == is_e).mean()) if em.any() else math.nan
    share = pair[:, 0] / np.clip(pair.sum(1), 1e-300, None)
    return {"em_accuracy": em_accuracy, "em_auc": _auc(is_e, share), "pion_auc": _auc(labels == p, probs[:, p])}
