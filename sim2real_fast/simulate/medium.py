"""Calorimeter media: the effective constants of a sampling calorimeter that the shower models use.

Mixture rules (PDG, "Passage of particles through matter"; Grindhammer-Peters hep-ex/0001020 sec. 2.3)
with thickness fractions w_i of the sampling period:
1/X0 = sum w_i / X0_i, 1/lambda_I = sum w_i / lambda_i, 1/R_M = sum w_i / R_M,i,
E_c = X0 sum w_i E_c,i / X0_i, and Z_eff = sum m_i Z_i with the mass fractions m_i.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Medium", "PB_LAR"]


@dataclass(frozen=True)
class Medium:
    """Effective constants: lengths in mm, energies in MeV.

    ``mip_mev_per_mm``: the mean visible energy a minimum-ionising particle leaves per mm of depth.
    """

    name: str
    x0_mm: float
    moliere_mm: float
    critical_mev: float
    z_eff: float
    lambda_mm: float
    mip_mev_per_mm: float

    @classmethod
    def sampling(cls, name: str, layers: list[dict]) -> Medium:
        """From the sampling period's layers: dicts of thickness_mm, density (g/cm3), z, x0_mm,
        moliere_mm, critical_mev, lambda_mm and dedx_mev_per_mm (the MIP energy loss)."""
        total = sum(layer["thickness_mm"] for layer in layers)
        w = [layer["thickness_mm"] / total for layer in layers]
        mass = [layer["thickness_mm"] * layer["density"] for layer in layers]
        inv_x0 = sum(wi / layer["x0_mm"] for wi, layer in zip(w, layers))
        return cls(
            name=name,
            x0_mm=1.0 / inv_x0,
            moliere_mm=1.0 / sum(wi / layer["moliere_mm"] for wi, layer in zip(w, layers)),
            critical_mev=sum(wi * layer["critical_mev"] / layer["x0_mm"] for wi, layer in zip(w, layers)) / inv_x0,
            z_eff=sum(m * layer["z"] for m, layer in zip(mass, layers)) / sum(mass),
            lambda_mm=1.0 / sum(wi / layer["lambda_mm"] for wi, layer in zip(w, layers)),
            mip_mev_per_mm=sum(wi * layer["dedx_mev_per_mm"] for wi, layer in zip(w, layers)),
        )


#: CaloGAN's lead / liquid argon: periods of 2 mm Pb + 4 mm LAr (Paganini et al., arXiv:1705.02355).
#: Gives X0 = 15.6 mm (so the 90 / 347 / 43 mm layers are 5.8 / 22.3 / 2.8 X0), R_M = 35.4 mm,
#: E_c = 9.3 MeV, Z_eff = 69.4, lambda_I = 374 mm (the calorimeter is 1.28 lambda_I deep),
#: MIP 0.56 MeV/mm. Material constants from the PDG tables.
PB_LAR = Medium.sampling(
    "Pb/LAr (2 mm + 4 mm)",
    [
        dict(thickness_mm=2.0, density=11.35, z=82, x0_mm=5.6, moliere_mm=16.0, critical_mev=7.43,
             lambda_mm=175.9, dedx_mev_per_mm=1.273),
        dict(thickness_mm=4.0, density=1.396, z=18, x0_mm=140.0, moliere_mm=90.4, critical_mev=32.84,
             lambda_mm=857.0, dedx_mev_per_mm=0.2105),
    ],
)
