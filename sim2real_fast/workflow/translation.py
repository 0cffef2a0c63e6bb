"""The steps of ``sim2real translate``: train a translator, apply it to a shower file, evaluate it against real showers.

    train(method, out=DIR, sim=FILE, real=FILE)  or  train(method, out=DIR, data=ROOT)   -> DIR/model.pt
    apply(DIR/model.pt, input_file=FILE, output_file=FILE)                                -> the translated file
    evaluate(DIR/model.pt, sim=FILE, real=FILE, out=DIR)          -> DIR/results.json, DIR/report.md, DIR/*.png

Shower inputs are ROOT event trees, CaloGAN / CaloChallenge HDF5 or npy files, or folders of files of one
kind (:func:`sim2real_fast.translate.read_domain`); ``data`` is the CycleGAN layout ``ROOT/trainA``,
``ROOT/trainB`` (:func:`sim2real_fast.translate.read_layout`). A bad input raises a one-line ValueError or
OSError (FileNotFoundError, ...) naming the file or argument.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .. import distributed, io
from .. import geometry as _geometry
from .._lock import output_lock
from ..adapt import Domain
from ..adapt import checkpoint as _checkpoint
from ..io._atomic import atomic_path
from ..io._lazy import require

__all__ = ["RESULT_ENTRIES", "apply", "evaluate", "summary_rows", "train"]

#: The comparisons of :func:`evaluate`'s results, each against the real showers.
RESULT_ENTRIES = {
    "starting_point": "sim vs real",
    "translated": "translated vs real",
    "floor": "real vs real (floor)",
}

_OUTPUTS = {".root": "root", ".h5": "hdf5", ".hdf5": "hdf5", ".npy": "npy"}
_BASKET = 10_000  # ROOT entries per basket written
_COLOURS = {"sim": "tab:blue", "translated": "tab:orange", "real": "black"}
_DPI = 110
_PARTICLE_FEATURES = ("energy_", "width_x_", "sparsity_", "max_fraction")  # the per-particle figures' panels


def _check_count(name: str, value, least: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
        raise ValueError(f"{name}: expected an integer >= {least}, got {value!r}")


def _first(domain: Domain, events: int | None) -> Domain:
    return domain if events is None else domain.subset(slice(0, events))


# ---- train -----------------------------------------------------------------------------------------
def _training_domains(cls, *, sim, real, data, geometry) -> tuple[Domain, Domain, Path]:
    """(sim, real, where the sim showers come from) from --sim/--real or the --data layout; pairs checked."""
    from ..translate import read_domain, read_layout
    from ..translate.data import _check_paired

    if data is not None:
        if sim is not None or real is not None:
            raise ValueError("give --data ROOT (trainA/, trainB/) or --sim FILE --real FILE, not both")
        a, b = read_layout(data, geometry=geometry, paired=cls.paired)
        return a, b, Path(data) / "trainA"
    if sim is None or real is None:
        raise ValueError("give --sim FILE and --real FILE, or --data ROOT holding trainA/ and trainB/")
    a, b = read_domain(sim, geometry=geometry, name="sim"), read_domain(real, geometry=geometry, name="real")
    if cls.paired:
        _check_paired(a, b, Path(sim), Path(real))
    return a, b, Path(sim)


def _main_lock(folder: Path, command: str) -> contextlib.AbstractContextManager:
    """:func:`~sim2real_fast._lock.output_lock` of ``folder`` in the first process (or the only one); the others
    of a data-parallel run write nothing there and take no lock."""
    return output_lock(folder, command) if distributed.is_main() else contextlib.nullcontext()


def _save_main(model, path: Path) -> Path:
    """``model.save(path)`` in the first process (or the only one); every process returns ``path`` once it is
    written."""
    if distributed.is_main():
        model.save(path)
    distributed.barrier()
    return path


def _previous_run(folder: Path, method: str, resume: bool, *, read_payload=None, kind: str = "translator",
                  option: str = "--method") -> dict | None:
    """The run summary of the last checkpoint in ``folder`` (None if there is none), checked against ``method``.

    ``read_payload``, ``kind`` and ``option``: the checkpoint's reader (default the translator's), what it
    holds and the command's option naming it (sim2real generate passes the generator's and "--model").
    """
    if read_payload is None:
        from ..translate import read_payload

    files = _checkpoint.checkpoint_files(folder) if folder.is_dir() else []
    if not files:
        return None
    if not resume:
        raise ValueError(f"{folder}: holds the checkpoints of an earlier run (last {files[-1].name}); pass --resume "
                         f"to continue it, or use another --out")
    stored = read_payload(files[-1])["method"]
    if stored != method:
        raise ValueError(f"{files[-1]}: a checkpoint of a {stored!r} {kind}, not {method!r}; resume with "
                         f"{option} {stored}, or use another --out")
    return _checkpoint.read_checkpoint(files[-1])["run"]


def train(
    method: str,
    *,
    out: str | Path,
    sim: str | Path | None = None,
    real: str | Path | None = None,
    data: str | Path | None = None,
    geometry: str | _geometry.Geometry = "calogan",
    epochs: int | None = None,
    events: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Fit translator ``method`` on sim and real showers and save it as ``out/model.pt``; returns that path.

    Args:
        method: a name of :data:`sim2real_fast.translate.REGISTRY` ("cyclegan", "simgan", "pix2pix", ...).
        out: the folder (created) for ``model.pt`` and ``checkpoints/`` (one per epoch).
        sim, real: shower files or folders; or ``data``: the CycleGAN layout (``trainA`` sim, ``trainB`` real).
            Paired translators (pix2pix) need the same events in the same order on both sides.
        geometry: the files' geometry (and the translator's).
        epochs, batch_size: the translator's defaults when None (with ``resume``: the checkpoints' run).
        events: train on the first ``events`` showers of each side.
        seed: initialisation, order and draws (default 0; with ``resume``: the checkpoints' run).
        resume: continue the run whose checkpoints are in ``out/checkpoints`` (a finished run is loaded,
            not retrained); without it a folder holding checkpoints is an error.
        progress: a tqdm bar over the steps (stderr).

    Under ``torchrun`` (:mod:`sim2real_fast.distributed`) every process reads the showers and trains on its
    shard of every batch; the first process alone takes the folder's lock and writes the checkpoints and
    ``model.pt`` (every process returns once it is written), and a resumed run reads the same checkpoint
    in every process.
    """
    from ..translate import REGISTRY, zero_suppression

    if method not in REGISTRY:
        raise ValueError(f"method: expected one of {', '.join(sorted(REGISTRY))}, got {method!r}")
    for name, value, least in (("events", events, 1), ("epochs", epochs, 1), ("batch_size", batch_size, 1),
                               ("seed", seed, 0)):
        _check_count(name, value, least)
    cls, geometry = REGISTRY[method], _geometry.get(geometry)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder}: exists and is not a folder")
    with _main_lock(folder, f"sim2real translate train --method {method}"):
        previous = _previous_run(folder / "checkpoints", method, resume)
        if previous is not None:
            epochs = previous["epochs"] if epochs is None else epochs
            batch_size = previous["batch_size"] if batch_size is None else batch_size
            seed = previous["seed"] if seed is None else seed
        sim_domain, real_domain, sim_where = _training_domains(cls, sim=sim, real=real, data=data, geometry=geometry)
        sim_domain, real_domain = _first(sim_domain, events), _first(real_domain, events)
        options = {}
        if getattr(cls, "needs_sim_labels", False):
            if sim_domain.labels is None:
                raise ValueError(f"{sim_where}: the {method} translator needs labelled sim showers (a 'label' branch or "
                                 f"dataset in every file); these have none")
            options["sim_labels"] = sim_domain.labels
        translator = cls(geometry, threshold_mev=zero_suppression(real_domain.inputs, geometry))
        translator.fit(sim_domain.inputs, real_domain.inputs, epochs=epochs, batch_size=batch_size,
                       checkpoint_dir=folder / "checkpoints", resume=resume, seed=0 if seed is None else seed,
                       progress=progress and distributed.is_main(), **options)
        return _save_main(translator, folder / "model.pt")


