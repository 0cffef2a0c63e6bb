"""The main job: simulate or read the domains, train every method, evaluate, report (``sim2real run``)."""

from .config import DEFAULT_METHODS, QUICK, RunConfig
from .data import RunData, load_data, simulate_domain
from .runner import SCALARS, method_slug, run

__all__ = ["DEFAULT_METHODS", "QUICK", "RunConfig", "RunData", "SCALARS", "load_data", "method_slug", "run",
           "simulate_domain"]
