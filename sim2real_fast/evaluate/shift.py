"""How far apart two feature sets are: proxy A-distance, MMD^2, classifier two-sample AUC, gap recovered.

Inputs are (N, d) tensors or arrays (learned features or flattened images) of the source
(simulation) and the target (real data). Every function is deterministic for a given ``seed``:
sets larger than ``max_samples`` are subsampled without replacement, and the classifier-based
measures draw a balanced sample (the same number of source and target rows), train on one half
of it and score on the other.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..ops import mmd
from ._arrays import feature_sets

__all__ = ["feature_mmd", "gap_recovered", "proxy_a_distance", "two_sample_auc"]


def _subsample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of x drawn without replacement, in random order."""
    return x[rng.permutation(len(x))[:n]]


def _check_max_samples(op: str, max_samples: int, least: int) -> None:
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < least:
        raise ValueError(f"{op}: max_samples must be an integer >= {least}, got {max_samples!r}")


def _domain_halves(op: str, source, target, seed: int, max_samples: int):
    """Balanced train and test halves ``(x_train, y_train, x_test, y_test)``; y = 1 for target rows.

    n = min(len(source), len(target), max_samples) rows of each domain are drawn; the first
    half of each goes to training, the rest to testing.
    """
    _check_max_samples(op, max_samples, 4)
    source, target = feature_sets(source, target, op, min_samples=4)
    rng = np.random.default_rng(seed)
    n = min(len(source), len(target), max_samples)
    source, target = _subsample(source, n, rng), _subsample(target, n, rng)
    half = n // 2
    y_train = np.r_[np.zeros(half), np.ones(half)]
    y_test = np.r_[np.zeros(n - half), np.ones(n - half)]
    x_train = np.concatenate([source[:half], target[:half]])
    x_test = np.concatenate([source[half:], target[half:]])
    return x_train, y_train, x_test, y_test


def proxy_a_distance(source, target, *, seed: int = 0, max_samples: int = 4000) -> float:
    """Proxy A-distance ``2 (1 - 2 err)`` of Ben-David et al. (NeurIPS 2006), clipped to [0, 2].

    ``err`` is the test error of a linear domain classifier (L2-regularised logistic regression
    on standardised features) trained on half of a balanced sample of at most ``max_samples``
    rows per domain and tested on the other half. 0: the domains cannot be told apart
    linearly; 2: they are linearly separable. (Ganin et al., JMLR 2016, use a linear SVM the same
    way; Transfer-Learning-Library a linear layer trained with SGD.)
    """
    x_train, y_train, x_test, y_test = _domain_halves("proxy_a_distance", source, target, seed, max_samples)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with threadpool_limits(limits=1):  # BLAS threads spin against torch's on a busy machine (10x slower)
        error = 1.0 - classifier.fit(x_train, y_train).score(x_test, y_test)
    return float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))


def feature_mmd(source, target, *, seed: int = 0, max_samples: int = 2000) -> float:
    """Unbiased multi-kernel Gaussian MMD^2 (:func:`sim2real_fast.mmd`, mean-distance bandwidth) in float64.

    At most ``max_samples`` rows of each set are used. About 0 (it can be slightly negative:
    the estimator is unbiased) when both come from one distribution, positive otherwise.
    """
    _check_max_samples("feature_mmd", max_samples, 2)
    source, target = feature_sets(source, target, "feature_mmd", min_samples=2)
    rng = np.random.default_rng(seed)
    source = _subsample(source, min(len(source), max_samples), rng)
    target = _subsample(target, min(len(target), max_samples), rng)
    return float(mmd(torch.from_numpy(source), torch.from_numpy(target), estimator="unbiased", bandwidth="mean"))


def two_sample_auc(source, target, *, seed: int = 0, max_samples: int = 4000) -> float:
    """Classifier two-sample test: held-out ROC AUC of a classifier telling target rows from source rows.

    A gradient-boosted tree classifier (scikit-learn ``HistGradientBoostingClassifier``) is
    trained on half of a balanced sample of at most ``max_samples`` rows per domain; its AUC on
    the other half is returned. 0.5: indistinguishable; 1: fully separable (values below 0.5 are
    noise). The CaloChallenge uses the same test to compare generated with Geant4 showers.
    The trees are grown on one OpenMP thread: scikit-learn's OpenMP runtime is not torch's, and
    right after torch's threads worked the two compete for the cores (measured: 0.3 s -> 49 s on 2 cores).
    """
    x_train, y_train, x_test, y_test = _domain_halves("two_sample_auc", source, target, seed, max_samples)
    with threadpool_limits(limits=1):
        classifier = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
        return float(roc_auc_score(y_test, classifier.predict_proba(x_test)[:, 1]))


def gap_recovered(adapted: float, source_only: float, target_oracle: float, *, atol: float = 1e-9) -> float:
    """Fraction of the sim-to-real gap an adaptation closes: ``(adapted - source_only) / (target_oracle - source_only)``.

    Scores are higher-is-better (e.g. target accuracies of the adapted model, of the model trained
    on simulation only and of one trained on labelled target data). 1: the adapted model matches
    the oracle; 0: no gain; negative: adaptation hurt. NaN when ``|target_oracle - source_only| <=
    atol``: without a gap there is nothing to recover, and the ratio would be meaningless.
    """
    denominator = target_oracle - source_only
    if not abs(denominator) > atol:  # also NaN for NaN inputs
        return math.nan
    return float((adapted - source_only) / denominator)