# ---- apply: shower files in steps ------------------------------------------------------------------
class _Input(NamedTuple):
    """A shower input read in steps: ``chunks`` yields (images (n, n_cells) float32 MeV, labels (n,) int64 or
    None, energy (n,) float64 GeV or None); ``labels`` / ``energy`` say whether every file has them."""

    events: int
    labels: bool
    energy: bool
    chunks: Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]


def _checked(images: np.ndarray, file: str, start: int) -> torch.Tensor:
    """(n, n_cells) array -> float32 tensor; NaN, infinite or negative energies raise BadEnergyError naming the event."""
    tensor = torch.from_numpy(np.array(images, dtype=np.float32))  # a copy: memory-mapped arrays are read-only
    bad = ~torch.isfinite(tensor) | (tensor < 0)
    if bool(bad.any()):
        event, cell = (int(i) for i in bad.nonzero()[0])
        raise io.BadEnergyError(f"{file}: event {start + event} cell {cell} is {float(tensor[event, cell])} MeV; "
                                f"expected finite energies >= 0")
    return tensor


def _root_input(files: list[Path], geometry, step: int, tree: str) -> _Input:
    from ..io.root import _open, _tree

    entries, branches = 0, []
    for file in files:
        with _open(str(file)) as handle:
            found = _tree(handle, str(file), tree)
            entries += found.num_entries
            branches.append(set(found.keys()))
    labels, energy = (all(name in b for b in branches) for name in ("label", "energy"))

    def chunks():
        for file in files:
            batches = io.iterate_showers(file, geometry=geometry, tree=tree, step_size=step,
                                         label_branch="label" if labels else None,
                                         incident_energy_branch="energy" if energy else None)
            try:
                for batch in batches:
                    yield batch.images, batch.labels if labels else None, batch.energy if energy else None
            except IndexError as error:  # a cell outside the geometry: a file of another one
                raise ValueError(f"{error}; the file is not of the model's geometry {geometry.name!r}") from None

    return _Input(entries, labels, energy, chunks())


