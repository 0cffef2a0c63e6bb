"""Generative fast simulation of calorimeter showers: learn p(shower | incident energy, particle), sample fast.

A generator is trained on simulated (N, n_cells) showers in MeV with their labels and incident
energies (GeV), early-stopped on a validation split of them, and draws new showers of the same
geometry. Methods register by name (:data:`REGISTRY`); each is one module here.

>>> from sim2real_fast import generate, simulate
>>> data = simulate.showers(50_000, effects="nominal", seed=0)
>>> model = generate.ShowerVAE("calogan").fit(data.images, data.labels, data.energy, energy_range=(1, 100),
...                                           checkpoint_dir="runs/vae")
>>> model.save("vae.pt")
>>> images, labels, energy = generate.load("vae.pt").sample(100_000, energy=(1, 100), particle="e+", seed=1)

``generate.FlowVAE`` ("flow-vae", two stages: a flow of the layer energies, the VAE's cells given them)
trains, samples and saves the same way; it needs the optional zuko (``pip install "sim2real_fast[generate]"``).
"""

from .base import FILE_FORMAT, REGISTRY, Generator, GeneratorFileError, Samples, load, read_payload, register
from .base import validation_split
from .flow_vae import FlowVAE  # importing a generator's module registers it
from .vae import CellVAE, ShowerVAE
from .vae import gaussian_kl, kl_beta, log_expected_energy, log_ndtr, mixture_log_density, ndtr, zero_inflated_nll

__all__ = [
    "CellVAE", "FILE_FORMAT", "FlowVAE", "gaussian_kl", "Generator", "GeneratorFileError", "kl_beta", "load",
    "log_expected_energy", "log_ndtr", "mixture_log_density", "ndtr", "read_payload", "register", "REGISTRY",
    "Samples", "ShowerVAE", "validation_split", "zero_inflated_nll",
]
