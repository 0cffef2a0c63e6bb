"""Evaluation: how big the sim-to-real gap is (:func:`domain_gap`), classification metrics, domain-shift
measures, CaloChallenge-style physics distances, the evaluation of generated showers, the gap alarm and the
energy meter."""

from .alarm import flag_gaps, gap_alarm
from .domain_gap import TRAININGS, domain_gap, randomized_effects
from .energy import EnergyMeter
from .generation import classifier_test, evaluate_generation, write_generation_report
from .metrics import classification_metrics, roc_curves
from .paired import paired_difference
from .particles import PARTICLE_CLASSES, particle_metrics
from .physics import (
    classifier_auc,
    compare_features,
    energy_response,
    fpd,
    kpd,
    ks_statistic,
    label_preservation,
    separation_power,
    wasserstein1,
)
from .shift import feature_mmd, gap_recovered, proxy_a_distance, two_sample_auc

__all__ = [
    "EnergyMeter",
    "PARTICLE_CLASSES",
    "TRAININGS",
    "classification_metrics",
    "classifier_auc",
    "classifier_test",
    "compare_features",
    "domain_gap",
    "energy_response",
    "evaluate_generation",
    "feature_mmd",
    "flag_gaps",
    "fpd",
    "gap_alarm",
    "gap_recovered",
    "kpd",
    "ks_statistic",
    "label_preservation",
    "paired_difference",
    "particle_metrics",
    "proxy_a_distance",
    "randomized_effects",
    "roc_curves",
    "separation_power",
    "two_sample_auc",
    "wasserstein1",
    "write_generation_report",
]