def _hdf5_layout(handle, file: str, geometry):
    """(shower datasets, incident-energy dataset, its scale to GeV) of a CaloGAN or CaloChallenge file."""
    from ..io.hdf5 import _dataset

    if "showers" in handle:
        showers = _dataset(handle, file, "showers", (None, geometry.n_cells),
                           f"voxel energies (MeV) of geometry {geometry.name!r}")
        n = showers.shape[0]
        return [showers], _dataset(handle, file, "incident_energies", (n, 1), "incident energies (MeV)"), 1000.0
    if "layer_0" in handle:
        if geometry.name != "calogan":
            raise ValueError(f"{file}: a CaloGAN file; the model's geometry is {geometry.name!r}")
        first = _dataset(handle, file, "layer_0", (None, 3, 96), "layer_0 energies (MeV)")
        n = first.shape[0]
        layers = [first] + [
            _dataset(handle, file, layer.name, (n, layer.rows, layer.cols), f"{layer.name} energies (MeV)")
            for layer in geometry.layers[1:]
        ]
        shape = (n,) if "energy" in handle and handle["energy"].shape == (n,) else (n, 1)
        return layers, _dataset(handle, file, "energy", shape, "incident energies (GeV)"), 1.0
    raise ValueError(f"{file}: neither a CaloGAN ('layer_0', 'layer_1', 'layer_2') nor a CaloChallenge ('showers') "
                     f"file; datasets: {sorted(handle.keys())}")


def _hdf5_input(files: list[Path], geometry, step: int) -> _Input:
    from ..io.hdf5 import _open

    entries, labels = 0, True
    for path in files:
        file, handle = _open(path)
        with handle:
            entries += _hdf5_layout(handle, file, geometry)[1].shape[0]
            labels &= "label" in handle

    def chunks():
        for path in files:
            file, handle = _open(path)
            with handle:
                showers, incident, scale = _hdf5_layout(handle, file, geometry)
                for start in range(0, incident.shape[0], step):
                    parts = [d[start : start + step].reshape(-1, math.prod(d.shape[1:])) for d in showers]
                    energy = incident[start : start + step].reshape(-1).astype(np.float64) / scale
                    if not np.isfinite(energy).all():
                        event = start + int(np.argmin(np.isfinite(energy)))
                        raise ValueError(f"{file}: event {event} has incident energy {energy[event - start]}")
                    label = torch.from_numpy(handle["label"][start : start + step].astype(np.int64)) if labels else None
                    yield _checked(np.concatenate(parts, axis=1), file, start), label, torch.from_numpy(energy)

    return _Input(entries, labels, True, chunks())


