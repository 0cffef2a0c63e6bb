"""Domain adaptation: train on labelled simulation, adapt to unlabelled real data, select models without labels."""

from . import validators
from .augment import CaloAugment
from .checkpoint import Checkpoint
from .config import AdaptConfig
from .domain import Domain
from .methods import METHODS, Method, Stage, parse_method, register
from .trainer import FitResult, fit
from .validators import VALIDATORS, select, validator_scores

__all__ = [
    "AdaptConfig", "CaloAugment", "Checkpoint", "Domain", "FitResult", "METHODS", "Method", "Stage", "VALIDATORS",
    "fit", "parse_method", "register", "select", "validator_scores", "validators",
]
