"""Knobs that are a number or a per-event range (domain randomisation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

__all__ = ["Knob", "Randomized", "draw", "is_randomized"]


@dataclass(frozen=True)
class Randomized:
    """A knob drawn per event, uniformly in [low, high]: ``DetectorEffects(lateral_scale=Randomized(1.0, 1.3))``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"Randomized: expected low <= high, got ({self.low}, {self.high})")


Knob = Union[float, Randomized]


def draw(value: Knob, n: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """(n,) values of a knob: the number repeated, or n uniform draws from ``generator``."""
    if isinstance(value, Randomized):
        u = torch.rand(n, generator=generator, dtype=dtype)
        return value.low + (value.high - value.low) * u
    return torch.full((n,), float(value), dtype=dtype)


def is_randomized(value) -> bool:
    if isinstance(value, tuple):
        return any(isinstance(v, Randomized) for v in value)
    return isinstance(value, Randomized)
