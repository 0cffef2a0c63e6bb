"""Electromagnetic shower parametrisation: Grindhammer-Peters (hep-ex/0001020; Geant4 GFlash).

Longitudinal: dE/dt = E (beta t)^(alpha-1) beta exp(-beta t) / Gamma(alpha), t in X0 from the shower
start, T = (alpha-1)/beta the depth of the maximum, evaluated at the medium's effective Z and critical
energy (y = E / E_c). Homogeneous media:
<ln T> = ln(ln y - 0.812), <ln alpha> = ln(0.81 + (0.458 + 2.26/Z) ln y),
sigma(ln T) = 1/(-1.4 + 1.26 ln y), sigma(ln alpha) = 1/(-0.58 + 0.86 ln y), rho = 0.705 - 0.023 ln y.
Sampling media (the paper's sampling-calorimeter section, with the coefficients of Geant4's
GFlashSamplingShowerTuning), F_S = 1 / period_x0 and e-hat from :class:`.medium.Medium`:
T_sam = T_hom - 0.55 / F_S - 0.69 (1 - e-hat), alpha_sam = alpha_hom - 0.476 / F_S (on the medians
exp<ln T>, exp<ln alpha>), sigma(ln T) = 1/(-2.5 + 1.25 ln y), sigma(ln alpha) = 1/(-0.82 + 0.79 ln y),
rho = 0.784 - 0.023 ln y, each sigma at most 0.5 (as Geant4).

Lateral granularity (GFlash): a sampling-calorimeter shower is deposited in N_spot = 10.3 / S_c E^0.959
energy spots (S_c the sampling term, sqrt(GeV); E in GeV), a homogeneous one in 93 ln(Z) E^0.876.

Radial, r in Moliere radii, tau = t / T: f(r) = p f_C(r) + (1-p) f_T(r), f_i(r) = 2 r R_i^2/(r^2+R_i^2)^2,
R_C = 0.0251 + 0.00319 ln E + (0.1162 - 0.000381 Z) tau,
R_T = k1 [exp(-2.59 (tau - 0.645)) + exp(k4 (tau - 0.645))], k1 = 0.659 - 0.00309 Z, k4 = 0.3585 + 0.0412 ln E,
p = p1 exp[(p2 - tau)/p3 - exp((p2 - tau)/p3)], p1 = 2.632 - 0.00094 Z, p2 = 0.401 + 0.00187 Z,
p3 = 1.313 - 0.0686 ln E (E in GeV). Each component's CDF is r^2/(r^2+R^2), so r = R sqrt(u/(1-u)).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "PHOTON_CONVERSION_X0",
    "longitudinal_parameters",
    "median_shower_max",
    "profile_fractions",
    "radial_parameters",
    "radius_from_uniforms",
    "sample_radius",
    "spot_count",
]

#: Mean free path of a photon before it converts, in X0 (7/9 X0 is the pair-production length's inverse).
PHOTON_CONVERSION_X0 = 9.0 / 7.0

_ALPHA_MIN = 1.05  # keeps T = (alpha-1)/beta > 0 in the rare far tails of the ln alpha fluctuation

#: Sampling-calorimeter terms: T += T1 / F_S + T2 (1 - e-hat), alpha += A1 / F_S (hep-ex/0001020).
SAMPLING_T1, SAMPLING_T2, SAMPLING_A1 = -0.55, -0.69, -0.476


def longitudinal_parameters(
    energy_gev: torch.Tensor,
    z_eff: float | torch.Tensor,
    critical_mev: float | torch.Tensor,
    *,
    generator: torch.Generator | None,
    period_x0: float | torch.Tensor = 0.0,
    e_hat: float | torch.Tensor = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) per shower, (N,) each, beta in 1/X0; z_eff, critical_mev, period_x0 (1 / F_S) and
    e_hat one medium's or (N,) per shower; period_x0 > 0 applies the sampling-calorimeter terms.
    Correlated ln T / ln alpha fluctuations from ``generator``, or the parametrised medians (no
    fluctuation) when it is None."""
    ln_y = torch.log(energy_gev * 1000.0 / critical_mev).clamp_min(2.0)  # y > 7.4: the fit's range is y >> 1
    period_x0 = torch.as_tensor(period_x0, dtype=ln_y.dtype)
    e_hat = torch.as_tensor(e_hat, dtype=ln_y.dtype)
    sampling = period_x0 > 0
    t_median = median_shower_max(energy_gev, critical_mev, period_x0=period_x0, e_hat=e_hat)
    alpha_median = 0.81 + (0.458 + 2.26 / z_eff) * ln_y + SAMPLING_A1 * period_x0
    mu_t = torch.log(torch.as_tensor(t_median, dtype=ln_y.dtype).clamp_min(math.exp(0.1)))  # Geant4: ln T >= 0.1
    mu_a = torch.log(alpha_median.clamp_min(math.exp(0.1)))
    if generator is None:
        ln_t, ln_a = mu_t, mu_a
    else:
        # ln y >= 2 keeps every denominator >= 0 (1/0 = inf, capped at 0.5)
        sigma_t = torch.where(sampling, (1.0 / (-2.5 + 1.25 * ln_y)).clamp_max(0.5), 1.0 / (-1.4 + 1.26 * ln_y))
        sigma_a = torch.where(sampling, (1.0 / (-0.82 + 0.79 * ln_y)).clamp_max(0.5), 1.0 / (-0.58 + 0.86 * ln_y))
        rho = torch.where(sampling, 0.784, 0.705) - 0.023 * ln_y
        z1 = torch.randn(energy_gev.shape, generator=generator, dtype=energy_gev.dtype)
        z2 = torch.randn(energy_gev.shape, generator=generator, dtype=energy_gev.dtype)
        ln_t = mu_t + sigma_t * z1
        ln_a = mu_a + sigma_a * (rho * z1 + torch.sqrt(1 - rho**2) * z2)
    alpha = torch.exp(ln_a).clamp_min(_ALPHA_MIN)
    return alpha, (alpha - 1) / torch.exp(ln_t)