def _npy_input(files: list[Path], geometry, step: int) -> _Input:
    arrays = []
    for file in files:
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as error:
            raise io.CorruptFileError(f"{file}: cannot be read as a .npy array ({error})") from None
        if array.ndim < 2 or math.prod(array.shape[1:]) != geometry.n_cells or array.dtype.kind not in "biuf":
            raise ValueError(f"{file}: expected (N, {geometry.n_cells}) cell energies of geometry {geometry.name!r}, "
                             f"got {array.dtype} {array.shape}")
        arrays.append((file, array))

    def chunks():
        for file, array in arrays:
            for start in range(0, len(array), step):
                part = array[start : start + step].reshape(-1, geometry.n_cells)
                yield _checked(part, str(file), start), None, None

    return _Input(sum(len(a) for _, a in arrays), False, False, chunks())


def _open_input(path: Path, geometry, step: int, tree: str = "events") -> _Input:
    from ..translate.data import _files

    files, kind = _files(path)
    if kind == "root":
        return _root_input(files, geometry, step, tree)
    return _hdf5_input(files, geometry, step) if kind == "hdf5" else _npy_input(files, geometry, step)


Writer = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor | None], None]


@contextlib.contextmanager
def _root_output(path: Path, source: _Input, tree: str = "events") -> Iterator[Writer]:
    """Event tree of io.write_showers_root's schema (hit_cell, hit_energy under counter nhit; label; energy)."""
    uproot, ak = require("uproot"), require("awkward")
    from ..io import _convert

    def columns(images, labels, energy) -> dict:
        offsets, cell, values = _convert.dense_to_hits(images.numpy())
        counts = np.diff(offsets)
        data = {"hit": ak.zip({"cell": ak.unflatten(cell, counts), "energy": ak.unflatten(values, counts)})}
        if source.labels:
            data["label"] = labels.numpy().astype(np.int64)
        if source.energy:
            data["energy"] = energy.numpy().astype(np.float64)
        return data

    with atomic_path(path) as tmp, uproot.recreate(tmp) as out:
        empty = columns(torch.zeros(0, 1), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64))
        types = {k: v.dtype if isinstance(v, np.ndarray) else ak.type(v).content for k, v in empty.items()}
        written = out.mktree(tree, types)

        def write(images, labels, energy):
            for start in range(0, len(images), _BASKET):
                part = slice(start, start + _BASKET)
                written.extend(columns(images[part], *(None if x is None else x[part] for x in (labels, energy))))

        yield write


@contextlib.contextmanager
def _hdf5_output(path: Path, source: _Input, geometry) -> Iterator[Writer]:
    """CaloGAN HDF5 for the calogan geometry, else CaloChallenge (layouts of io.write_calogan, write_calochallenge)."""
    h5py = require("h5py")
    if not source.energy:
        raise ValueError(f"--output {path}: HDF5 shower files hold incident energies and the input has none; "
                         f"write .root or .npy")
    n, calogan = source.events, geometry.name == "calogan"
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as out:
        if calogan:
            layers = [out.create_dataset(layer.name, (n, layer.rows, layer.cols), np.float32)
                      for layer in geometry.layers]
            incident = out.create_dataset("energy", (n, 1), np.float64)
            out.create_dataset("overflow", data=np.zeros((n, 3), np.float32))
        else:
            showers = out.create_dataset("showers", (n, geometry.n_cells), np.float32)
            incident = out.create_dataset("incident_energies", (n, 1), np.float64)
        label = out.create_dataset("label", (n,), np.int64) if source.labels else None
        done = 0

        def write(images, labels, energy):
            nonlocal done
            rows = slice(done, done + len(images))
            if calogan:
                for dataset, part in zip(layers, geometry.split_layers(images)):
                    dataset[rows] = part.numpy()
                incident[rows] = energy.numpy()[:, None]
            else:
                showers[rows] = images.numpy()
                incident[rows] = 1000.0 * energy.numpy()[:, None]  # CaloChallenge stores MeV
            if label is not None:
                label[rows] = labels.numpy()
            done += len(images)

        yield write


