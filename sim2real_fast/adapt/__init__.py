"""Domain adaptation: train on labelled simulation, adapt to unlabelled real data."""

from .augment import CaloAugment
from .checkpoint import Checkpoint
from .config import AdaptConfig
from .domain import Domain
from .methods import METHODS, parse_method
from .trainer import FitResult, fit

__all__ = ["AdaptConfig", "CaloAugment", "Checkpoint", "Domain", "FitResult", "METHODS", "fit", "parse_method"]
