"""Paired differences of a method against a baseline over detector instances and training seeds.

Runs are paired: the method and the baseline share the detector instance, the data and the training
seed. Per instance the difference is averaged over its seeds; the interval is a percentile bootstrap
that resamples instances and, within each drawn instance, its seeds (a two-level bootstrap, so both
sources of spread enter; with one instance only the seeds are resampled).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping

import numpy as np

__all__ = ["paired_difference"]


def paired_difference(method: Mapping[tuple[int, int], float], baseline: Mapping[tuple[int, int], float], *,
                      resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Method minus baseline over the (instance, seed) runs both have.

    Args:
        method, baseline: ``{(detector_seed, seed): score}``.
        resamples: bootstrap resamples; level: the interval's coverage.

    Returns:
        ``{"mean", "low", "high", "per_instance": {detector_seed: mean difference}, "wins": fraction of
        instances with a positive mean difference, "runs": number of pairs}``; NaN (and no instances)
        when there is no pair.
    """
    if not 0 < level < 1 or resamples < 1:
        raise ValueError(f"paired_difference: expected 0 < level < 1 and resamples >= 1, got {level}, {resamples}")
    pairs = sorted(k for k in method if k in baseline and not math.isnan(method[k]) and not math.isnan(baseline[k]))
    if not pairs:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "per_instance": {}, "wins": math.nan, "runs": 0}
    groups: dict[int, list[float]] = {}
    for instance, s in pairs:
        groups.setdefault(instance, []).append(method[(instance, s)] - baseline[(instance, s)])
    per_instance = {instance: statistics.fmean(values) for instance, values in groups.items()}
    rng = np.random.default_rng(seed)
    values = [np.asarray(v) for v in groups.values()]
    draws = np.empty(resamples)
    for r in range(resamples):
        chosen = rng.integers(len(values), size=len(values))
        draws[r] = np.mean([rng.choice(values[i], size=len(values[i])).mean() for i in chosen])
    tail = 100 * (1 - level) / 2
    return {"mean": statistics.fmean(per_instance.values()), "low": float(np.percentile(draws, tail)),
            "high": float(np.percentile(draws, 100 - tail)), "per_instance": per_instance,
            "wins": sum(d > 0 for d in per_instance.values()) / len(per_instance), "runs": len(pairs)}