@contextlib.contextmanager
def _npy_output(path: Path, source: _Input, geometry) -> Iterator[Writer]:
    """(N, n_cells) float32 MeV (no labels, no incident energies)."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(source.events, geometry.n_cells))
        done = 0

        def write(images, labels, energy):
            nonlocal done
            array[done : done + len(images)] = images.numpy()
            done += len(images)

        yield write
        array.flush()
        del array


def _load(model: str | Path, geometry):
    from ..translate import load

    return load(model, geometry=geometry)


def apply(
    model: str | Path,
    *,
    input_file: str | Path,
    output_file: str | Path,
    geometry: str | _geometry.Geometry | None = None,
    step_size: int = 50_000,
    batch_size: int = 512,
    progress: bool = True,
) -> int:
    """Translate every shower of ``input_file`` with the translator in ``model`` and write them to ``output_file``.

    The input (a shower file or a folder of one kind, in the model's geometry) is read, translated and
    written ``step_size`` events at a time, so it never sits in memory whole. The output kind follows its
    extension: ``.root`` an event tree of :func:`sim2real_fast.io.read_showers`' schema (``hit_cell``,
    ``hit_energy`` MeV; ``label`` and ``energy`` GeV carried over when every input file has them),
    ``.h5``/``.hdf5`` CaloGAN (calogan geometry) or CaloChallenge HDF5 (needs incident energies), ``.npy``
    (N, n_cells) float32 MeV. It is written to a temporary file renamed at the end. ``geometry``, when
    given, must be the model's. Returns the number of showers written.
    """
    from tqdm import tqdm

    _check_count("step_size", step_size, 1)
    _check_count("batch_size", batch_size, 1)
    source, destination = Path(input_file), Path(output_file)
    kind = _OUTPUTS.get(destination.suffix.lower())
    if kind is None:
        raise ValueError(f"--output {destination}: unknown file kind {destination.suffix or '(no extension)'!r}; "
                         f"expected {', '.join(_OUTPUTS)}")
    if destination.resolve() == source.resolve():
        raise ValueError(f"--output {destination}: is the input file; write the translated showers to another file")
    translator = _load(model, geometry)
    geometry = translator.geometry
    reader = _open_input(source, geometry, step_size)
    writer = {"root": lambda: _root_output(destination, reader),
              "hdf5": lambda: _hdf5_output(destination, reader, geometry),
              "npy": lambda: _npy_output(destination, reader, geometry)}[kind]
    with writer() as write, tqdm(total=reader.events, desc=f"{translator.name} apply", unit=" showers",
                                 unit_scale=True, file=sys.stderr, disable=None if progress else True) as bar:
        for images, labels, energy in reader.chunks:
            write(translator.translate(images, batch_size=batch_size), labels, energy)
            bar.update(len(images))
    return reader.events


# ---- evaluate ----------------------------------------------------------------------------------------
def _sim_classifier(domain: Domain, geometry, *, n_classes: int, epochs: int, seed: int):
    """A CaloCNN trained with Adam (lr 2e-3) and cross-entropy on ``domain`` (initialisation and order from seed)."""
    from ..models import CaloCNN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CaloCNN(geometry, n_classes=n_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(domain), generator=order).split(256):
            loss = torch.nn.functional.cross_entropy(model(domain.inputs[batch]), domain.labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def _energy_bins(energy: torch.Tensor) -> list[float]:
    """Up to 5 bins with equal numbers of showers (quantile edges) over the incident energies."""
    edges = np.unique(np.quantile(energy.double().numpy(), np.linspace(0.0, 1.0, 6)))
    return edges.tolist() if len(edges) > 1 else [float(edges[0]) - 0.5, float(edges[0]) + 0.5]


def _plain(value):
    """JSON-ready: NaN and infinities -> None, NumPy scalars -> Python numbers, containers recursively."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _figure(width: float, height: float, *, layout: str | None = "constrained"):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI)


