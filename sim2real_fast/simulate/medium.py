"""Calorimeter media: the effective constants of a sampling calorimeter that the shower models use.

Mixture rules (PDG, "Passage of particles through matter"; Grindhammer-Peters hep-ex/0001020 sec. 2.3)
with thickness fractions w_i of the sampling period:
1/X0 = sum w_i / X0_i, 1/lambda_I = sum w_i / lambda_i, 1/R_M = sum w_i / R_M,i,
E_c = X0 sum w_i E_c,i / X0_i, Z_eff = sum m_i Z_i with the mass fractions m_i, and the MIP's energy
loss per mm sum w_i dE/dx_i.

GFlash's sampling-calorimeter terms (hep-ex/0001020; Geant4 ``GFlashSamplingShowerParameterisation``):
the sampling frequency F_S = X0_eff / (d_passive + d_active), stored as its inverse ``period_x0`` (the
period's thickness in X0; 0 for a homogeneous medium), and e-hat = 1 / (1 + 0.007 (Z_passive - Z_active))
(``e_hat``; 1 for a homogeneous medium), with the highest-Z material of the period as the passive one and
the lowest-Z one as the active one.

Named media (:data:`MEDIA`, the ``medium`` of a geometry's layers; :func:`get_medium`); the last
column is the readout channel's electronic noise relative to a Pb/LAr cell's (``noise_scale``):

====================  =====================================  =======  =======  ======  =====  ==========  =====
name                  sampling period                        X0 mm    R_M mm   E_c MeV Z_eff  lambda_I mm noise
====================  =====================================  =======  =======  ======  =====  ==========  =====
``pb_lar``            2 mm Pb + 4 mm LAr (CaloGAN)           15.6     35.4     9.3     69.4   374         1
``w_si``              1.4 mm W + 0.3 mm Si (Geant4 Par04)    4.22     10.9     8.2     72.5   115         0.015
``fe_scint``          14 mm Fe + 3 mm polystyrene (ATLAS     21.1     20.1     22.3    25.4   194         1
                      Tile, 4.7 : 1)
``lar``               liquid argon (ATLAS presampler)        140      90.4     32.8    18     857         1
====================  =====================================  =======  =======  ======  =====  ==========  =====
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["FE_SCINT", "LAR", "MATERIALS", "MEDIA", "PB_LAR", "W_SI", "Material", "Medium", "get_medium"]


@dataclass(frozen=True)
class Material:
    """One pure material (PDG "Atomic and nuclear properties of materials"): lengths in mm, energies in MeV.

    ``density`` g/cm3, ``z`` the (mass-weighted) atomic number, ``critical_mev`` the electron critical
    energy (Rossi), ``lambda_mm`` the nuclear interaction length, ``dedx_mev_per_mm`` the minimum
    ionisation loss.
    """

    name: str
    density: float
    z: float
    x0_mm: float
    moliere_mm: float
    critical_mev: float
    lambda_mm: float
    dedx_mev_per_mm: float


#: PDG values; polystyrene (C8H8) has Z = 96/104 x 6 + 8/104 x 1 by mass. Pb's X0 and R_M and LAr's R_M
#: are rounded (PDG: 5.612, 16.02, 90.43 mm) as in the CaloGAN medium the "real" presets were calibrated on.
MATERIALS = {
    "Pb": Material("Pb", 11.35, 82, x0_mm=5.6, moliere_mm=16.0, critical_mev=7.43, lambda_mm=175.9,
                   dedx_mev_per_mm=1.273),
    "LAr": Material("LAr", 1.396, 18, x0_mm=140.0, moliere_mm=90.4, critical_mev=32.84, lambda_mm=857.0,
                    dedx_mev_per_mm=0.2105),
    "W": Material("W", 19.3, 74, x0_mm=3.504, moliere_mm=9.327, critical_mev=7.97, lambda_mm=99.46,
                  dedx_mev_per_mm=2.210),
    "Si": Material("Si", 2.329, 14, x0_mm=93.70, moliere_mm=48.65, critical_mev=40.19, lambda_mm=465.2,
                   dedx_mev_per_mm=0.3876),
    "Fe": Material("Fe", 7.874, 26, x0_mm=17.57, moliere_mm=17.19, critical_mev=21.68, lambda_mm=167.7,
                   dedx_mev_per_mm=1.143),
    "polystyrene": Material("polystyrene", 1.060, 5.62, x0_mm=413.1, moliere_mm=94.1, critical_mev=93.11,
                            lambda_mm=727.1, dedx_mev_per_mm=0.2052),
}


@dataclass(frozen=True)
class Medium:
    """Effective constants: lengths in mm, energies in MeV.

    ``mip_mev_per_mm``: the mean visible energy a minimum-ionising particle leaves per mm of depth.
    ``noise_scale``: a readout channel's electronic noise relative to a Pb/LAr ionisation cell's (the
    unit of :class:`~sim2real_fast.simulate.DetectorEffects`' ``noise_mev`` and ``hot_mev``).
    ``period_x0``: the sampling period's thickness in X0 (1 / F_S; 0: homogeneous); ``e_hat``: GFlash's
    e-hat of the period (1: homogeneous).
    """

    name: str
    x0_mm: float
    moliere_mm: float
    critical_mev: float
    z_eff: float
    lambda_mm: float
    mip_mev_per_mm: float
    noise_scale: float = 1.0
    period_x0: float = 0.0
    e_hat: float = 1.0

    @classmethod
    def sampling(cls, name: str, period: Sequence[tuple[Material, float]], *, noise_scale: float = 1.0) -> Medium:
        """The mixture of a sampling period: (material, thickness in mm) pairs, in any order."""
        if not period or any(not isinstance(m, Material) or not t > 0 for m, t in period):
            raise ValueError(f"Medium.sampling: expected (Material, thickness_mm > 0) pairs, got {period!r}")
        if not noise_scale > 0:
            raise ValueError(f"Medium.sampling: noise_scale: expected a number > 0, got {noise_scale!r}")
        total = sum(t for _, t in period)
        w = [t / total for _, t in period]
        mass = [t * m.density for m, t in period]
        inv_x0 = sum(wi / m.x0_mm for wi, (m, _) in zip(w, period))
        z = [m.z for m, _ in period]
        homogeneous = len({m.name for m, _ in period}) == 1
        return cls(
            name=name,
            x0_mm=1.0 / inv_x0,
            moliere_mm=1.0 / sum(wi / m.moliere_mm for wi, (m, _) in zip(w, period)),
            critical_mev=sum(wi * m.critical_mev / m.x0_mm for wi, (m, _) in zip(w, period)) / inv_x0,
            z_eff=sum(mi * m.z for mi, (m, _) in zip(mass, period)) / sum(mass),
            lambda_mm=1.0 / sum(wi / m.lambda_mm for wi, (m, _) in zip(w, period)),
            mip_mev_per_mm=sum(wi * m.dedx_mev_per_mm for wi, (m, _) in zip(w, period)),
            noise_scale=float(noise_scale),
            period_x0=0.0 if homogeneous else total * inv_x0,
            e_hat=1.0 if homogeneous else 1.0 / (1.0 + 0.007 * (max(z) - min(z))),
        )


#: CaloGAN's lead / liquid argon: periods of 2 mm Pb + 4 mm LAr (Paganini et al., arXiv:1705.02355).
#: X0 = 15.6 mm (so the 90 / 347 / 43 mm layers are 5.8 / 22.3 / 2.8 X0), R_M = 35.4 mm,
#: E_c = 9.3 MeV, Z_eff = 69.4, lambda_I = 374 mm (the calorimeter is 1.28 lambda_I deep), MIP 0.56 MeV/mm.
PB_LAR = Medium.sampling("Pb/LAr (2 mm + 4 mm)", [(MATERIALS["Pb"], 2.0), (MATERIALS["LAr"], 4.0)])

#: CaloChallenge datasets 2 and 3 (Geant4 example Par04): 90 periods of 1.4 mm W + 0.3 mm Si, read out
#: in 45 layers of two periods (3.4 mm = 0.81 X0). X0 = 4.22 mm, R_M = 10.9 mm, E_c = 8.2 MeV,
#: Z_eff = 72.5, lambda_I = 115 mm (the 153 mm stack is 36 X0 and 1.3 lambda_I deep), MIP 1.89 MeV/mm.
#: Noise: silicon pads see about 0.1 MIP of noise per sensor (signal/noise ~8 in the CALICE Si-W physics
#: prototype, arXiv:0805.4833; >= 10 specified for CMS HGCAL), and a MIP stands for 3.2 MeV of shower
#: energy per 1.7 mm period, so a readout layer of two sensors has ~0.45 MeV of noise: 0.015 of a
#: 30 MeV LAr cell (ATLAS: tens of MeV).
W_SI = Medium.sampling("W/Si (1.4 mm + 0.3 mm)", [(MATERIALS["W"], 1.4), (MATERIALS["Si"], 0.3)], noise_scale=0.015)

#: ATLAS Tile calorimeter: steel and scintillating tiles in the volume ratio 4.7 : 1 (ATLAS TDR
#: CERN/LHCC 96-42), as 14 mm Fe + 3 mm polystyrene. X0 = 21.1 mm, R_M = 20.1 mm, E_c = 22.3 MeV,
#: Z_eff = 25.4, lambda_I = 194 mm, MIP 0.98 MeV/mm.
FE_SCINT = Medium.sampling("Fe/scintillator (14 mm + 3 mm)", [(MATERIALS["Fe"], 14.0), (MATERIALS["polystyrene"], 3.0)])

#: Liquid argon alone: the ATLAS presampler's 11 mm active layer.
LAR = Medium.sampling("LAr", [(MATERIALS["LAr"], 1.0)])

#: The media a geometry's layers may name (``"medium": "w_si"``).
MEDIA = {"pb_lar": PB_LAR, "w_si": W_SI, "fe_scint": FE_SCINT, "lar": LAR}


def get_medium(name: str) -> Medium:
    """The named medium of :data:`MEDIA`; a clear ValueError for an unknown name."""
    if name not in MEDIA:
        raise ValueError(f"medium: expected one of {sorted(MEDIA)}, got {name!r}")
    return MEDIA[name]
