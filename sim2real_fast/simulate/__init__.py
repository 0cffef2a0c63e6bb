"""The embedded detector simulator: calorimeter showers and HCAL DQM maps, sim and "real" domains.

>>> from sim2real_fast import simulate
>>> sim = simulate.showers(10_000, seed=0, effects="nominal")      # the sim domain, CaloGAN
>>> real = simulate.showers(10_000, seed=1, effects="realistic")   # a "real" detector
>>> sim.images.shape, sim.labels[:5], sim.energy[:5]                # (N, 504) MeV, 0/1/2, GeV
>>> randomised = simulate.showers(10_000, seed=2, effects=simulate.PRIOR)
>>> pairs = simulate.paired_showers(1_000, seed=3)                  # the same showers, sim and real
>>> maps = simulate.dqm_maps(500, domain="real", seed=0)           # HCAL occupancy + fault labels
>>> run_a = simulate.dqm_maps(500, conditions=simulate.RUNS["A"])   # one run's luminosity and pile-up
"""

from .dqm import DOMAIN_CONDITIONS, FAULTS, RUNS, DQMMaps, RunConditions, active_mask, dqm_maps, hit_probability
from .effects import DetectorEffects
from .knobs import Randomized
from .medium import PB_LAR, Medium
from .presets import DEV_SEEDS, PRESETS, PRIOR, prior_effects, real_effects
from .randomize import IMAGE_LEVEL_FAMILIES, SHOWER_LEVEL_FAMILIES, randomize_images
from .showers import PARTICLES, PairedShowers, ShowerPhysics, SimulatedShowers, paired_showers, showers

__all__ = [
    "DEV_SEEDS",
    "DOMAIN_CONDITIONS",
    "FAULTS",
    "IMAGE_LEVEL_FAMILIES",
    "PARTICLES",
    "PB_LAR",
    "PRESETS",
    "PRIOR",
    "RUNS",
    "SHOWER_LEVEL_FAMILIES",
    "DQMMaps",
    "DetectorEffects",
    "Medium",
    "PairedShowers",
    "Randomized",
    "RunConditions",
    "ShowerPhysics",
    "SimulatedShowers",
    "active_mask",
    "dqm_maps",
    "hit_probability",
    "paired_showers",
    "prior_effects",
    "randomize_images",
    "real_effects",
    "showers",
]
