"""One domain's events as the adaptation methods see them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Domain"]


@dataclass(frozen=True)
class Domain:
    """Model inputs of one domain, with labels where they are known.

    Attributes:
        inputs: (N, ...) float32 model inputs (calorimeter: (N, n_cells) cell energies in MeV in the
            geometry's flat order; occupancy maps: (N, C, H, W)).
        labels: (N,) int64 class labels, or None for an unlabelled domain.
        energy: (N,) incident energy in GeV, or None where unknown.
        name: what the domain is ("sim", "real", ...), used in messages and reports.
    """

    inputs: torch.Tensor
    labels: torch.Tensor | None = None
    energy: torch.Tensor | None = None
    name: str = "domain"

    def __post_init__(self) -> None:
        n = self.inputs.shape[0] if self.inputs.dim() else None
        if n is None:
            raise ValueError(f"Domain {self.name!r}: inputs must be (N, ...), got a scalar")
        for field in ("labels", "energy"):
            value = getattr(self, field)
            if value is not None and (value.dim() != 1 or value.shape[0] != n):
                raise ValueError(f"Domain {self.name!r}: {field} must be ({n},), got {tuple(value.shape)}")
        if self.labels is not None and self.labels.dtype != torch.int64:
            raise TypeError(f"Domain {self.name!r}: labels must be int64, got {self.labels.dtype}")

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def subset(self, index: torch.Tensor | slice) -> Domain:
        """The events at ``index`` (a slice, an int64 index tensor or a bool mask)."""
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Domain(self.inputs[index], pick(self.labels), pick(self.energy), self.name)

    def unlabelled(self) -> Domain:
        """The same events without labels (what an adaptation method may see of the real domain)."""
        return Domain(self.inputs, None, self.energy, self.name)

    def split(self, fraction: float, *, seed: int = 0) -> tuple[Domain, Domain]:
        """A random (fraction, 1 - fraction) split of the events, reproducible from ``seed``."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"Domain.split: fraction must be in (0, 1), got {fraction!r}")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        cut = round(fraction * len(self))
        return self.subset(order[:cut]), self.subset(order[cut:])
