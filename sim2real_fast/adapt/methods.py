"""The adaptation methods, how they combine, and what each needs.

- ``source_only``: cross-entropy on the labelled simulation (the baseline).
- ``target_oracle``: cross-entropy on labelled real events (the upper reference; uses target labels).
- ``dann``: a domain discriminator behind gradient reversal (Ganin et al., JMLR 2016).
- ``coral``: Deep CORAL, the distance of the feature covariances (Sun & Saenko, 2016).
- ``mmd``: multi-kernel Gaussian MMD^2 of the features and/or logits (Long et al., DAN, 2015).
- ``pseudo_label``: self-training on the model's confident, class-balanced target predictions.
- ``few_shot``: fine-tuning with k labelled real events per class beside the source batches.
- ``simclr``: NT-Xent pretraining on source + target under calorimeter augmentations, then training
  on augmented labelled batches (Chen et al., ICML 2020).
- ``domain_randomization``: training on simulation whose detector effects are drawn per event.
"""

from __future__ import annotations

__all__ = ["ALIGNMENTS", "METHODS", "parse_method", "stages"]

#: Every method, in the canonical order of a combination.
METHODS = (
    "source_only",
    "target_oracle",
    "dann",
    "coral",
    "mmd",
    "pseudo_label",
    "few_shot",
    "simclr",
    "domain_randomization",
)

#: Methods that add a loss between source and target features to every supervised step.
ALIGNMENTS = ("dann", "coral", "mmd")

#: References that train on one domain with plain cross-entropy and combine with nothing.
_ALONE = ("source_only", "target_oracle")


def parse_method(spec: str) -> tuple[str, ...]:
    """``"dann+pseudo_label"`` -> ``("dann", "pseudo_label")``, in the order of :data:`METHODS`.

    Any set of the other methods combines (several alignment losses too, e.g. ``"coral+mmd"``);
    ``source_only`` and ``target_oracle`` stand alone.
    """
    if not isinstance(spec, str):
        raise TypeError(f"method: expected a string such as 'dann+pseudo_label', got {type(spec).__name__}")
    names = [name.strip() for name in spec.split("+")]
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"method {spec!r}: unknown name(s) {unknown}; expected '+'-joined names from {list(METHODS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"method {spec!r}: {repeated} given more than once")
    alone = [name for name in names if name in _ALONE]
    if alone and len(names) > 1:
        raise ValueError(f"method {spec!r}: {alone[0]} is a reference and combines with no other method")
    return tuple(name for name in METHODS if name in names)


def stages(methods: tuple[str, ...]) -> tuple[str, ...]:
    """The stages a parsed method runs, in order: pretrain, train, few_shot, pseudo_label."""
    return tuple(
        stage
        for stage, wanted in (
            ("pretrain", "simclr" in methods),
            ("train", True),
            ("few_shot", "few_shot" in methods),
            ("pseudo_label", "pseudo_label" in methods),
        )
        if wanted
    )
