"""The steps of ``sim2real generate``: train a generator, sample showers from it into a file, evaluate a generated file.

    train(out=DIR, model="vae")  or  train(out=DIR, data=FILE)          -> DIR/model.pt, DIR/checkpoints/
    sample(DIR, n=N, output=FILE.h5 | FILE.root, energy=(1, 100), particle="e+")  -> the file
    evaluate(generated=FILE, reference=FILE, geometry=G, out=DIR)  -> DIR/results.json, DIR/report.md (+ figures)

Shower files (training data, generated and reference showers) are ROOT event trees (``hit_cell``,
``hit_energy`` MeV, optional ``label`` and ``energy`` GeV), CaloGAN HDF5 (``layer_0/1/2``, ``energy``
GeV) or CaloChallenge HDF5 (``showers``, ``incident_energies`` MeV), told by extension and datasets
(:func:`sim2real_fast.translate.read_domain`'s kinds; a folder of files of one kind is joined). Labels
are the simulator's codes (:data:`sim2real_fast.simulate.PARTICLES`: 0 e+, 1 gamma, 2 pi+). A bad
input raises a one-line ValueError or OSError (FileNotFoundError, ...) naming the file or argument.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import distributed, simulate
from .. import geometry as _geometry
from ..io._atomic import atomic_path
from ..io._lazy import require
from .translation import _check_count, _Input, _main_lock, _previous_run, _root_output, _save_main

__all__ = ["DEFAULT_EVENTS", "ENERGY_RANGE", "SAMPLE_BLOCK", "ShowerFile", "evaluate", "parse_energy", "read_showers",
           "sample", "summary_table", "train"]

#: Showers simulated for :func:`train` without ``data``: the most that fit the 15-minute training budget on 2 CPU
#: cores at the generators' default of at most 40 epochs. benchmarks/generation.py (2026-12-07, one thread on the
#: shared 2-core machine) measured 0.2 ms (vae) and 0.27 ms (flow-vae) per shower and epoch, so 40 epochs of
#: 90,000 training showers take at most 12 and 16 minutes on one busy core; simulating them about a minute.
DEFAULT_EVENTS = 100_000

#: (low, high) GeV of the simulated training showers, drawn uniformly in GeV (``simulate.showers``' default).
ENERGY_RANGE = (1.0, 100.0)

#: Showers per draw of :func:`sample`; block k is seeded by (seed, k), so the showers do not depend on step_size.
SAMPLE_BLOCK = 1_000

_OUTPUTS = {".root": "root", ".h5": "hdf5", ".hdf5": "hdf5"}
_LAYOUTS = ("calogan", "calochallenge")


class ShowerFile(NamedTuple):
    """The showers of a file: images (N, n_cells) float32 MeV, labels (N,) int64 (simulator codes) or None,
    energy (N,) float64 incident GeV or None, where every shower has them; path, the file or folder read."""

    images: torch.Tensor
    labels: torch.Tensor | None
    energy: torch.Tensor | None
    path: Path


def read_showers(path: str | Path, *, geometry: str | _geometry.Geometry, events: int | None = None) -> ShowerFile:
    """The showers of a ROOT, CaloGAN or CaloChallenge file (or a folder of files of one kind) of ``geometry``;
    ``events``: only the first ``events`` of them."""
    from ..translate.data import _files, _read_file

    _check_count("events", events, 1)
    geometry, path = _geometry.get(geometry), Path(path)
    files, kind = _files(path)
    if kind == "npy":
        raise ValueError(f"{path}: .npy files hold no incident energies; give ROOT, CaloGAN or CaloChallenge files")
    parts = [_read_file(file, kind, geometry, "events") for file in files]
    images, labels, energy = (None if any(p[k] is None for p in parts) else torch.cat([p[k] for p in parts])
                              for k in range(3))
    if len(images) == 0:
        raise ValueError(f"{path}: holds no showers")
    first = slice(0, events)
    return ShowerFile(images[first], None if labels is None else labels[first],
                      None if energy is None else energy[first].double(), path)


# ---- train -----------------------------------------------------------------------------------------
def _training_data(data: str | Path, geometry, particle: str | None,
                   events: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    showers = read_showers(data, geometry=geometry, events=events)
    names = ", ".join(simulate.PARTICLES)
    if showers.energy is None:
        raise ValueError(f"{data}: the showers have no incident energies (a generator learns p(shower | energy, "
                         f"particle)); give a file with an 'energy' branch or dataset")
    labels = showers.labels
    if labels is None:
        if particle is None:
            raise ValueError(f"{data}: the showers have no labels; pass --particle NAME ({names}) when every shower "
                             f"is that particle")
        labels = torch.full((len(showers.images),), simulate.PARTICLES[particle], dtype=torch.int64)
    elif particle is not None:
        raise ValueError(f"--particle {particle}: {data} has labels of its own; drop --particle")
    unknown = sorted(set(labels.tolist()) - set(simulate.PARTICLES.values()))
    if unknown:
        raise ValueError(f"{data}: labels {unknown} are not particles; expected "
                         f"{', '.join(f'{c} {p}' for p, c in simulate.PARTICLES.items())}")
    return showers.images, labels, showers.energy


def train(
    model: str = "vae",
    *,
    out: str | Path,
    data: str | Path | None = None,
    geometry: str | _geometry.Geometry = "calogan",
    particle: str | None = None,
    epochs: int | None = None,
    events: int | None = None,
    seed: int | None = None,
    energy_range: tuple[float, float] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Fit generator ``model`` and save it as ``out/model.pt`` (atomically); returns that path.

    Args:
        model: a name of :data:`sim2real_fast.generate.REGISTRY` ("vae", "flow-vae").
        out: the folder (created) for ``model.pt`` and ``checkpoints/`` (one per epoch).
        data: a shower file or folder with incident energies and labels (or ``particle``); None:
            ``events`` showers simulated with ``simulate.showers`` (effects "nominal", e+ gamma pi+ in
            equal shares, uniform in 1-100 GeV, seed ``seed``), trained on the range :data:`ENERGY_RANGE`.
            A file's generator covers ``energy_range``, or by default the showers' lowest to highest
            incident energy.
        geometry: the showers' geometry (and the generator's).
        particle: the particle of every shower of a ``data`` file without labels (a name of
            :data:`~sim2real_fast.simulate.PARTICLES`).
        epochs: the most epochs (early stopping may end sooner); None: the generator's default
            (with ``resume``: the checkpoints' run).
        events: the first ``events`` showers of ``data``, or the number simulated (default
            :data:`DEFAULT_EVENTS`; with ``resume``: the checkpoints' run).
        seed: initialisation, validation split, order, draws and the simulated showers (default 0; with
            ``resume``: the checkpoints' run).
        energy_range: (low, high) GeV the ``data`` showers were drawn from (e.g. (1, 100) for a file of
            1-100 GeV showers whose extremes are 1.02 and 99.97), the range ``sample`` accepts; it must
            hold every shower's energy.
        resume: continue the run whose checkpoints are in ``out/checkpoints`` (a finished run is loaded,
            not retrained); without it a folder holding checkpoints is an error.
        progress: tqdm bars over the simulation and the training steps (stderr).

    Under ``torchrun`` (:mod:`sim2real_fast.distributed`) every process reads (or simulates, in memory) the
    showers and trains on its shard of every batch; the first process alone takes the folder's lock and
    writes the checkpoints and ``model.pt`` (every process returns once it is written), and a resumed run
    reads the same checkpoint in every process.
    """
    from ..generate import REGISTRY, read_payload
    from .data import simulate_domain

    if model not in REGISTRY:
        raise ValueError(f"--model: expected one of {', '.join(sorted(REGISTRY))}, got {model!r}")
    if particle is not None and particle not in simulate.PARTICLES:
        raise ValueError(f"--particle: expected one of {', '.join(simulate.PARTICLES)}, got {particle!r}")
    if energy_range is not None and data is None:
        raise ValueError(f"--energy-range: the simulated training showers cover {ENERGY_RANGE[0]:g}-"
                         f"{ENERGY_RANGE[1]:g} GeV; --energy-range goes with --data")
    if particle is not None and data is None:
        raise ValueError("--particle: names the particle of a --data file without labels; the simulated training "
                         "showers are e+, gamma and pi+")
    for name, value, least in (("events", events, 1), ("epochs", epochs, 1), ("seed", seed, 0)):
        _check_count(name, value, least)
    geometry, folder = _geometry.get(geometry), Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder}: exists and is not a folder")
    with _main_lock(folder, f"sim2real generate train --model {model}"):
        previous = _previous_run(folder / "checkpoints", model, resume, read_payload=read_payload, kind="generator",
                                 option="--model")
        if previous is not None:
            epochs = previous["epochs"] if epochs is None else epochs
            seed = previous["seed"] if seed is None else seed
            events = previous["size"] if events is None and data is None else events
        seed = 0 if seed is None else seed
        progress = progress and distributed.is_main()
        if data is None:
            showers = simulate_domain(DEFAULT_EVENTS if events is None else events, geometry=geometry,
                                      effects="nominal", seed=seed, description="training showers", progress=progress)
            images, labels, energy, energy_range = showers.images, showers.labels, showers.energy, ENERGY_RANGE
        else:
            images, labels, energy = _training_data(data, geometry, particle, events)
        if len(images) < 2:
            source = "--events 1" if data is None else f"{data}: 1 shower"
            raise ValueError(f"{source}: a generator needs at least 2 showers (training and validation)")
        generator = REGISTRY[model](geometry)
        generator.fit(images, labels, energy, energy_range=energy_range, epochs=epochs,
                      checkpoint_dir=folder / "checkpoints", resume=resume, progress=progress, seed=seed)
        return _save_main(generator, folder / "model.pt")