def profile_fractions(
    alpha: torch.Tensor, beta: torch.Tensor, start: torch.Tensor, edges: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy fraction and mean depth of a Gamma profile in each depth bin.

    alpha, beta, start: (N,) shape, rate (1/unit) and start depth; edges: (S+1,) bin edges, same unit.
    Returns (fraction (N, S), mean depth from the shower start (N, S), 0 where a bin holds nothing):
    fraction = P(alpha, beta (b - s)) - P(alpha, beta (a - s)) with P the regularised lower incomplete
    gamma function (torch.special.gammainc); mean = (alpha/beta) dP(alpha+1) / dP(alpha).
    """
    x = (beta[:, None] * (edges[None, :] - start[:, None])).clamp_min(0)
    a = alpha[:, None]
    fraction = torch.diff(torch.special.gammainc(a, x), dim=1)
    first_moment = torch.diff(torch.special.gammainc(a + 1, x), dim=1) * (alpha / beta)[:, None]
    held = fraction > 1e-12
    mean = torch.where(held, first_moment / torch.where(held, fraction, 1.0), 0.0)
    return fraction.clamp_min(0), mean


def radial_parameters(
    energy_gev: torch.Tensor, tau: torch.Tensor, z_eff: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R_C, R_T, p) in Moliere radii; energy_gev and z_eff broadcast against tau (tau = t / T)."""
    ln_e = torch.log(energy_gev)
    r_core = 0.0251 + 0.00319 * ln_e + (0.1162 - 0.000381 * z_eff) * tau
    k1 = 0.659 - 0.00309 * z_eff
    k4 = 0.3585 + 0.0412 * ln_e
    r_tail = k1 * (torch.exp(-2.59 * (tau - 0.645)) + torch.exp(k4 * (tau - 0.645)))
    p1, p2 = 2.632 - 0.00094 * z_eff, 0.401 + 0.00187 * z_eff
    arg = (p2 - tau) / (1.313 - 0.0686 * ln_e)
    p = (p1 * torch.exp(arg - torch.exp(arg))).clamp(0.0, 1.0)
    return r_core, r_tail, p


def sample_radius(
    r_core: torch.Tensor, r_tail: torch.Tensor, p_core: torch.Tensor, *, generator: torch.Generator
) -> torch.Tensor:
    """One radius per entry from the two-component profile (inverse CDF of the chosen component)."""
    pick = torch.rand(r_core.shape, generator=generator, dtype=r_core.dtype)
    u = torch.rand(r_core.shape, generator=generator, dtype=r_core.dtype)
    return radius_from_uniforms(r_core, r_tail, p_core, pick, u)


def radius_from_uniforms(
    r_core: torch.Tensor, r_tail: torch.Tensor, p_core: torch.Tensor, pick: torch.Tensor, u: torch.Tensor
) -> torch.Tensor:
    """The radii for uniforms ``pick`` (core if pick < p_core, else tail) and ``u`` (r = R sqrt(u/(1-u)))."""
    u = u.clamp_max(1 - 1e-6)
    return torch.where(pick < p_core, r_core, r_tail) * torch.sqrt(u / (1 - u))


def median_shower_max(
    energy_gev: float | torch.Tensor,
    critical_mev: float | torch.Tensor,
    *,
    period_x0: float | torch.Tensor = 0.0,
    e_hat: float | torch.Tensor = 1.0,
) -> float | torch.Tensor:
    """T = exp(<ln T>) in X0 from the start: ln y - 0.812, plus the sampling terms
    -0.55 period_x0 - 0.69 (1 - e_hat) (0 for a homogeneous medium); floats, or tensors that broadcast."""
    y = energy_gev * 1000.0 / critical_mev
    ln_y = torch.log(y) if isinstance(y, torch.Tensor) else math.log(y)
    return ln_y - 0.812 + SAMPLING_T1 * period_x0 + SAMPLING_T2 * (1 - e_hat)


def spot_count(energy_gev: torch.Tensor, *, sampling_term: float | torch.Tensor, z_eff: float | torch.Tensor,
               sampling: bool | torch.Tensor) -> torch.Tensor:
    """GFlash's number of energy spots of a shower of ``energy_gev`` (float, not rounded):
    10.3 / sampling_term E^0.959 in a sampling medium, 93 ln(Z) E^0.876 in a homogeneous one."""
    e = torch.as_tensor(energy_gev)
    return torch.where(torch.as_tensor(sampling), 10.3 / torch.as_tensor(sampling_term) * e**0.959,
                       93.0 * torch.log(torch.as_tensor(z_eff, dtype=e.dtype)) * e**0.876)
