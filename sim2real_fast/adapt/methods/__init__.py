"""The adaptation methods, one file each, and how their names combine.

Every module here defines one :class:`~.base.Method` and registers it by name; ``"a+b"`` is the union
of the methods' stages, heads and losses (:func:`parse_method`). A new method is one new file plus
its import below.
"""

from __future__ import annotations

from . import (  # noqa: F401  (each import registers its method)
    coral,
    cyclegan,
    dann,
    domain_randomization,
    few_shot,
    mask_cells,
    mmd,
    pix2pix,
    pseudo_label,
    rescale_layers,
    simclr,
    simgan,
    source_only,
    style,
    target_oracle,
)
from .base import REGISTRY, Extra, Method, Stage, register, train_stage

__all__ = ["ALIGNMENTS", "METHODS", "REGISTRY", "Extra", "Method", "Stage", "build", "parse_method", "register",
           "stages", "train_stage"]

#: The built-in methods, in the canonical order of a combination (``Method.order``; registered ones join it).
METHODS = tuple(sorted(REGISTRY, key=lambda name: REGISTRY[name].order))

#: Methods that add a loss between source and target features to every supervised step.
ALIGNMENTS = tuple(name for name in METHODS if REGISTRY[name].aligns)


def parse_method(spec: str) -> tuple[str, ...]:
    """``"dann+pseudo_label"`` -> ``("dann", "pseudo_label")``, in the order of :data:`METHODS`.

    Any set of methods combines (several alignment losses too, e.g. ``"coral+mmd"``); the references
    (``source_only``, ``target_oracle``) stand alone.
    """
    if not isinstance(spec, str):
        raise TypeError(f"method: expected a string such as 'dann+pseudo_label', got {type(spec).__name__}")
    names = [name.strip() for name in spec.split("+")]
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(f"method {spec!r}: unknown name(s) {unknown}; expected '+'-joined names from {list(METHODS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"method {spec!r}: {repeated} given more than once")
    alone = [name for name in names if REGISTRY[name].standalone]
    if alone and len(names) > 1:
        raise ValueError(f"method {spec!r}: {alone[0]} is a reference and combines with no other method")
    return tuple(sorted(names, key=lambda name: REGISTRY[name].order))


def build(spec: str, config) -> tuple[Method, ...]:
    """The method objects of a (combined) method name, in canonical order."""
    return tuple(REGISTRY[name](config) for name in parse_method(spec))


def stages(methods: tuple[str, ...], config=None) -> tuple[str, ...]:
    """The names of the stages a parsed method runs, in order (every fit has "train")."""
    from ..config import AdaptConfig

    config = config or AdaptConfig()
    found = [train_stage(config), *(s for name in methods for s in REGISTRY[name](config).stages())]
    return tuple(s.name for s in sorted(found, key=lambda s: s.rank))
