"""Named detectors and the domain-randomisation prior.

- ``none``: no digitisation (true energies above the readout threshold).
- ``nominal``: the sim domain: nominal noise, pile-up, the known dead map, zero suppression, nominal
  calibration (:class:`DetectorEffects` ``()``).
- ``realistic``: nominal + every residual family at a size inside its published range (README,
  "Simulator"); instance ``detector_seed`` 0.
- ``dev``: ``realistic`` as other instances, for tuning only: dev instance k has ``detector_seed``
  :data:`DEV_SEEDS` + k, so no dev instance is ever one of the test instances (seeds below it).
- ``stress``: nominal + the same residual families at 2.5 x their realistic size.

:data:`PRIOR` randomises every residual per event over its documented range (around nominal,
symmetric where the sign is unknown); it is written from the ranges, not from the presets.
"""

from __future__ import annotations

from .effects import RESIDUALS, DetectorEffects
from .knobs import Randomized

__all__ = ["DEV_SEEDS", "PRESETS", "PRIOR", "REALISTIC_RESIDUALS", "STRESS_FACTOR", "get_effects", "prior_effects", "real_effects"]

NOMINAL = DetectorEffects()

#: The dev preset's detector instances start here; test presets' instances are numbered from 0.
DEV_SEEDS = 1_000_000

#: The realistic detector's residuals, each inside its published range (README, "Simulator").
REALISTIC_RESIDUALS = {
    "lateral_scale": 1.035,            # EM shower widths +3.5% (range +2-5%)
    "longitudinal_shift_x0": 0.2,      # start depth +0.2 X0 (range +0.1-0.3)
    "pion_em_fraction_scale": 0.92,    # hadronic model: EM fraction -8% (range 5-15%)
    "pion_width_scale": 1.10,          # non-EM width +10% (range 5-15%)
    "pion_length_scale": 1.08,         # non-EM length +8% (range 5-15%)
    "miscalibration": 0.0075,          # per-cell rms 0.75% (range 0.5-1%)
    "layer_miscalibration": 0.015,     # per-layer sampling fraction +-1.5% (range 1-2%)
    "nonlinearity": -0.015,            # -0.75% at 1 GeV, -0.09% at 15 GeV (range ~1% low, <= 0.1% >= 15 GeV)
    "noise_residual": 0.15,            # noise +15% (range +-10-20%)
    "extra_dead_fraction": 0.0005,     # extra dead cells 0.05% (range <= 0.1%)
    "hot_fraction": 0.0004,            # intermittent hot cells 0.04% (range <= 0.05%)
    "crosstalk_residual": 0.015,       # cross-talk +1.5 points (range 1-2 points)
    "pileup_residual": 0.05,           # pile-up +5% (range +-3-7% after reweighting)
}

#: ``stress`` = the realistic residuals times this (in distance from neutral).
STRESS_FACTOR = 2.5

_REALISTIC = NOMINAL.replace(**REALISTIC_RESIDUALS)

PRESETS = {
    "none": DetectorEffects(noise_mev=0.0, zero_suppression_sigma=0.0, known_dead_fraction=0.0, crosstalk=0.0,
                            pileup_occupancy=0.0),
    "nominal": NOMINAL,
    "realistic": _REALISTIC,
    "dev": _REALISTIC.replace(detector_seed=DEV_SEEDS),
    "stress": NOMINAL.replace(**{
        name: RESIDUALS[name] + STRESS_FACTOR * (value - RESIDUALS[name]) for name, value in REALISTIC_RESIDUALS.items()
    }),
}

#: Domain-randomisation prior: nominal digitisation, every residual drawn per event over its published
#: range (signed knobs symmetric around nominal where the sign is unknown; fresh maps per event).
PRIOR = NOMINAL.replace(
    lateral_scale=Randomized(1.0, 1.05),
    longitudinal_shift_x0=Randomized(0.0, 0.3),
    pion_em_fraction_scale=Randomized(0.85, 1.15),
    pion_width_scale=Randomized(0.85, 1.15),
    pion_length_scale=Randomized(0.85, 1.15),
    miscalibration=Randomized(0.0, 0.01),
    layer_miscalibration=Randomized(0.0, 0.02),
    nonlinearity=Randomized(-0.015, 0.015),
    noise_residual=Randomized(-0.2, 0.2),
    extra_dead_fraction=Randomized(0.0, 0.001),
    hot_fraction=Randomized(0.0, 0.0005),
    crosstalk_residual=Randomized(-0.02, 0.02),
    pileup_residual=Randomized(-0.05, 0.05),
)


def prior_effects() -> DetectorEffects:
    """:data:`PRIOR`: what ``simulate.showers(..., effects=...)`` takes for domain randomisation."""
    return PRIOR


def real_effects(preset: str, detector_seed: int) -> DetectorEffects:
    """The preset's detector as instance ``detector_seed`` (its calibration factors, layer signs, extra
    dead and hot cells; the knob values and the known dead map stay). ``dev`` instances are drawn from
    their own seeds (:data:`DEV_SEEDS` + ``detector_seed``), never a test preset's."""
    if preset not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {preset!r}")
    if not isinstance(detector_seed, int) or detector_seed < 0:
        raise ValueError(f"detector_seed: expected an int >= 0, got {detector_seed!r}")
    return PRESETS[preset].replace(detector_seed=detector_seed + (DEV_SEEDS if preset == "dev" else 0))


def get_effects(effects: None | str | DetectorEffects) -> DetectorEffects:
    """None -> ``none``; a preset name; or the DetectorEffects itself."""
    if effects is None:
        return PRESETS["none"]
    if isinstance(effects, DetectorEffects):
        return effects
    if isinstance(effects, str) and effects in PRESETS:
        return PRESETS[effects]
    raise ValueError(f"effects: expected None, a DetectorEffects or a preset ({sorted(PRESETS)}), got {effects!r}")
