"""What one ``sim2real run`` does: data, methods, seeds and hyper-parameters, from defaults, YAML or flags."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..adapt import VALIDATORS, AdaptConfig, parse_method

__all__ = ["DEFAULT_METHODS", "QUICK", "RunConfig", "SELECTIONS", "SMOKE_TEST"]

#: Methods of a default run, in report order: the two references, the trivial label-free baselines,
#: the methods, a combination.
DEFAULT_METHODS = (
    "source_only", "target_oracle", "mask_cells", "rescale_layers", "dann", "coral", "mmd", "pseudo_label",
    "few_shot", "simclr", "domain_randomization", "dann+pseudo_label",
)

#: Label-free checkpoint selection rules: a validator (higher is better) or the last epoch.
SELECTIONS = (*VALIDATORS, "last")


@dataclass(frozen=True)
class RunConfig:
    """One run: where the data come from, what is trained, where the results go.

    Data: with ``sim`` and ``real`` (ROOT event trees of the data layer's schema, see
    :func:`sim2real_fast.io.read_showers`) those files are read; without them ``events`` plain showers
    ("sim", seed ``data_seed``) and ``real_events`` showers through the ``preset`` detector ("real",
    seed ``data_seed + 1``) are simulated and written to ``out/data/``. The sim events are split
    ``1 - val_fraction`` / ``val_fraction`` into training and validation (source accuracy, the
    validators); the real events ``1 - test_fraction`` / ``test_fraction`` into the adaptation set
    (its labels are used only by ``target_oracle`` and the k shots of ``few_shot``) and the test set
    every score on "real" comes from. ``domain_randomization`` trains on showers whose detector
    residuals are drawn per event from their documented prior ranges (simulated anew, or with ``sim``
    the user's events with the image-level residuals applied).

    ``sim_preset`` digitises the simulated sim domain (``nominal``: an experiment's simulation, with
    its nominal noise, pile-up and known dead cells); ``preset`` is the real detector, one instance
    per ``detector_seeds`` entry (dead and hot cells, calibration; each with its own events, seed
    ``data_seed + 1 + 1000 * detector_seed``). ``pairs``: a folder of trainA/ (sim) and trainB/ (real)
    files of the same events, the training set of ``pix2pix``'s translator with the user's files; a
    simulated preset makes ``adapt.translate_events`` pairs itself (:func:`~sim2real_fast.simulate.paired_showers`,
    seed ``data_seed + 3 + 1000 * detector_seed``). ``real_class_fractions`` (one per class, summing to 1)
    subsamples the real events to other class fractions than the simulation's (label shift).

    Every method is trained once per detector instance and seed in ``seeds`` (weights, batch order,
    augmentations). Every score comes from the checkpoint the label-free rule ``selection`` picks
    (a validator of :data:`~sim2real_fast.adapt.VALIDATORS` or ``"last"``; default ``im``, the rule
    whose picks did best on ``dev``, benchmarks/tune.py). ``threads``: torch threads
    (None: torch's default). ``quick``: the run is ``--quick``'s smoke test (:data:`QUICK`); its
    printed table and report.md start with :data:`SMOKE_TEST`.
    """

    out: str = "sim2real-run"
    sim: str | None = None
    real: str | None = None
    pairs: str | None = None
    geometry: str = "calogan"
    preset: str = "realistic"
    sim_preset: str = "nominal"
    detector_seeds: tuple[int, ...] = (0,)
    real_class_fractions: tuple[float, ...] | None = None
    selection: str = "im"
    events: int = 20_000
    real_events: int = 20_000
    val_fraction: float = 0.2
    test_fraction: float = 0.5
    data_seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0,)
    threads: int | None = None
    export: bool = True
    gap_alarm_threshold: float = 0.05
    quick: bool = False
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def __post_init__(self) -> None:
        if (self.sim is None) != (self.real is None):
            raise ValueError("RunConfig: give both sim and real files, or neither (to simulate them)")
        for name in ("events", "real_events"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 10:
                raise ValueError(f"RunConfig: {name} must be an int >= 10, got {value!r}")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"RunConfig: {name} must be in (0, 1), got {getattr(self, name)!r}")
        if not self.methods:
            raise ValueError("RunConfig: methods must name at least one method")
        object.__setattr__(self, "methods", tuple("+".join(parse_method(m)) for m in self.methods))
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"RunConfig: methods must be distinct, got {list(self.methods)}")
        for name in ("seeds", "detector_seeds"):
            seeds = tuple(getattr(self, name))
            if not seeds or len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
                raise ValueError(f"RunConfig: {name} must be distinct non-negative ints, got {list(seeds)}")
            object.__setattr__(self, name, seeds)
        if self.pairs is not None and self.sim is None:
            raise ValueError("RunConfig: pairs goes with sim and real files; a simulated preset makes its own pairs")
        if self.sim is not None and len(self.detector_seeds) > 1:
            raise ValueError("RunConfig: detector_seeds draws simulated real detectors; with --real files give one")
        from ..simulate import PRESETS
        from .data import shower_geometry

        shower_geometry(self.geometry)  # an unknown or occupancy-map geometry fails before any file is written
        for name in ("preset", "sim_preset"):
            if getattr(self, name) not in PRESETS:
                raise ValueError(f"RunConfig: {name} must be one of {sorted(PRESETS)}, got {getattr(self, name)!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"RunConfig: selection must be one of {list(SELECTIONS)}, got {self.selection!r}")
        if self.real_class_fractions is not None:
            fractions = tuple(float(f) for f in self.real_class_fractions)
            if len(fractions) < 2 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
                raise ValueError("RunConfig: real_class_fractions must be one fraction >= 0 per class, summing to 1; "
                                 f"got {list(self.real_class_fractions)}")
            object.__setattr__(self, "real_class_fractions", fractions)
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"RunConfig: threads must be a positive int or None, got {self.threads!r}")
        if isinstance(self.adapt, dict):
            object.__setattr__(self, "adapt", AdaptConfig.from_dict(self.adapt))

    def replace(self, **changes) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "adapt"}
        out["methods"], out["seeds"] = list(self.methods), list(self.seeds)
        out["detector_seeds"] = list(self.detector_seeds)
        if self.real_class_fractions is not None:
            out["real_class_fractions"] = list(self.real_class_fractions)
        out["adapt"] = self.adapt.to_dict()
        return out

    @classmethod
    def from_dict(cls, description: dict, *, origin: str = "<dict>") -> RunConfig:
        """A RunConfig from a mapping (unknown keys are an error naming ``origin``)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(description) - known)
        if unknown:
            raise ValueError(f"{origin}: unknown run option(s) {unknown}; expected some of {sorted(known)}")
        values = dict(description)
        for name in ("methods", "seeds", "detector_seeds", "real_class_fractions"):
            if name in values:
                value = values[name]
                values[name] = None if value is None else tuple([value] if isinstance(value, (str, int)) else value)
        if "adapt" in values:
            values["adapt"] = AdaptConfig.from_dict(values["adapt"] or {})
        return cls(**values)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RunConfig:
        """A RunConfig from a YAML file: the fields of RunConfig, ``adapt:`` those of AdaptConfig."""
        import yaml

        try:
            with open(path) as stream:
                description = yaml.safe_load(stream) or {}
        except FileNotFoundError:
            raise FileNotFoundError(f"config file not found: {os.fspath(path)!r} (expected a YAML file of run "
                                    "options)") from None
        except yaml.YAMLError as error:
            raise ValueError(f"{os.fspath(path)}: not valid YAML ({error})") from None
        if not isinstance(description, dict):
            raise ValueError(f"{os.fspath(path)}: expected a mapping of run options, got {type(description).__name__}")
        return cls.from_dict(description, origin=os.fspath(path))


#: ``--quick``: tiny data and one short epoch per stage (about a minute on 2 cores; for tests and a first look).
QUICK = {
    "quick": True, "events": 1500, "real_events": 1500,
    "adapt": {"epochs": 1, "pseudo_iterations": 1, "pseudo_epochs": 1, "few_shot_epochs": 1, "simclr_epochs": 1},
}

#: The first line of a ``--quick`` run's printed table and report.md.
SMOKE_TEST = "--quick: a smoke test of every step on tiny data and short training, not a measurement"
