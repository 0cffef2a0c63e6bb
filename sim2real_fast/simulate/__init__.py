"""The embedded detector simulator: calorimeter showers and HCAL DQM maps, sim and "real" domains.

>>> from sim2real_fast import simulate
>>> sim = simulate.showers(10_000, seed=0)                       # plain simulation, CaloGAN
>>> real = simulate.showers(10_000, seed=1, effects="default")   # the "real" detector
>>> sim.images.shape, sim.labels[:5], sim.energy[:5]              # (N, 504) MeV, 0/1/2, GeV
>>> maps = simulate.dqm_maps(500, domain="real", seed=0)         # HCAL occupancy + fault labels
"""

from .dqm import FAULTS, DQMMaps, active_mask, dqm_maps
from .effects import PRESETS, DetectorEffects
from .knobs import Randomized
from .medium import PB_LAR, Medium
from .showers import PARTICLES, ShowerPhysics, SimulatedShowers, showers

__all__ = [
    "FAULTS",
    "PARTICLES",
    "PB_LAR",
    "PRESETS",
    "DQMMaps",
    "DetectorEffects",
    "Medium",
    "Randomized",
    "ShowerPhysics",
    "SimulatedShowers",
    "active_mask",
    "dqm_maps",
    "showers",
]
