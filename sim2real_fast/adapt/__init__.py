"""Domain adaptation: train on labelled simulation, adapt to unlabelled real data."""

from . import validators
from .domain import Domain
from .validators import VALIDATORS, select, validator_scores

__all__ = ["Domain"]
__all__ += ["VALIDATORS", "select", "validator_scores", "validators"]
