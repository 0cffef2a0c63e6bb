"""Domain adaptation: train on labelled simulation, adapt to unlabelled real data."""

from .domain import Domain

__all__ = ["Domain"]
