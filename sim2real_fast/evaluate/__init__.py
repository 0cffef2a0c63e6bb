"""Evaluation: how big the sim-to-real gap is (:func:`domain_gap`)."""

from .domain_gap import TRAININGS, domain_gap, randomized_effects

__all__ = ["TRAININGS", "domain_gap", "randomized_effects"]