# ---- sample ----------------------------------------------------------------------------------------
def parse_energy(text: str, option: str = "--energy") -> tuple[float, float]:
    """"lo-hi" (GeV, e.g. "1-100") or one value ("50") -> (low, high); a ValueError naming ``option`` otherwise."""
    low, dash, high = text.strip().partition("-")
    try:
        values = (float(low), float(high) if dash else float(low))
    except ValueError:
        values = (float("nan"),) * 2
    if not (all(np.isfinite(values)) and 0 < values[0] <= values[1]):
        raise ValueError(f"{option}: expected GeV as LOW-HIGH (e.g. 1-100) or one value, with 0 < LOW <= HIGH; "
                         f"got {text!r}")
    return values


def _model_file(model: str | Path) -> Path:
    path = Path(model)
    return path / "model.pt" if path.is_dir() else path


def _blocks(generator, n: int, energy, particle, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The ``n`` showers in blocks of :data:`SAMPLE_BLOCK`; block k drawn with a seed derived from (seed, k)."""
    for k, start in enumerate(range(0, n, SAMPLE_BLOCK)):
        block_seed = int(np.random.SeedSequence([seed, k]).generate_state(1, np.uint64)[0]) >> 1
        yield generator.sample(min(SAMPLE_BLOCK, n - start), energy=energy, particle=particle, seed=block_seed,
                               batch_size=SAMPLE_BLOCK)


def _steps(blocks: Iterator[tuple[torch.Tensor, ...]], step: int) -> Iterator[tuple[torch.Tensor, ...]]:
    """The blocks' showers regrouped into steps of ``step`` (the last one shorter)."""
    held: list[tuple[torch.Tensor, ...]] = []
    count = 0
    for block in blocks:
        held.append(block)
        count += len(block[0])
        while count >= step:
            joined = [torch.cat(parts) for parts in zip(*held)]
            yield tuple(x[:step] for x in joined)
            held, count = [tuple(x[step:] for x in joined)], count - step
    if count:
        yield tuple(torch.cat(parts) for parts in zip(*held))


@contextlib.contextmanager
def _hdf5_output(path: Path, n: int, geometry, layout: str) -> Iterator:
    """``n`` showers in the CaloGAN (``layer_0/1/2``, ``energy`` GeV, ``overflow`` 0) or CaloChallenge
    (``showers``, ``incident_energies`` MeV) layout plus ``label``, written slice by slice."""
    h5py = require("h5py")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        if layout == "calogan":
            layers = [out.create_dataset(layer.name, (n, layer.rows, layer.cols), np.float32)
                      for layer in geometry.layers]
            incident = out.create_dataset("energy", (n, 1), np.float64)
            out.create_dataset("overflow", (n, 3), np.float32, fillvalue=0.0)
        else:
            showers = out.create_dataset("showers", (n, geometry.n_cells), np.float32)
            incident = out.create_dataset("incident_energies", (n, 1), np.float64)
        label = out.create_dataset("label", (n,), np.int64)
        done = 0

        def write(images, labels, energy):
            nonlocal done
            rows = slice(done, done + len(images))
            if layout == "calogan":
                for dataset, part in zip(layers, geometry.split_layers(images)):
                    dataset[rows] = part.numpy()
                incident[rows] = energy.numpy()[:, None]
            else:
                showers[rows] = images.numpy()
                incident[rows] = 1000.0 * energy.numpy()[:, None]  # CaloChallenge stores MeV
            label[rows] = labels.numpy()
            done += len(images)

        yield write


def sample(
    model: str | Path,
    *,
    n: int,
    output: str | Path,
    energy: tuple[float, float] | None = None,
    particle: str | None = None,
    layout: str | None = None,
    geometry: str | _geometry.Geometry | None = None,
    step_size: int = 10_000,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Draw ``n`` showers from the generator in ``model`` (a file, or a folder holding ``model.pt``) into ``output``.

    Args:
        energy: (low, high) GeV, drawn uniformly in GeV as the simulator draws them (``simulate.showers``'
            default), low = high for one energy; None: the trained range. It must lie in the trained range.
        particle: a name of the generator's trained particles; None: each shower one of them uniformly.
        output: ``.root`` (an event tree of :func:`sim2real_fast.io.read_showers`' schema: ``hit_cell``,
            ``hit_energy`` MeV, ``label``, ``energy`` GeV) or ``.h5``/``.hdf5`` in ``layout``: "calogan"
            (default for the calogan geometry) or "calochallenge" (default otherwise). Written to a
            temporary file renamed at the end.
        geometry: when given, must be the generator's.
        step_size: showers held in memory and written at a time (plus up to :data:`SAMPLE_BLOCK` being
            drawn): the file is filled step by step and a large ``n`` never sits in memory whole.
        seed: the showers are a function of (generator, n, energy, particle, seed) only, not of ``step_size``.

    Labels are written as the simulator's codes (:data:`~sim2real_fast.simulate.PARTICLES`; a generator
    whose particles are not all among them writes its own label indices). Returns ``n``.
    """
    from tqdm import tqdm

    from ..generate import load

    _check_count("n", n, 1)
    _check_count("step_size", step_size, 1)
    _check_count("seed", seed, 0)
    destination = Path(output)
    kind = _OUTPUTS.get(destination.suffix.lower())
    if kind is None:
        raise ValueError(f"--output {destination}: unknown file kind {destination.suffix or '(no extension)'!r}; "
                         f"expected {', '.join(_OUTPUTS)}")
    if layout is not None and (kind != "hdf5" or layout not in _LAYOUTS):
        raise ValueError(f"--format {layout}: expected one of {', '.join(_LAYOUTS)}, for .h5 outputs only")
    generator = load(_model_file(model), geometry=geometry)
    geometry = generator.geometry
    layout = layout or ("calogan" if geometry.name == "calogan" else "calochallenge")
    if layout == "calogan" and geometry.name != "calogan":
        raise ValueError(f"--format calogan: the CaloGAN layout holds the calogan geometry; this generator's is "
                         f"{geometry.name!r} (use --format calochallenge)")
    generator.sample(0, energy=energy, particle=particle)  # checks energy and particle before anything is written
    known = all(p in simulate.PARTICLES for p in generator.particles)
    codes = torch.tensor([simulate.PARTICLES[p] if known else i for i, p in enumerate(generator.particles)])
    writer = (_root_output(destination, _Input(n, True, True, iter(()))) if kind == "root"
              else _hdf5_output(destination, n, geometry, layout))
    with writer as write, tqdm(total=n, desc=f"{generator.name} sample", unit=" showers", unit_scale=True,
                               file=sys.stderr, disable=None if progress else True) as bar:
        for images, labels, energies in _steps(_blocks(generator, n, energy, particle, seed), step_size):
            write(images, codes[labels], energies)
            bar.update(len(images))
    return n


# ---- evaluate --------------------------------------------------------------------------------------
def evaluate(
    *,
    generated: str | Path,
    reference: str | Path,
    geometry: str | _geometry.Geometry,
    out: str | Path,
    floor: str | Path | None = None,
    events: int | None = None,
    seed: int = 0,
) -> dict:
    """Compare the generated showers of one file with the reference showers of another.

    Reads both (and ``floor``: a second reference sample, e.g. simulated with another seed, the distance
    a perfect generator would reach) as :func:`read_showers`, the first ``events`` of each, calls
    :func:`sim2real_fast.evaluate.generation.evaluate_generation` and writes its report
    (:func:`~sim2real_fast.evaluate.generation.write_generation_report`) into ``out``; returns the results.
    """
    from ..evaluate.generation import evaluate_generation, write_generation_report

    _check_count("seed", seed, 0)
    geometry, folder = _geometry.get(geometry), Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder}: exists and is not a folder")
    showers = {name: read_showers(path, geometry=geometry, events=events)
               for name, path in (("generated", generated), ("reference", reference), ("floor", floor))
               if path is not None}
    for name, value in showers.items():
        if value.energy is None:
            raise ValueError(f"{value.path}: the {name} showers have no incident energies; the evaluation compares "
                             f"showers at their incident energies (an 'energy' branch or dataset)")
    showers.setdefault("floor", None)
    results = evaluate_generation(showers["generated"], showers["reference"], geometry=geometry,
                                  floor=showers["floor"], seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_generation_report(results, folder, **showers, geometry=geometry)
    return results


def summary_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of :func:`evaluate`'s headline numbers: generated vs reference, and the floor next to it."""
    from ..evaluate.generation import COMPARISONS

    def number(value, scale: float = 1.0, digits: int = 3) -> str:
        return "–" if value is None or not np.isfinite(value) else f"{scale * value:.{digits}f}"

    def with_error(item: dict, scale: float, digits: int) -> str:
        error = number(item["error"], scale, digits)
        return number(item["value"], scale, digits) + ("" if error == "–" else f" ± {error}")

    def mean_separation(comparison: str) -> str:
        return number(float(np.mean([f["separation_power"] for f in results["features"][comparison].values()])))

    rows = [["mean separation power", *(mean_separation(c) for c in COMPARISONS)],
            *([f"classifier AUC, {level}", *(number(results["classifier"][level][c]["auc"]) for c in COMPARISONS)]
              for level in ("cells", "features")),
            ["FPD x 10^3", *(with_error(results["fpd"][c], 1e3, 2) for c in COMPARISONS)]]
    return ["metric", "generated vs reference", "floor (reference vs reference)"], rows
