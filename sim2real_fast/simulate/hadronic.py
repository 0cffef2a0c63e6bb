"""Charged-pion showers: interaction depth, EM fraction, non-EM longitudinal profile, MIP track.

- The pion interacts at a depth drawn from exp(-s / lambda_I); one that does not interact before the
  back of the calorimeter leaves only its MIP track (it punches through).
- EM fraction (pi0 -> gamma gamma sub-showers), Groom's power law (Gabriel et al., NIM A 338 (1994)
  336): <f_em> = 1 - (E / E0)^(k - 1), E0 = 1 GeV, k = 0.82; drawn per event, Gaussian, clamped to [0, 1].
  The EM part showers as an electron of energy f_em E (Grindhammer-Peters) from the interaction point.
- The non-EM part is seen with the response h/e < 1 (so e/h > 1: pions read lower than electrons) and
  follows a Gamma profile in lambda_I from the interaction point, with the shape and rate of the
  hadronic term of Bock et al. (NIM 186 (1981) 533): a = 0.6165 + 0.3183 ln E, d = 0.9099 - 0.0237 ln E.
"""

from __future__ import annotations

import torch

__all__ = ["em_fraction", "interaction_depth", "nonem_profile"]


def interaction_depth(n: int, *, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """(n,) depths of the first inelastic interaction in lambda_I (exponential, mean 1)."""
    return torch.empty(n, dtype=dtype).exponential_(1.0, generator=generator)


def em_fraction(
    energy_gev: torch.Tensor, sigma: torch.Tensor, *, e0_gev: float = 1.0, k: float = 0.82,
    generator: torch.Generator,
) -> torch.Tensor:
    """(N,) EM fraction: mean 1 - (E/E0)^(k-1), spread ``sigma`` (N,), clamped to [0, 1]."""
    mean = 1 - (energy_gev / e0_gev).clamp_min(1.0) ** (k - 1)
    z = torch.randn(energy_gev.shape, generator=generator, dtype=energy_gev.dtype)
    return (mean + sigma * z).clamp(0.0, 1.0)


def nonem_profile(energy_gev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) of the non-EM Gamma profile, beta in 1/lambda_I."""
    ln_e = torch.log(energy_gev)
    alpha = 0.6165 + 0.3183 * ln_e
    rate = 0.9099 - 0.0237 * ln_e
    return alpha.clamp_min(0.3), rate