def _plot_average_showers(path: Path, images: Mapping[str, torch.Tensor], geometry) -> None:
    """Mean energy per cell, one row per domain, one column per layer (log colour scale shared by a column)."""
    from matplotlib.colors import LogNorm

    means = {name: [layer.mean(0).numpy() for layer in geometry.split_layers(x.double())] for name, x in images.items()}
    figure = _figure(3.4 * geometry.n_layers + 1.0, 2.4 * len(means))
    axes = figure.subplots(len(means), geometry.n_layers, squeeze=False)
    for j, layer in enumerate(geometry.layers):
        values = np.concatenate([m[j].ravel() for m in means.values()])
        positive = values[values > 0]
        norm = LogNorm(max(positive.min(), positive.max() * 1e-5), positive.max()) if len(positive) else None
        for i, (name, layers) in enumerate(means.items()):
            shown = axes[i, j].imshow(np.ma.masked_less_equal(layers[j], 0), norm=norm, origin="lower", aspect="auto",
                                      cmap="viridis", interpolation="nearest")
            axes[i, j].set_title(f"{name}: {layer.name}", fontsize="medium")
            axes[i, j].set(xlabel="column", ylabel="row")
        figure.colorbar(shown, ax=list(axes[:, j]), label="mean energy [MeV]")
    _save(figure, path)


def _plot_feature_ratios(path: Path, features: Mapping[str, np.ndarray], names: list[str], *, title: str) -> None:
    """Histograms (unit area) of each feature per domain, with a panel of each domain's ratio to real below."""
    from ..report.plots import _edges

    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure = _figure(4.0 * columns, 3.6 * rows, layout=None)  # constrained layout takes seconds with 40 axes
    margin = 1.0 / (3.6 * rows)  # about half an inch at the bottom and the top
    grid = figure.add_gridspec(rows, columns, left=0.06, right=0.98, bottom=0.5 * margin, top=1 - 0.6 * margin,
                               wspace=0.3, hspace=0.35)
    for k, name in enumerate(names):
        pair = grid[divmod(k, columns)].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
        top = figure.add_subplot(pair[0])
        bottom = figure.add_subplot(pair[1], sharex=top)
        values = {domain: x[:, k][np.isfinite(x[:, k])] for domain, x in features.items()}
        edges = _edges(list(values.values()), 40)
        density = {domain: np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges, density=True)[0]
                   for domain, v in values.items()}
        for domain, h in density.items():
            top.stairs(h, edges, color=_COLOURS.get(domain), linewidth=1.2, label=f"{domain} ({len(values[domain])})")
            if domain != "real":
                ratio = np.divide(h, density["real"], out=np.full(len(h), np.nan), where=density["real"] > 0)
                bottom.stairs(ratio, edges, color=_COLOURS.get(domain), linewidth=1.2)
        bottom.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
        bottom.set_ylim(0.0, 2.0)
        bottom.set_yticks([0.5, 1.0, 1.5])
        bottom.set(xlabel=name, ylabel="/ real")
        top.set(ylabel="density")
        top.tick_params(labelbottom=False)
        if k == 0:
            top.legend(loc="best", fontsize="small")
    figure.suptitle(title)
    _save(figure, path)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else {"+": "plus", "-": "minus"}.get(c, "_") for c in name)


def _figures(folder: Path, geometry, images: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor | None],
             features: Mapping[str, np.ndarray], names: list[str], class_names) -> dict[str, str]:
    """The report's PNGs in ``folder``: {caption: file name}."""
    figures = {"average shower per layer (sim, translated, real)": "average_shower.png",
               "shower features, all particles (ratio to real below)": "features.png"}
    _plot_average_showers(folder / "average_shower.png", images, geometry)
    _plot_feature_ratios(folder / "features.png", features, names, title="all particles")
    if labels["sim"] is None or labels["real"] is None:
        return figures
    shown = [k for k, name in enumerate(names) if name.startswith(_PARTICLE_FEATURES)]
    for c, particle in enumerate(class_names):
        chosen = {domain: labels[domain] == c for domain in images}
        if all(bool(m.any()) for m in chosen.values()):
            per_particle = {d: features[d][m.numpy()][:, shown] for d, m in chosen.items()}
            file = f"features_{_slug(particle)}.png"
            _plot_feature_ratios(folder / file, per_particle, [names[k] for k in shown], title=particle)
            figures[f"shower features, {particle} (ratio to real below)"] = file
    return figures


