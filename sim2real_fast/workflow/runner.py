"""``sim2real run``: every method trained, adapted and evaluated on the same data, then reported.

Layout of the output folder ``out``::

    run.json                 the configuration (a resumed run must match it)
    data/sim.root, real.root the simulated domains (when no files were given)
    checkpoints/<method>-d<i>-seed<k>/   one file per epoch of every stage (fit's resume points)
    methods/<method>-d<i>-seed<k>/result.json, arrays.pt   a finished (method, instance, seed)
    results.json  report.md  figures/*.png  predictions.root  models/<method>.pt, .onnx

A run trains every method once per real detector instance ``d<i>`` and training seed. A (method,
instance, seed) whose ``result.json`` exists is finished; ``resume=True`` skips it and continues an
unfinished one from its last checkpoint, so an interrupted run loses at most one epoch. The figures,
predictions.root and the exported models are those of the first instance and seed.

Under ``torchrun`` every rank trains every unit together (data-parallel :func:`~sim2real_fast.adapt.fit`);
rank 0 alone takes the folder's lock, writes run.json, the data files (the others wait, then read them),
evaluates and writes every result and output, and logs. Whether the run resumes, and which units are
finished, rank 0 decides for all. The other ranks return None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

from .. import __version__, distributed
from .._lock import output_lock
from ..adapt import fit
from ..evaluate import EnergyMeter, flag_gaps, gap_recovered, paired_difference
from ..io._atomic import atomic_path
from ..models import CaloCNN
from ._json import strict, write_json
from .config import RunConfig
from .data import RunData, load_data, load_sim
from .evaluation import evaluate_fit

__all__ = ["MIN_GAP", "SCALARS", "method_slug", "run"]

#: The per-method numbers of results.json (mean over seeds; ``spread`` holds their standard deviations).
SCALARS = ("target_accuracy", "target_accuracy_last", "target_f1", "target_auc", "em_accuracy", "em_auc", "pion_auc",
           "source_accuracy", "source_f1", "source_auc", "source_em_accuracy", "source_em_auc", "source_pion_auc",
           "gap_recovered", "a_distance", "mmd", "two_sample_auc",
           "train_seconds", "energy_joules")

#: The scores whose paired difference to source_only (with a bootstrap interval) results.json reports.
PAIRED = ("target_accuracy", "em_auc", "pion_auc")

#: gap_recovered is given only where target_oracle beats source_only by this much real accuracy (2 points).
MIN_GAP = 0.02


def method_slug(method: str) -> str:
    """A method name usable in file and branch names ("dann+pseudo_label" -> "dann_pseudo_label")."""
    return method.replace("+", "_")


def _decided_by_main(decide):
    """``decide()`` run on rank 0 alone: its result, or the exception it raised, on every rank."""
    if distributed.world_size() == 1:
        return decide()
    box = [None]
    if distributed.is_main():
        try:
            box[0] = (decide(), None)
        except Exception as error:  # every rank fails the same way
            box[0] = (None, error)
    torch.distributed.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


def _check_resumable(out: Path, config: RunConfig, resume: bool, log) -> bool:
    """A fresh run clears ``out``'s previous results; a resumed one must have the same configuration (threads aside).

    Returns whether the run resumes: ``resume`` unless ``out`` holds no earlier run (no run.json), which
    ``log`` says, and the run starts fresh.
    """
    stored = out / "run.json"
    if resume and not stored.exists():
        log(f"--resume: no earlier run in {str(out)!r} (no run.json); starting a fresh run")
        resume = False
    if resume:
        # the thread count may change between the two (it changes round-off, not the method)
        previous = {k: v for k, v in json.loads(stored.read_text()).items() if k != "threads"}
        if previous != {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "threads"}:
            raise ValueError(f"--resume: {str(out)!r} holds a run with another configuration ({stored}); "
                             "use the same options or another --out")
    else:
        for folder in ("checkpoints", "methods"):
            shutil.rmtree(out / folder, ignore_errors=True)
        stored.unlink(missing_ok=True)  # written again once the data have been read (:func:`_run`)
    return resume


def _train_one(method: str, seed: int, data: RunData, config: RunConfig, out: Path, resume: bool,
               progress: bool) -> tuple[dict, dict] | None:
    """Fit, time and evaluate one (method, instance, seed); stored under out/methods so a resumed run skips it.

    Every rank trains; rank 0 evaluates and returns (result, arrays), the others None."""
    name = f"{method_slug(method)}-d{data.detector_seed if data.detector_seed is not None else 'file'}-seed{seed}"
    folder = out / "methods" / name
    if _decided_by_main(lambda: resume and (folder / "result.json").exists()):
        if not distributed.is_main():
            return None
        return json.loads((folder / "result.json").read_text()), torch.load(folder / "arrays.pt")
    checkpoints = out / "checkpoints" / name
    torch.manual_seed(seed)
    model = CaloCNN(data.geometry, n_classes=len(data.class_names))
    with EnergyMeter() as meter:
        fitted = fit(method, model, source=data.sim_train, target=data.real_adapt.unlabelled(),
                     config=dataclasses.replace(config.adapt, seed=seed), target_labelled=data.real_adapt,
                     randomized_source=data.randomized, paired=data.paired,
                     checkpoint_dir=checkpoints, resume=resume,
                     progress=progress)
    if not distributed.is_main():
        return None
    result, arrays = evaluate_fit(fitted, data, seed=seed, selection=config.selection)
    result |= {"seed": seed, "detector_seed": data.detector_seed, "train_seconds": meter.seconds,
               "energy_joules": meter.joules, "energy_method": meter.method, "history": fitted.history}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "arrays.pt") as tmp:
        torch.save(arrays, tmp)
    with atomic_path(folder / "result.json") as tmp:  # read back by a resumed run only: NaN stays NaN
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    return result, arrays


def _key(run: dict) -> tuple:
    return (run["detector_seed"], run["seed"])


def _summarise(per_seed: dict[str, list[dict]]) -> dict:
    """Per method: the mean of every scalar over (instance, seed) runs, their sample standard deviations
    under ``spread``, the paired difference to source_only of :data:`PAIRED` with a bootstrap 95% interval
    under ``vs_source_only``, and the runs' results."""
    baseline = {key: {_key(r): r.get(key) for r in per_seed.get("source_only", [])} for key in PAIRED}
    summary = {}
    for method, runs in per_seed.items():
        entry = {}
        for key in SCALARS:
            values = [r[key] for r in runs if r.get(key) is not None and not math.isnan(r[key])]
            entry[key] = statistics.fmean(values) if values else None
            entry.setdefault("spread", {})[key] = statistics.stdev(values) if len(values) > 1 else 0.0
        first = runs[0]
        entry |= {"per_class": first["per_class"], "confusion": first["confusion"], "selection": first["selection"],
                  "per_seed": [{k: r[k] for k in SCALARS if k in r} | {"seed": r["seed"], "detector_seed":
                               r["detector_seed"], "selected": r["selected"], "energy_method": r.get("energy_method")}
                               for r in runs]}
        if method != "source_only" and baseline["target_accuracy"]:
            entry["vs_source_only"] = {
                key: paired_difference({_key(r): r[key] for r in runs if r.get(key) is not None},
                                       {k: v for k, v in baseline[key].items() if v is not None})
                for key in PAIRED if any(r.get(key) is not None for r in runs)}
        summary[method] = entry
    return summary


