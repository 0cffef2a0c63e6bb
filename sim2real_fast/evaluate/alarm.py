"""Sim-to-real gap alarm: catch a model that only shines on simulation before it is deployed."""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["flag_gaps", "gap_alarm"]


def _check_threshold(op: str, threshold: float) -> None:
    if not (isinstance(threshold, (int, float)) and threshold >= 0 and math.isfinite(threshold)):
        raise ValueError(f"{op}: threshold must be a finite number >= 0, got {threshold!r}")


def gap_alarm(sim_score: float, real_score: float, *, threshold: float = 0.05) -> bool:
    """True when the score on simulation exceeds the score on real data by more than ``threshold``.

    Scores are higher-is-better fractions (e.g. accuracies in [0, 1]); the default flags a drop of
    more than 5 points. A NaN score raises no alarm (there is nothing to compare).
    """
    _check_threshold("gap_alarm", threshold)
    return sim_score - real_score > threshold


def flag_gaps(
    results: Mapping[str, Mapping[str, float]],
    *,
    sim_key: str = "source_accuracy",
    real_key: str = "target_accuracy",
    threshold: float = 0.05,
) -> dict[str, float]:
    """``{method: sim - real}`` for every method of ``results`` whose :func:`gap_alarm` fires.

    ``results`` maps a method name to its scores; each must hold ``sim_key`` and ``real_key``
    (KeyError naming the method otherwise).
    """
    _check_threshold("flag_gaps", threshold)
    flagged = {}
    for method, scores in results.items():
        missing = [key for key in (sim_key, real_key) if key not in scores]
        if missing:
            raise KeyError(f"flag_gaps: results[{method!r}] has no {' or '.join(map(repr, missing))}; it has {sorted(scores)}")
        sim, real = float(scores[sim_key]), float(scores[real_key])
        if gap_alarm(sim, real, threshold=threshold):
            flagged[method] = sim - real
    return flagged