def summary_rows(results: Mapping) -> list[list[str]]:
    """Rows (metric, then one column per :data:`RESULT_ENTRIES` entry) of the headline distances of :func:`evaluate`."""

    def value(entry: Mapping, key: str, scale: float = 1.0, digits: int = 3) -> str:
        item = entry[key]
        if item["value"] is None:
            return "–"
        error = "" if item["error"] is None else f" ± {scale * item['error']:.{digits}f}"
        return f"{scale * item['value']:.{digits}f}{error}"

    def mean(entry: Mapping, key: str) -> str:
        return f"{np.mean([f[key] for f in entry['features'].values()]):.3f}"

    entries = [results[name] for name in RESULT_ENTRIES]
    return [
        ["FPD x 10^3", *(value(e, "fpd", 1e3, 2) for e in entries)],
        ["KPD x 10^3", *(value(e, "kpd", 1e3, 3) for e in entries)],
        ["classifier AUC, features", *(value(e, "auc") for e in entries)],
        ["classifier AUC, cells", *(value(e, "auc_cells") for e in entries)],
        ["mean separation power", *(mean(e, "separation_power") for e in entries)],
        ["mean KS statistic", *(mean(e, "ks") for e in entries)],
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _report(results: Mapping) -> str:
    """report.md: headline distances, per-feature distances, label preservation, energy response, figures."""
    header = ["metric", *RESULT_ENTRIES.values()]
    lines = [f"# Translation report: {results['method']}", "",
             f"model `{results['model']}`, geometry {results['geometry']}; sim `{results['sim']}` "
             f"({results['events']['sim']} showers, translated), real `{results['real']}` "
             f"({results['events']['real']} showers). Every distance is to the real showers; lower is closer "
             f"(AUC: 0.5 is indistinguishable).", "",
             "## Distances to real", "", *_table(header, summary_rows(results)), "",
             f"Floor: {results['floor_note']}.", "",
             "## Per feature", "", "Separation power and Wasserstein-1 (in the feature's unit) to real.", ""]
    per_feature = [[name, *(_number(results[e]["features"][name]["separation_power"]) for e in RESULT_ENTRIES),
                    *(f"{results[e]['features'][name]['w1']:.4g}" for e in RESULT_ENTRIES)]
                   for name in results["feature_names"]]
    lines += [*_table(["feature", *(f"sep. power, {e}" for e in ("sim", "translated", "floor")),
                       *(f"W1, {e}" for e in ("sim", "translated", "floor"))], per_feature), ""]
    kept = results["label_preservation"]
    lines += ["## Label preservation", ""]
    if kept is None:
        lines += ["The sim showers have no labels.", ""]
    else:
        lines += [f"A CaloCNN trained on half of the sim showers classifies the other half ({kept['n']} showers) with "
                  f"accuracy {100 * kept['accuracy_sim']:.1f}% as simulated and {100 * kept['accuracy_translated']:.1f}% "
                  f"after translation ({kept['difference_points']:+.1f} points).", ""]
    response = results["energy_response"]
    lines += ["## Energy response", ""]
    if response is None:
        lines += ["The sim showers have no labels or incident energies.", ""]
    else:
        bins = response["bins"]
        header = ["particle", *(f"{lo:.3g}-{hi:.3g} GeV" for lo, hi in zip(bins[:-1], bins[1:]))]
        rows = [[name, *(f"{_number(m)} ± {_number(e)} ({n})" for m, e, n in zip(c["mean"], c["error"], c["n"]))]
                for name, c in response["classes"].items()]
        lines += ["Total translated / total simulated energy per shower (mean ± standard error (showers)), by incident "
                  "energy.", "", *_table(header, rows), ""]
    lines += ["## Figures", ""]
    lines += [f"![{caption}]({file})\n" for caption, file in results["figures"].items()]
    return "\n".join(lines)


def evaluate(
    model: str | Path,
    *,
    sim: str | Path,
    real: str | Path,
    out: str | Path,
    geometry: str | _geometry.Geometry | None = None,
    events: int | None = None,
    seed: int = 0,
    classifier_epochs: int = 4,
) -> dict:
    """Translate the sim showers and measure how close they come to the real ones, next to the start and the floor.

    Writes ``out/results.json``, ``out/report.md`` and its figures (``average_shower.png``, ``features.png``,
    ``features_<particle>.png`` where sim and real have labels), each atomically, and returns the results:

    - ``"starting_point"`` (sim vs real), ``"translated"`` (translated sim vs real) and ``"floor"`` (two
      random halves of real): each :func:`sim2real_fast.evaluate.physics.compare_features`' entry
      (``"n"``, per-feature ``"w1"``/``"ks"``/``"separation_power"``, ``"fpd"``, ``"kpd"``, ``"auc"`` on
      the shower features) plus ``"auc_cells"`` (the classifier AUC on the cells), each {"value", "error"};
    - ``"label_preservation"``: :func:`~sim2real_fast.evaluate.physics.label_preservation` of a CaloCNN
      trained (``classifier_epochs``) on a random half of the sim showers, on the other half (None
      without sim labels);
    - ``"energy_response"``: :func:`~sim2real_fast.evaluate.physics.energy_response` in up to 5
      equal-population incident-energy bins (None without sim labels or energies);
    - ``"method"``, ``"model"``, ``"geometry"``, ``"sim"``, ``"real"``, ``"events"`` {"sim", "real"},
      ``"feature_names"``, ``"floor_note"``, ``"figures"`` {caption: file}, ``"seconds"``.

    ``events``: the first ``events`` showers of each file. ``seed``: the halves, metrics and classifier.
    """
    from ..evaluate.physics import classifier_auc, compare_features, energy_response, label_preservation
    from ..ops import shower_features
    from ..translate import read_domain
    from .data import particle_names

    _check_count("events", events, 1)
    _check_count("seed", seed, 0)
    _check_count("classifier_epochs", classifier_epochs, 1)
    started = time.perf_counter()
    translator = _load(model, geometry)
    geometry = translator.geometry
    sim_domain = _first(read_domain(sim, geometry=geometry, name="sim"), events)
    real_domain = _first(read_domain(real, geometry=geometry, name="real"), events)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"--out {folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    translated = translator.translate(sim_domain.inputs)
    images = {"sim": sim_domain.inputs, "translated": translated, "real": real_domain.inputs}
    computed = {name: shower_features(x, geometry) for name, x in images.items()}
    names = computed["real"].names()
    features = {name: f.as_tensor().double().numpy() for name, f in computed.items()}
    comparison = compare_features(features["real"], {"sim": features["sim"], "translated": features["translated"]},
                                  names=names, seed=seed)
    order = np.random.default_rng(seed).permutation(len(real_domain))  # compare_features' halves
    halves = [real_domain.inputs[torch.from_numpy(part)] for part in np.split(order, [len(order) // 2])]
    cells = {"starting_point": (real_domain.inputs, sim_domain.inputs), "translated": (real_domain.inputs, translated),
             "floor": tuple(halves)}
    entries = {"starting_point": comparison["candidates"]["sim"], "translated": comparison["candidates"]["translated"],
               "floor": comparison["floor"]}
    for key, (a, b) in cells.items():
        auc, error = classifier_auc(a, b, on="cells", seed=seed)
        entries[key] = {**entries[key], "auc_cells": {"value": auc, "error": error}}

    preserved = response = None
    class_names = ()
    if sim_domain.labels is not None:
        class_names = particle_names(int(sim_domain.labels.max()) + 1)
        order = torch.randperm(len(sim_domain), generator=torch.Generator().manual_seed(seed))
        train_index, test_index = order[: len(order) // 2], order[len(order) // 2 :]
        classifier = _sim_classifier(sim_domain.subset(train_index), geometry, n_classes=len(class_names),
                                     epochs=classifier_epochs, seed=seed)
        preserved = label_preservation(classifier, sim_domain.inputs[test_index], translated[test_index],
                                       sim_domain.labels[test_index])
        if sim_domain.energy is not None:
            response = energy_response(sim_domain.inputs, translated, sim_domain.labels, sim_domain.energy,
                                       class_names=class_names, bins=_energy_bins(sim_domain.energy))
    labels = {"sim": sim_domain.labels, "translated": sim_domain.labels, "real": real_domain.labels}
    figures = _figures(folder, geometry, images, labels, features, names, class_names)
    results = _plain({
        "method": translator.name, "model": str(model), "geometry": geometry.name, "sim": str(sim), "real": str(real),
        "events": {"sim": len(sim_domain), "real": len(real_domain)}, "feature_names": names, **entries,
        "floor_note": comparison["floor_note"], "label_preservation": preserved, "energy_response": response,
        "figures": figures, "seconds": time.perf_counter() - started,
    })
    with atomic_path(folder / "results.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2) + "\n")
    with atomic_path(folder / "report.md") as tmp:
        tmp.write_text(_report(results) + "\n")
    return results