def _add_gap_recovered(per_seed: dict[str, list[dict]]) -> None:
    """gap_recovered per run against the same instance and seed's source_only and target_oracle.

    None without those references, and None unless target_oracle beats source_only by :data:`MIN_GAP`
    (2 points) of real accuracy or more: a ratio to a smaller gap would be noise (the paired differences
    still say what a method gained).
    """
    reference = {name: {_key(r): r for r in per_seed.get(name, [])} for name in ("source_only", "target_oracle")}
    for runs in per_seed.values():
        for r in runs:
            low, high = reference["source_only"].get(_key(r)), reference["target_oracle"].get(_key(r))
            if low is None or high is None:
                r["gap_recovered"] = None
                continue
            low, high = low["target_accuracy"], high["target_accuracy"]
            resolved = high - low > MIN_GAP - 1e-9  # accuracies are ratios of counts: 0.72 - 0.70 < 0.02
            r["gap_recovered"] = gap_recovered(r["target_accuracy"], low, high) if resolved else None


def machine() -> dict:
    """Where the run ran (goes into results.json and the report): ``cpu_count`` is torch's threads per process,
    ``world_size`` the processes that trained (``torchrun``), ``device`` where the models trained (the
    CPU: ``sim2real run`` keeps its models there) and ``gpu`` the GPU present, if any."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": torch.get_num_threads(), "torch": torch.__version__, "sim2real_fast": __version__,
            "device": "cpu", "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "world_size": distributed.world_size()}


def run(config: RunConfig, *, resume: bool = False, progress: bool = True, log=print) -> dict | None:
    """Train, adapt and evaluate every method of ``config`` and write the outputs (see the module doc).

    Returns the content of results.json: ``{"config", "machine", "class_names", "methods": {method:
    {SCALARS..., "spread", "per_class", "confusion", "selection", "per_seed"}}, "alarms", "seconds",
    "outputs"}`` and the training ``histories``; accuracies, F1 and AUC are fractions, gap_recovered a
    fraction of the gap; an undefined value (NaN) is None, null in the file. Under ``torchrun`` the ranks
    other than 0 train along, log nothing, write nothing and return None (see the module doc).
    """
    started = time.perf_counter()
    out = Path(config.out)
    if not distributed.is_main():
        progress, log = False, lambda _: None
    with contextlib.ExitStack() as stack:
        resume = _decided_by_main(lambda: _claim(out, config, resume, log, stack))
        return _run(config, out, resume, progress, log, started)


def _claim(out: Path, config: RunConfig, resume: bool, log, stack: contextlib.ExitStack) -> bool:
    """Create ``out``, hold its lock until ``stack`` closes, and clear or check it (:func:`_check_resumable`)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"output folder {str(out)!r} (--out): a file is in the way; expected a folder "
                                 "(created if missing)") from None
    stack.enter_context(output_lock(out, "sim2real run"))
    return _check_resumable(out, config, resume, log)


