"""The domains of a run: simulated (and written as ROOT files) or read from the user's files, then split."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from .. import distributed
from .. import geometry as _geometry
from .. import io, simulate
from ..adapt import Domain
from .config import RunConfig

__all__ = ["RunData", "SimSide", "load_data", "load_pairs", "load_sim", "particle_names", "randomized_copy",
           "read_domain", "shower_geometry", "simulate_domain"]

_CHUNK = 10_000  # showers simulated per progress step


@dataclass(frozen=True)
class RunData:
    """The splits every method of a run sees, for one real detector instance.

    Attributes:
        sim_train, sim_val: labelled simulation (training; validation = "source" scores).
        real_adapt: the real events adaptation may use, labelled; methods get ``real_adapt.unlabelled()``
            except ``target_oracle`` (all labels) and ``few_shot`` (k per class).
        real_test: labelled real events every "real" score comes from.
        real: every event of ``real_file`` in entry order (for the per-event predictions).
        randomized: labelled domain-randomised simulation, or None when no method needs it.
        paired: (sim, real) Domains of the same events through both detectors (``pix2pix``), or None
            when no method needs them (:func:`load_pairs`).
        real_split: (N_real,) int8 per event of ``real_file`` in entry order: 0 adaptation, 1 test,
            -1 left out (label shift: ``real_class_fractions``).
        sim_file, real_file: the event files (written under ``out/data`` when simulated).
        class_names: label -> name.
        detector_seed: the real detector instance (None for the user's real file).
    """

    geometry: _geometry.Geometry
    class_names: tuple[str, ...]
    sim_train: Domain
    sim_val: Domain
    real_adapt: Domain
    real_test: Domain
    real: Domain
    randomized: Domain | None
    real_split: torch.Tensor
    sim_file: Path
    real_file: Path
    detector_seed: int | None = None
    paired: tuple[Domain, Domain] | None = None


def simulate_domain(n: int, *, geometry, effects, seed: int, description: str, progress: bool = True):
    """n showers in chunks of 10,000 (chunk k uses seed ``seed * 1_000_003 + k``), joined; a tqdm bar on stderr."""
    from tqdm import tqdm

    parts = []
    with tqdm(total=n, desc=description, unit=" showers", unit_scale=True, file=sys.stderr,
              disable=None if progress else True) as bar:
        for k, start in enumerate(range(0, n, _CHUNK)):
            size = min(_CHUNK, n - start)
            parts.append(simulate.showers(size, geometry=geometry, effects=effects, seed=seed * 1_000_003 + k))
            bar.update(size)
    fields = ("images", "labels", "energy", "overflow")
    return parts[0]._replace(**{name: torch.cat([getattr(p, name) for p in parts]) for name in fields})


def _simulated(path: Path, n: int, *, geometry, effects, seed: int, description: str, progress: bool) -> Path:
    """``path`` with ``n`` simulated showers (kept as it is when it exists: same options, same file).

    Under ``torchrun`` rank 0 writes it while the other ranks wait (:func:`distributed.main_first`)."""
    with distributed.main_first():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            showers = simulate_domain(n, geometry=geometry, effects=effects, seed=seed, description=description,
                                      progress=progress)
            io.write_showers_root(path, showers.images, showers.labels, showers.energy, geometry=geometry)
    return path


#: Preset geometries of occupancy maps, not of calorimeter showers (``sim2real dqm`` reads them).
_MAP_GEOMETRIES = ("hcal",)

_SCHEMA = "a ROOT event tree 'events' with branches hit_cell, hit_energy, label, energy (as sim2real simulate writes)"


def _is_root_file(path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(4) == b"root"


def _not_showers(path, what: str) -> str | None:
    """Why a ROOT file without an 'events' tree is not a shower file, when it is DQM occupancy maps."""
    objects = io.list_objects(path)
    maps = [name for name, kind in objects.items() if (name == "maps" and kind == "TTree") or kind.startswith("TH2")]
    if not maps:
        return None
    shown = ", ".join(map(repr, maps[:3])) + (f", ... ({len(maps)} in all)" if len(maps) > 3 else "")
    return (f"{what} file {str(path)!r} looks like a DQM occupancy-maps file ({shown}), not showers: expected "
            f"{_SCHEMA}; for maps use sim2real dqm --real {path}")


def _check_layers(showers, path, geometry, what: str) -> None:
    """ValueError when every hit of a file lies in the first layer of a geometry with several: the file was
    written for a smaller geometry whose cell indices happen to fit."""
    if geometry.n_layers < 2 or not bool(showers.images.any()):
        return
    if not bool(showers.images[:, geometry.layer_offsets[1]:].any()):
        last = int((showers.images != 0).any(0).nonzero().max())
        raise ValueError(f"{what} file {str(path)!r} does not match geometry {geometry.name!r}: every hit is in its "
                         f"first layer {geometry.layers[0].name!r} (largest hit_cell {last}; the geometry has "
                         f"{geometry.n_layers} layers, {geometry.n_cells} cells). Pass the file's geometry (--geometry)")


def shower_geometry(geometry) -> _geometry.Geometry:
    """The Geometry of shower files (a preset name, a description file or a Geometry); a ValueError for an
    unknown one and for an occupancy-map geometry (``hcal``)."""
    geometry = _geometry.get(geometry)
    if geometry.name in _MAP_GEOMETRIES:
        raise ValueError(f"geometry {geometry.name!r} is the grid of DQM occupancy maps ({geometry.n_layers} layers "
                         f"of {geometry.layers[0].rows} x {geometry.layers[0].cols}, no cell sizes), not a calorimeter "
                         "for showers: pass the shower files' geometry (--geometry, default calogan); for occupancy "
                         "maps use sim2real dqm --real FILE")
    return geometry


def read_domain(path, geometry, what: str, *, labelled: bool, min_events: int = 1) -> Domain:
    """The events of a ROOT event tree as a Domain (labels None when the file has none).

    Clear errors (ValueError, FileNotFoundError) for a missing file, a file that is not ROOT, DQM
    occupancy maps, an occupancy-map ``geometry``, cells outside ``geometry`` or all in its first layer
    (the wrong --geometry), fewer than ``min_events`` events and, with ``labelled``, events without
    labels (no branch, or label -1).
    """
    geometry = shower_geometry(geometry)
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} file not found: {str(path)!r} (expected {_SCHEMA})")
    try:
        showers = io.read_showers(path, geometry=geometry)
    except IndexError as error:
        raise ValueError(f"{what} file {str(path)!r} does not match geometry {geometry.name!r} ({geometry.n_cells} "
                         f"cells): {error}. Pass the file's geometry (--geometry)") from None
    except io.CorruptFileError:
        if not _is_root_file(path):
            raise ValueError(f"{what} file {str(path)!r} is not a ROOT file: expected {_SCHEMA}") from None
        raise
    except io.MissingKeyError:
        reason = _not_showers(path, what)
        if reason is None:
            raise
        raise ValueError(reason) from None
    _check_layers(showers, path, geometry, what)
    if len(showers) < min_events:
        raise ValueError(f"{what} file {str(path)!r}: expected at least {min_events} events, got {len(showers)}")
    has_labels = not bool((showers.labels < 0).any())
    if labelled and not has_labels:
        raise ValueError(f"{what} file {str(path)!r} has unlabelled events (no 'label' branch, or label -1), "
                         f"but the {what} domain needs labels here")
    return Domain(showers.images, showers.labels if has_labels else None, showers.energy.float(), what)


def load_pairs(pairs, geometry) -> tuple[Domain, Domain]:
    """The paired showers of a folder in the CycleGAN layout: ``trainA/`` sim and ``trainB/`` real files
    of the same events in the same order (:func:`sim2real_fast.translate.read_layout`, ``paired=True``)."""
    from ..translate import read_layout

    if not Path(pairs).is_dir():
        raise FileNotFoundError(f"pairs folder not found: {str(pairs)!r} (expected trainA/ sim and trainB/ real files "
                                "of the same events)")
    return read_layout(pairs, geometry=geometry, paired=True)


def _needs_pairs(config: RunConfig) -> bool:
    from ..adapt.methods import REGISTRY, parse_method

    return any("paired" in REGISTRY[name].sees for method in config.methods for name in parse_method(method))


def _simulated_pairs(config: RunConfig, geometry, detector_seed: int, progress: bool) -> Path:
    """``out/data/pairs-<preset>-d<k>/``: ``translate_events`` showers simulated through the sim detector
    (trainA) and the same events through the real detector instance (trainB), seed
    ``data_seed + 3 + 1000 * detector_seed``; kept as it is when it exists (written by rank 0 under ``torchrun``)."""
    from ..translate import write_layout

    folder = Path(config.out) / "data" / f"pairs-{config.preset}-d{detector_seed}"
    files = [folder / side / "pairs.root" for side in ("trainA", "trainB")]
    with distributed.main_first():
        if not all(f.exists() for f in files):
            if progress:
                print(f"paired sim/real showers ({config.preset}, detector {detector_seed}) ...", file=sys.stderr)
            pairs = simulate.paired_showers(config.adapt.translate_events, geometry=geometry,
                                            sim_effects=config.sim_preset,
                                            real_effects=simulate.real_effects(config.preset, detector_seed),
                                            seed=config.data_seed + 3 + 1000 * detector_seed)
            write_layout(folder, pairs.sim, pairs.real, geometry=geometry, name="pairs")
    return folder


def particle_names(n_classes: int) -> tuple[str, ...]:
    """The schema's particle names (0 e+, 1 gamma, 2 pi+) for up to three classes, else class_k."""
    particles = tuple(simulate.PARTICLES)
    return particles[:n_classes] if n_classes <= len(particles) else tuple(f"class_{k}" for k in range(n_classes))


def _class_fractions(labels: torch.Tensor, fractions: tuple[float, ...], generator: torch.Generator) -> torch.Tensor:
    """Sorted indices of the largest subsample of (N,) labels whose class fractions are ``fractions``."""
    counts = torch.bincount(labels, minlength=len(fractions))
    total = min(int(counts[c]) / f for c, f in enumerate(fractions) if f > 0)
    picks = []
    for c, f in enumerate(fractions):
        members = torch.nonzero(labels == c).squeeze(1)
        picks.append(members[torch.randperm(len(members), generator=generator)[: int(f * total)]])
    return torch.cat(picks).sort().values


class SimSide(NamedTuple):
    """The sim side of a run, shared by every real detector instance (fields as in :class:`RunData`)."""

    geometry: _geometry.Geometry
    class_names: tuple[str, ...]
    sim_train: Domain
    sim_val: Domain
    randomized: Domain | None
    sim_file: Path


def randomized_copy(domain: Domain, geometry, *, seed: int) -> Domain:
    """``domain``'s events with the prior's image-level residuals drawn per event (users' sim files)."""
    return Domain(simulate.randomize_images(domain.inputs, geometry, seed=seed), domain.labels, domain.energy,
                  "randomized")


def load_sim(config: RunConfig, *, progress: bool = True) -> SimSide:
    """Simulate or read the sim domain of ``config``, split it, and draw the randomised sim if a method needs it."""
    geometry = shower_geometry(config.geometry)
    if config.sim is None:
        sim_file = _simulated(Path(config.out) / "data" / "sim.root", config.events, geometry=geometry,
                              effects=config.sim_preset, seed=config.data_seed,
                              description=f"sim ({config.sim_preset})", progress=progress)
    else:
        sim_file = Path(config.sim)
    sim = read_domain(sim_file, geometry, "sim", labelled=True, min_events=10)
    class_names = particle_names(int(sim.labels.max()) + 1)
    sim_val, sim_train = sim.split(config.val_fraction, seed=config.data_seed)
    randomized = None
    if any("domain_randomization" in method for method in config.methods):
        if config.sim is None:  # the sim domain simulated anew with every residual drawn from its prior range
            showers = simulate_domain(len(sim_train), geometry=geometry, effects=simulate.PRIOR,
                                      seed=config.data_seed + 2, description="randomised sim", progress=progress)
            randomized = Domain(showers.images, showers.labels, showers.energy.float(), "randomized")
        else:  # the user's sim events, with the image-level residuals of the prior drawn per event
            randomized = randomized_copy(sim_train, geometry, seed=config.data_seed + 2)
    return SimSide(geometry, class_names, sim_train, sim_val, randomized, sim_file)


def load_data(config: RunConfig, *, detector_seed: int | None = None, sim: SimSide | None = None,
              progress: bool = True) -> RunData:
    """Simulate or read the domains of ``config`` for one real detector instance and split them.

    ``detector_seed``: the instance (default the first of ``config.detector_seeds``; ignored with real
    files); ``sim``: the result of :func:`load_sim`, shared by every instance of a run. The splits
    depend on ``data_seed`` only.
    """
    geometry, class_names, sim_train, sim_val, randomized, sim_file = sim or load_sim(config, progress=progress)
    if config.real is None:
        detector_seed = config.detector_seeds[0] if detector_seed is None else detector_seed
        real_file = _simulated(Path(config.out) / "data" / f"real-{config.preset}-d{detector_seed}.root",
                               config.real_events, geometry=geometry,
                               effects=simulate.real_effects(config.preset, detector_seed),
                               seed=config.data_seed + 1 + 1000 * detector_seed,
                               description=f"real ({config.preset}, detector {detector_seed})", progress=progress)
    else:
        real_file, detector_seed = Path(config.real), None
    # real labels are used for evaluation, by target_oracle and by few_shot's k shots only
    real = read_domain(real_file, geometry, "real", labelled=True, min_events=10)
    if int(real.labels.max()) >= len(class_names):
        raise ValueError(f"real file {str(real_file)!r} has label {int(real.labels.max())}, but the sim file's "
                         f"labels stop at {len(class_names) - 1}")
    generator = torch.Generator().manual_seed(config.data_seed + 1)
    kept = torch.arange(len(real))
    if config.real_class_fractions is not None:
        if len(config.real_class_fractions) != len(class_names):
            raise ValueError(f"real_class_fractions: expected {len(class_names)} fractions (classes "
                             f"{list(class_names)}), got {list(config.real_class_fractions)}")
        kept = _class_fractions(real.labels, config.real_class_fractions, generator)
    order = kept[torch.randperm(len(kept), generator=generator)]
    cut = round(config.test_fraction * len(order))
    test_index, adapt_index = order[:cut].sort().values, order[cut:].sort().values
    real_split = torch.full((len(real),), -1, dtype=torch.int8)
    real_split[adapt_index] = 0
    real_split[test_index] = 1
    paired = None
    if _needs_pairs(config):
        if config.real is None:
            paired = load_pairs(_simulated_pairs(config, geometry, detector_seed, progress), geometry)
        elif config.pairs is None:
            raise ValueError(f"methods {[m for m in config.methods if 'pix2pix' in m]} train on paired showers: give "
                             "--pairs DIR (trainA/ sim and trainB/ real files of the same events, e.g. test-beam "
                             "events simulated one by one)")
        else:
            paired = load_pairs(config.pairs, geometry)
    return RunData(
        geometry=geometry, class_names=class_names, sim_train=sim_train, sim_val=sim_val,
        real_adapt=real.subset(adapt_index), real_test=real.subset(test_index), real=real, randomized=randomized,
        real_split=real_split, sim_file=sim_file, real_file=real_file, detector_seed=detector_seed, paired=paired,
    )
