"""Fault-detection figures of merit, each with the counts behind it (scikit-learn AUCs).

Scores are higher-is-more-anomalous; labels are :data:`~sim2real_fast.dqm.faults.FAULTS` (0 = good).
An AUC whose two groups are not both present is NaN.

- :func:`map_auc`: faulty maps (any fault) against good maps;
- :func:`fault_type_auc`: each fault type present against the good maps;
- :func:`channel_auc`: the touched channels of the faulty maps (positives) against the untouched
  ``active`` channels of every map, good and faulty (negatives);
- :func:`false_alarm_rate`: the fraction of good maps at or above the threshold that keeps
  ``efficiency`` of the faulty maps;
- :func:`detection_metrics`: all of them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn import metrics as skm

from .faults import FAULTS

__all__ = ["channel_auc", "detection_metrics", "false_alarm_rate", "fault_type_auc", "map_auc"]


def _checked(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = torch.as_tensor(scores).detach().cpu().double().numpy()
    labels = torch.as_tensor(labels).detach().cpu().numpy()
    if scores.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"scores, labels: expected two (LS,) arrays, got {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores: expected finite scores, got NaN or infinite values")
    return scores, labels


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    if positive.all() or not positive.any():
        return math.nan
    return float(skm.roc_auc_score(positive, scores))


def map_auc(scores, labels) -> dict:
    """``{"auc", "n_good", "n_faulty"}``: the per-map ROC AUC of faulty (label > 0) against good maps."""
    scores, labels = _checked(scores, labels)
    faulty = labels != 0
    return {"auc": _auc(faulty, scores), "n_good": int((~faulty).sum()), "n_faulty": int(faulty.sum())}


def fault_type_auc(scores, labels) -> dict[str, dict]:
    """``{fault: {"auc", "n_good", "n_faulty"}}`` for each fault type in ``labels``, against the good maps."""
    scores, labels = _checked(scores, labels)
    good = labels == 0
    out = {}
    for name, label in FAULTS.items():
        this = labels == label
        if label == 0 or not this.any():
            continue
        keep = good | this
        out[name] = {"auc": _auc(this[keep], scores[keep]), "n_good": int(good.sum()), "n_faulty": int(this.sum())}
    return out


def channel_auc(channel_scores, channel_labels, active) -> dict:
    """``{"auc", "n_touched", "n_untouched", "n_maps"}``: the channel-level ROC AUC.

    ``channel_scores`` (LS, n_cells), ``channel_labels`` (LS, n_cells) bool (the touched cells), ``active``
    (n_cells,) or (LS, n_cells) bool: the channels that count as negatives, e.g. the reference's active
    cells (:attr:`Reference.active`). Positives: every touched channel (touched cells are active in the
    map before the fault); negatives: the untouched active channels of all maps, good and faulty.
    """
    scores = torch.as_tensor(channel_scores).detach().cpu().double()
    touched = torch.as_tensor(channel_labels).detach().cpu().bool()
    active = torch.as_tensor(active).detach().cpu().bool()
    if scores.dim() != 2 or touched.shape != scores.shape:
        got = f"{tuple(scores.shape)} and {tuple(touched.shape)}"
        raise ValueError(f"channel_scores, channel_labels: expected two (LS, n_cells) arrays, got {got}")
    if active.shape not in (scores.shape[1:], scores.shape):
        raise ValueError(f"active: expected ({scores.shape[1]},) or {tuple(scores.shape)} bools, got {tuple(active.shape)}")
    active = active.expand_as(touched)
    counted = active | touched
    kept, positive = scores[counted].numpy(), touched[counted].numpy()
    if not np.isfinite(kept).all():
        raise ValueError("channel_scores: expected finite scores, got NaN or infinite values")
    return {
        "auc": _auc(positive, kept),
        "n_touched": int(positive.sum()),
        "n_untouched": int((~positive).sum()),
        "n_maps": len(scores),
    }


def false_alarm_rate(scores, labels, *, efficiency: float = 0.9) -> dict:
    """The false-alarm rate at a fault efficiency.

    Returns ``{"rate", "threshold", "efficiency", "n_alarms", "n_good", "n_faulty"}``.

    ``threshold``: the ceil(efficiency x n_faulty)-th largest faulty score, the highest threshold that keeps
    at least ``efficiency`` of the faulty maps (score >= threshold; ``efficiency`` in the output is the
    fraction kept, more with ties); ``rate``: the fraction of good maps with score >= threshold
    (``n_alarms`` of ``n_good``). NaN without faulty or good maps.
    """
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency: expected a fraction in (0, 1], got {efficiency}")
    scores, labels = _checked(scores, labels)
    faulty, good = scores[labels != 0], scores[labels == 0]
    out = {"rate": math.nan, "threshold": math.nan, "efficiency": math.nan, "n_alarms": 0,
           "n_good": len(good), "n_faulty": len(faulty)}
    if len(faulty) == 0 or len(good) == 0:
        return out
    k = max(math.ceil(efficiency * len(faulty) - 1e-9), 1)
    threshold = float(np.sort(faulty)[::-1][k - 1])
    alarms = int((good >= threshold).sum())
    kept = float((faulty >= threshold).mean())
    out.update(rate=alarms / len(good), threshold=threshold, efficiency=kept, n_alarms=alarms)
    return out


def detection_metrics(map_scores, labels, *, channel_scores=None, channel_labels=None, active=None,
                      efficiency: float = 0.9) -> dict:
    """``{"map", "per_fault", "channel", "false_alarm"}``: :func:`map_auc`, :func:`fault_type_auc`,
    :func:`channel_auc` (None without ``channel_scores``, ``channel_labels`` and ``active``) and
    :func:`false_alarm_rate` at ``efficiency``."""
    given = [x is not None for x in (channel_scores, channel_labels, active)]
    if any(given) and not all(given):
        raise ValueError("channel_scores, channel_labels, active: give all three for the channel AUC, or none")
    channel = channel_auc(channel_scores, channel_labels, active) if all(given) else None
    return {
        "map": map_auc(map_scores, labels),
        "per_fault": fault_type_auc(map_scores, labels),
        "channel": channel,
        "false_alarm": false_alarm_rate(map_scores, labels, efficiency=efficiency),
    }