def _run(config: RunConfig, out: Path, resume: bool, progress: bool, log, started: float) -> dict | None:
    from .outputs import write_outputs

    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        sim = load_sim(config, progress=progress)
        instances = config.detector_seeds if config.real is None else (None,)
        per_seed: dict[str, list[dict]] = {m: [] for m in config.methods}
        arrays: dict[str, dict] = {}
        first = None
        for detector_seed in instances:
            data = load_data(config, detector_seed=detector_seed, sim=sim, progress=progress)
            if first is None:
                first = data
                if distributed.is_main():
                    write_json(out / "run.json", config.to_dict())
            for seed in config.seeds:
                for method in config.methods:
                    where = "" if detector_seed is None else f"detector {detector_seed}, "
                    log(f"[{method}, {where}seed {seed}]")
                    trained = _train_one(method, seed, data, config, out, resume, progress)
                    if trained is None:
                        continue
                    result, method_arrays = trained
                    per_seed[method].append(result)
                    if data is first:
                        arrays.setdefault(method, method_arrays)  # the first instance and seed feed plots and files
        if not distributed.is_main():
            return None
        data = first
        _add_gap_recovered(per_seed)
        methods = _summarise(per_seed)
        results = {
            "config": config.to_dict(), "machine": machine(), "class_names": list(data.class_names),
            "methods": methods,
            "alarms": flag_gaps(methods, threshold=config.gap_alarm_threshold),
            "histories": {m: per_seed[m][0]["history"] for m in config.methods},
        }
        results["outputs"] = write_outputs(out, results, arrays, data, config, log=log)
        results["seconds"] = time.perf_counter() - started
        results = strict(results)
        write_json(out / "results.json", {k: v for k, v in results.items() if k != "histories"})
        return results
    finally:
        torch.set_num_threads(previous_threads)
