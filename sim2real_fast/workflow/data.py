"""The domains of a run: simulated (and written as ROOT files) or read from the user's files, then split."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import geometry as _geometry
from .. import io, simulate
from ..adapt import Domain
from .config import RunConfig

__all__ = ["RunData", "load_data", "particle_names", "read_domain", "simulate_domain"]

_CHUNK = 10_000  # showers simulated per progress step


@dataclass(frozen=True)
class RunData:
    """The splits every method of a run sees.

    Attributes:
        sim_train, sim_val: labelled simulation (training; validation = "source" scores).
        real_adapt: the real events adaptation may use, labelled; methods get ``real_adapt.unlabelled()``
            except ``target_oracle`` (all labels) and ``few_shot`` (k per class).
        real_test: labelled real events every "real" score comes from.
        real: every event of ``real_file`` in entry order (for the per-event predictions).
        randomized: labelled domain-randomised simulation, or None when no method needs it.
        real_split: (N_real,) int8 per event of ``real_file`` in entry order: 0 adaptation, 1 test.
        sim_file, real_file: the event files (written under ``out/data`` when simulated).
        class_names: label -> name.
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


def _write_simulated(config: RunConfig, geometry, progress: bool) -> tuple[Path, Path]:
    """out/data/sim.root and out/data/real.root (kept as they are when they exist: same seed, same files)."""
    folder = Path(config.out) / "data"
    paths = folder / "sim.root", folder / "real.root"
    plan = ((config.events, None, config.data_seed, "sim"),
            (config.real_events, config.preset, config.data_seed + 1, f"real ({config.preset})"))
    folder.mkdir(parents=True, exist_ok=True)
    for path, (n, effects, seed, description) in zip(paths, plan):
        if not path.exists():
            showers = simulate_domain(n, geometry=geometry, effects=effects, seed=seed, description=description,
                                      progress=progress)
            io.write_showers_root(path, showers.images, showers.labels, showers.energy, geometry=geometry)
    return paths


def read_domain(path, geometry, what: str, *, labelled: bool, min_events: int = 1) -> Domain:
    """The events of a ROOT event tree as a Domain (labels None when the file has none).

    Clear errors for a missing file, cells outside ``geometry`` (the wrong --geometry), fewer than
    ``min_events`` events and, with ``labelled``, events without labels (no branch, or label -1).
    """
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} file not found: {str(path)!r}")
    try:
        showers = io.read_showers(path, geometry=geometry)
    except IndexError as error:
        raise ValueError(f"{what} file {str(path)!r} does not match geometry {geometry.name!r} ({geometry.n_cells} "
                         f"cells): {error}. Pass the file's geometry (--geometry)") from None
    if len(showers) < min_events:
        raise ValueError(f"{what} file {str(path)!r}: expected at least {min_events} events, got {len(showers)}")
    has_labels = not bool((showers.labels < 0).any())
    if labelled and not has_labels:
        raise ValueError(f"{what} file {str(path)!r} has unlabelled events (no 'label' branch, or label -1), "
                         f"but the {what} domain needs labels here")
    return Domain(showers.images, showers.labels if has_labels else None, showers.energy.float(), what)


def particle_names(n_classes: int) -> tuple[str, ...]:
    """The schema's particle names (0 e+, 1 gamma, 2 pi+) for up to three classes, else class_k."""
    particles = tuple(simulate.PARTICLES)
    return particles[:n_classes] if n_classes <= len(particles) else tuple(f"class_{k}" for k in range(n_classes))


def load_data(config: RunConfig, *, progress: bool = True) -> RunData:
    """Simulate or read the domains of ``config`` and split them (the splits depend on ``data_seed`` only)."""
    geometry = _geometry.get(config.geometry)
    if config.sim is None:
        sim_file, real_file = _write_simulated(config, geometry, progress)
    else:
        sim_file, real_file = Path(config.sim), Path(config.real)
    # real labels are used for evaluation, by target_oracle and by few_shot's k shots only
    sim = read_domain(sim_file, geometry, "sim", labelled=True, min_events=10)
    real = read_domain(real_file, geometry, "real", labelled=True, min_events=10)
    n_classes = int(sim.labels.max()) + 1
    if int(real.labels.max()) >= n_classes:
        raise ValueError(f"real file {str(real_file)!r} has label {int(real.labels.max())}, but the sim file's "
                         f"labels stop at {n_classes - 1}")
    sim_val, sim_train = sim.split(config.val_fraction, seed=config.data_seed)
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(config.data_seed + 1))
    cut = round(config.test_fraction * len(real))
    test_index, adapt_index = order[:cut].sort().values, order[cut:].sort().values
    real_split = torch.zeros(len(real), dtype=torch.int8)
    real_split[test_index] = 1
    randomized = None
    if any("domain_randomization" in method for method in config.methods):
        from ..evaluate import randomized_effects

        showers = simulate_domain(len(sim_train), geometry=geometry, effects=randomized_effects(),
                                  seed=config.data_seed + 2, description="randomised sim", progress=progress)
        randomized = Domain(showers.images, showers.labels, showers.energy.float(), "randomized")
    return RunData(
        geometry=geometry, class_names=particle_names(n_classes), sim_train=sim_train, sim_val=sim_val,
        real_adapt=real.subset(adapt_index), real_test=real.subset(test_index), real=real, randomized=randomized,
        real_split=real_split, sim_file=sim_file, real_file=real_file,
    )
