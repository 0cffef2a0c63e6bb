"""Data-quality monitoring on HCAL occupancy maps: fault injection, normalisations, the training-free
baselines and the fault-detection metrics.

>>> from sim2real_fast import dqm, io
>>> real = io.read_hcal_dqm("hcal_dqm_run306138_10ls.hdf5")            # (10 LS, 42336) counts
>>> reference = dqm.build_reference(real.maps[0::2])                     # good LS
>>> faulted = dqm.inject_faults(real.maps[1::2], fault_fraction=1.0, seed=0)
>>> scores = dqm.zscore_scores(faulted.maps, reference, events=faulted.events)
>>> dqm.detection_metrics(scores.maps, faulted.labels, channel_scores=scores.channels,
...                       channel_labels=faulted.channel_labels, active=reference.active)
"""

from . import detect
from .baselines import AGGREGATES, Scores, ratio_scores, zscore_scores
from .faults import FAULT_TYPES, FAULTS, FaultedMaps, inject_faults
from .metrics import channel_auc, detection_metrics, false_alarm_rate, fault_type_auc, map_auc
from .normalise import (
    NORMALISATIONS,
    Reference,
    build_reference,
    event_counts,
    normalise,
    per_event,
    per_median,
    ratio_to_reference,
    zscores,
)

__all__ = [
    "detect",
    "AGGREGATES",
    "FAULTS",
    "FAULT_TYPES",
    "NORMALISATIONS",
    "FaultedMaps",
    "Reference",
    "Scores",
    "build_reference",
    "channel_auc",
    "detection_metrics",
    "event_counts",
    "false_alarm_rate",
    "fault_type_auc",
    "inject_faults",
    "map_auc",
    "normalise",
    "per_event",
    "per_median",
    "ratio_scores",
    "ratio_to_reference",
    "zscore_scores",
    "zscores",
]
