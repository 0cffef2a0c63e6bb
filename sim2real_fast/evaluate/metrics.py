"""Classification metrics of a classifier's class probabilities (scikit-learn underneath).

Every fraction is in [0, 1]. Per-class values that are undefined are NaN: precision of a class
never predicted, recall and AUC of a class absent from ``labels`` (see :func:`classification_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from ._arrays import as_numpy

__all__ = ["classification_metrics", "roc_curves"]


def _checked(op: str, labels, probs, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    labels = as_numpy(labels, op, "labels", ndim=1, dtype=np.int64)
    probs = as_numpy(probs, op, "probs", ndim=2)
    names = [str(name) for name in class_names]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ValueError(f"{op}: class_names must be at least 2 distinct names, got {list(class_names)!r}")
    if len(labels) == 0:
        raise ValueError(f"{op}: labels and probs are empty; metrics need at least one sample")
    if probs.shape != (len(labels), len(names)):
        raise ValueError(
            f"{op}: probs must have shape (N, C) = ({len(labels)}, {len(names)}) for {len(labels)} labels and "
            f"{len(names)} class_names, got {probs.shape}"
        )
    if labels.min() < 0 or labels.max() >= len(names):
        got = f"[{labels.min()}, {labels.max()}]"
        raise ValueError(f"{op}: labels must be class indices in [0, {len(names) - 1}], got values in {got}")
    return labels, probs, names


def _one_vs_rest_auc(is_class: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``is_class`` against the rest; NaN unless both groups are present."""
    if is_class.all() or not is_class.any():
        return math.nan
    return float(skm.roc_auc_score(is_class, score))


def classification_metrics(labels, probs, *, class_names: Sequence[str]) -> dict:
    """Accuracy, macro F1, one-vs-rest ROC AUC, confusion matrix and per-class scores.

    ``labels`` (N,) integer class indices, ``probs`` (N, C) class probabilities (or any scores:
    the prediction is the argmax, the AUCs only use the ranking), tensors or arrays;
    ``class_names`` the C names. Returns::

        {"accuracy", "f1", "auc", "auc_note", "confusion", "per_class", "n"}

    - ``f1``: macro average of the per-class F1 over the classes where it is defined (a class
      neither present nor predicted has none);
    - ``auc``: macro average of the per-class one-vs-rest ROC AUCs; NaN when a class is absent
      from ``labels`` (its AUC is undefined), and ``auc_note`` then names the absent classes
      (``auc_note`` is None otherwise);
    - ``confusion``: C x C nested list of counts, rows are true classes, columns predictions;
    - ``per_class``: ``{name: {"precision", "recall", "f1", "auc", "support"}}``, NaN where undefined
      (precision of a class never predicted, recall of a class absent from ``labels``);
    - ``n``: the number of samples.
    """
    labels, probs, names = _checked("classification_metrics", labels, probs, class_names)
    classes = np.arange(len(names))
    predicted = probs.argmax(1)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=np.nan
    )
    aucs = [_one_vs_rest_auc(labels == k, probs[:, k]) for k in classes]
    absent = [name for name, count in zip(names, support) if count == 0]
    per_class = {
        name: {
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "f1": float(f1[k]),
            "auc": aucs[k],
            "support": int(support[k]),
        }
        for k, name in enumerate(names)
    }
    return {
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "f1": float(np.nanmean(f1)),  # at least one class is present, so one F1 is defined
        "auc": math.nan if absent else float(np.mean(aucs)),
        "auc_note": f"AUC undefined: no samples of class {', '.join(absent)}" if absent else None,
        "confusion": skm.confusion_matrix(labels, predicted, labels=classes).tolist(),
        "per_class": per_class,
        "n": len(labels),
    }


def roc_curves(labels, probs, *, class_names: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """One-vs-rest ROC curves: ``{name: (fpr, tpr, auc)}`` with fpr, tpr 1-D float arrays from (0, 0) to (1, 1).

    Inputs as in :func:`classification_metrics`. A class absent from ``labels`` (or the only class
    present) has no ROC curve and is left out of the result.
    """
    labels, probs, names = _checked("roc_curves", labels, probs, class_names)
    curves = {}
    for k, name in enumerate(names):
        is_class = labels == k
        if is_class.all() or not is_class.any():
            continue
        fpr, tpr, _ = skm.roc_curve(is_class, probs[:, k])
        curves[name] = (fpr, tpr, float(skm.auc(fpr, tpr)))
    return curves
