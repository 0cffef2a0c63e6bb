"""``sim2real dqm``: fault detection and run classification on HCAL occupancy maps, sim to real.

Fault detection (``faults``): a detector (:mod:`sim2real_fast.dqm.detect`) is trained on labelled
simulated maps with every adaptation method (the same plug-in methods as the showers, through
:func:`~sim2real_fast.adapt.fit`), its checkpoint picked by the label-free rule (``im`` on the
unlabelled real adaptation maps), and scored on real test maps, untouched and with injected faults
(:mod:`sim2real_fast.workflow.dqm_data`), next to the two baselines that need no training (reference
ratio and z-score). The method reported as the pick is the one whose selected checkpoint has the
best label-free score; the test labels never choose anything.

Run classification (``run``): a CNN and the ViT tell two runs' LS apart, on raw counts and on
per-event (per-LS) normalised maps, trained on each run's first half of LS and tested on the second
half, with the AUC per LS range of the test half (the robustness curve).

Outputs in ``out``: results.json (strict JSON), report.md, figures/, and per unit a result under
faults/ and run/ with the checkpoints, so ``resume`` continues an interrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import dqm
from .._lock import output_lock
from ..adapt import AdaptConfig, Domain, fit, validators
from ..evaluate.energy import EnergyMeter
from ..io._atomic import atomic_path
from ..models import predict
from ._json import strict, write_json
from .dqm_data import FaultData, fault_data, read_real_maps, run_data

__all__ = ["DQMConfig", "METHODS", "QUICK", "TASKS", "run_dqm"]

TASKS = ("run", "faults", "both")
#: The fault detectors' methods (and their combinations): the reference, the feature-level alignments and
#: self-training; the others need labelled real maps, a shower geometry or shower translators.
METHODS = ("source_only", "dann", "mmd", "coral", "pseudo_label")
RUN_NORMALISATIONS = ("raw", "events")
_ROBUSTNESS_BINS = 4
_BOOTSTRAP = 200
_SHOWN_MAPS = 3


@dataclass(frozen=True)
class DQMConfig:
    """Options of ``sim2real dqm`` (sizes in lumi-sections, LS).

    Attributes:
        task: "faults", "run" or "both".
        methods: adaptation methods of the fault detector (:data:`METHODS` by default).
        model: the fault detector, "cnn" or "vit".
        input: the fault detector's input normalisation (:data:`~sim2real_fast.dqm.NORMALISATIONS`).
        run_models: the run classifiers.
        sim_maps: labelled simulated LS of the fault task (a quarter as many more held out).
        reference_maps: good simulated LS of the simulation's reference.
        real_maps: LS of the simulated real run (without a real file).
        test_seeds: fault draws per real test LS (a real file: 20, so 10 LS give 200 faulty maps).
        run_lumisections: LS per run of the run task.
        epochs, batch_size, lr: the training of every detector and classifier.
        seed: seed of the data, the initialisation and the training.
        threads: torch threads (None: torch's default).
    """

    task: str = "both"
    methods: tuple[str, ...] = METHODS
    model: str = "cnn"
    input: str = "zscore"
    run_models: tuple[str, ...] = ("cnn", "vit")
    sim_maps: int = 2000
    reference_maps: int = 100
    real_maps: int = 1000
    test_seeds: int = 1
    run_lumisections: int = 400
    epochs: int = 6
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"--task: expected one of {TASKS}, got {self.task!r}")
        if self.model not in dqm.detect.MODELS or any(m not in dqm.detect.MODELS for m in self.run_models):
            raise ValueError(f"--model: expected models from {dqm.detect.MODELS}, got {self.model!r}, {self.run_models}")
        if self.input not in dqm.NORMALISATIONS:
            raise ValueError(f"--input: expected one of {dqm.NORMALISATIONS}, got {self.input!r}")
        from ..adapt.methods import parse_method

        if not self.methods:
            raise ValueError("--methods: expected at least one adaptation method")
        for method in self.methods:
            other = [name for name in parse_method(method) if name not in METHODS]
            if other:
                raise ValueError(f"--methods: {method}: {other} do not apply to occupancy maps (they need labelled "
                                 f"real maps, shower geometry or shower translators); expected '+'-joined names "
                                 f"from {list(METHODS)}")
        for name in ("sim_maps", "reference_maps", "real_maps", "test_seeds", "run_lumisections", "epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (4 if name.endswith(("maps", "lumisections")) else 1):
                raise ValueError(f"{name}: expected a positive int (maps: >= 4), got {value!r}")


#: ``--quick``: a smoke test of every step (minutes on 2 cores), not a measurement.
QUICK = {"sim_maps": 240, "reference_maps": 20, "real_maps": 100, "run_lumisections": 40, "epochs": 2}


def _auc_interval(scores: torch.Tensor, positive: torch.Tensor, seed: int) -> list[float] | None:
    """Bootstrap 95% interval of the ROC AUC (maps resampled within each class), or None."""
    from sklearn.metrics import roc_auc_score

    scores, positive = scores.double().numpy(), positive.numpy().astype(bool)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    if len(pos) == 0 or len(neg) == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(_BOOTSTRAP):
        pick = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        values.append(roc_auc_score(positive[pick], scores[pick]))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def _fit(method: str, model_name: str, n_classes: int, train: Domain, target: Domain | None, config: DQMConfig,
         folder: Path, resume: bool, progress: bool):
    model = dqm.detect.build_model(model_name, n_classes=n_classes, seed=config.seed)
    adapt = AdaptConfig(epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=config.seed)
    with EnergyMeter() as meter:
        fitted = fit(method, model, source=train, target=target, config=adapt, checkpoint_dir=folder / "checkpoints",
                     resume=resume, progress=progress)
    return fitted, {"train_seconds": meter.seconds, "energy_joules": meter.joules, "energy_method": meter.method}


def _select(fitted, sim_val: Domain, target: Domain, seed: int) -> tuple[int, dict]:
    """The checkpoint the ``im`` rule picks (the last one if it cannot score) and every checkpoint's scores."""
    import copy

    model = copy.deepcopy(fitted.model)
    rows = []
    for checkpoint in fitted.checkpoints:
        checkpoint.load_into(model)
        rows.append(validators.validator_scores(predict(model, sim_val.inputs), sim_val.labels,
                                                predict(model, target.inputs), seed=seed))
    pick = validators.select(rows).get("im", len(rows) - 1)
    fitted.checkpoints[pick].load_into(model)
    checkpoint = fitted.checkpoints[pick]
    return model, {"rule": "im", "stage": checkpoint.stage, "epoch": checkpoint.epoch, "index": pick,
                   "im": rows[pick].get("im")}


def _detection(scores: torch.Tensor, channels: torch.Tensor, data: FaultData, seed: int) -> dict:
    metrics = dqm.detection_metrics(scores, data.real_test.labels, channel_scores=channels,
                                    channel_labels=data.channel_labels, active=data.active)
    metrics["map"]["ci95"] = _auc_interval(scores, data.real_test.labels > 0, seed)
    return metrics


def _fault_method(method: str, data: FaultData, config: DQMConfig, out: Path, resume: bool, progress: bool,
                  log) -> tuple[dict, dict]:
    folder = out / "faults" / method.replace("+", "_")
    if resume and (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text()), torch.load(folder / "arrays.pt")
    log(f"faults: training {config.model} with {method}")
    fitted, cost = _fit(method, config.model, len(dqm.FAULTS), data.sim_train, data.real_adapt, config, folder,
                        resume, progress)
    model, selected = _select(fitted, data.sim_val, data.real_adapt, config.seed)
    scores, probs = dqm.detect.map_scores(model, data.real_test.inputs)
    channels = dqm.detect.channel_scores(model, data.real_test.inputs)
    sim_scores, sim_probs = dqm.detect.map_scores(model, data.sim_test.inputs)
    labels = data.real_test.labels
    faulty = labels > 0
    result = _detection(scores, channels, data, config.seed) | cost | {"selected": selected}
    result |= {
        "accuracy": float((probs.argmax(1) == labels).float().mean()),
        "detection_accuracy": float(((scores > 0) == faulty).float().mean()),
        "type_accuracy": float((probs[faulty].argmax(1) == labels[faulty]).float().mean()) if faulty.any() else None,
        "sim_map_auc": dqm.map_auc(sim_scores, data.sim_test.labels)["auc"],
        "sim_accuracy": float((sim_probs.argmax(1) == data.sim_test.labels).float().mean()),
    }
    arrays = {"scores": scores, "shown_channels": channels[_shown(data)]}
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "arrays.pt") as tmp:
        torch.save(arrays, tmp)
    write_json(folder / "result.json", result)
    return result, arrays


def _shown(data: FaultData) -> torch.Tensor:
    """The test maps of the anomaly-map figure: the first faulty map of each of a few fault types."""
    labels = data.real_test.labels
    first = [int((labels == k).nonzero()[0, 0]) for k in labels.unique().tolist() if k > 0]
    return torch.tensor(first[:_SHOWN_MAPS], dtype=torch.long)


def _faults(config: DQMConfig, real, out: Path, resume: bool, progress: bool, log) -> tuple[dict, dict]:
    started = time.perf_counter()
    data = fault_data(sim_maps=config.sim_maps, reference_maps=config.reference_maps, real_maps=config.real_maps,
                      real=real, how=config.input, test_seeds=20 if real is not None else config.test_seeds,
                      seed=config.seed)
    log(f"faults: data ready in {time.perf_counter() - started:.0f} s: {data.description}")
    methods, arrays = {}, {}
    for method in config.methods:
        methods[method], arrays[method] = _fault_method(method, data, config, out, resume, progress, log)
    baselines = {name: _detection(scores.maps, scores.channels, data, config.seed)
                 for name, scores in data.baselines.items()}
    pick = max(methods, key=lambda m: (methods[m]["selected"]["im"] if methods[m]["selected"]["im"] is not None
                                       else -math.inf))
    best_by_test = max(methods, key=lambda m: methods[m]["map"]["auc"])
    results = {"data": data.description, "model": config.model, "methods": methods, "baselines": baselines,
               "label_free_pick": {"rule": "im", "method": pick},
               "best_by_test_auc": best_by_test, "targets": _targets(methods[pick], baselines)}
    return results, {"data": data, "arrays": arrays, "shown": _shown(data)}


def _targets(picked: dict, baselines: dict) -> dict:
    """The issue's targets for the label-free pick, each with its value."""
    map_auc, channel = picked["map"]["auc"], (picked["channel"] or {}).get("auc")
    rate = picked["false_alarm"]["rate"]
    beats = all(map_auc > b["map"]["auc"] for b in baselines.values())
    return {
        "map_auc >= 0.95": {"value": map_auc, "met": map_auc >= 0.95},
        "channel_auc >= 0.90": {"value": channel, "met": channel is not None and channel >= 0.90},
        "false_alarm <= 1% at 90% efficiency": {"value": rate, "met": rate <= 0.01},
        "beats both training-free baselines (map AUC)": {
            "value": {name: b["map"]["auc"] for name, b in baselines.items()}, "met": beats},
    }


def _run_unit(model_name: str, how: str, config: DQMConfig, real, out: Path, resume: bool, progress: bool,
              log) -> dict:
    from sklearn.metrics import roc_auc_score

    folder = out / "run" / f"{model_name}-{how}"
    if resume and (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text())
    data = run_data(lumisections=config.run_lumisections, how=how, real=real, seed=config.seed)
    log(f"run: training {model_name} on {how} maps ({data.description})")
    fitted, cost = _fit("source_only", model_name, 2, data.train, None, config, folder, resume, progress)
    score = predict(fitted.model, data.test.inputs).logits
    score = score[:, 1] - score[:, 0]
    positive = data.test.labels == 1
    curve = []
    for ls in torch.tensor_split(data.test_ls.unique(), _ROBUSTNESS_BINS):
        if len(ls) == 0:
            continue
        keep = (data.test_ls >= ls[0]) & (data.test_ls <= ls[-1])
        both = positive[keep].any() and (~positive[keep]).any()
        curve.append({"ls": [int(ls[0]), int(ls[-1])], "n": int(keep.sum()),
                      "auc": float(roc_auc_score(positive[keep], score[keep])) if both else None})
    result = {"auc": float(roc_auc_score(positive, score)), "ci95": _auc_interval(score, positive, config.seed),
              "by_ls": curve, "data": data.description, **cost}
    write_json(folder / "result.json", result)
    return result


def _check_resumable(out: Path, config: DQMConfig, real_file: str | None, resume: bool) -> None:
    stored, current = out / "dqm.json", {**dataclasses.asdict(config), "real": real_file}
    current.pop("threads")
    if resume and stored.exists():
        previous = json.loads(stored.read_text())
        if previous != json.loads(json.dumps(current)):
            raise ValueError(f"--resume: {out} holds a dqm run with other options ({stored}); use the same options "
                             "or another --out")
    elif not resume:
        for folder in ("faults", "run"):
            shutil.rmtree(out / folder, ignore_errors=True)
    write_json(stored, current)


def run_dqm(config: DQMConfig = DQMConfig(), *, out: str | Path = "sim2real-dqm", real: str | Path | None = None,
            resume: bool = False, progress: bool = False, log=print) -> dict:
    """Run the tasks of ``config`` and write results.json, report.md and figures/ to ``out``; returns the results.

    ``real``: a file of real HCAL maps (:func:`~sim2real_fast.workflow.dqm_data.read_real_maps`); without
    it the real domain is the simulator's "real" one. ``resume`` continues a run with the same options.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out: {out} exists and is not a folder")
    real_maps = None if real is None else read_real_maps(real)
    with output_lock(out, "sim2real dqm"):
        return _run_dqm(config, out, real, real_maps, resume, progress, log)


def _run_dqm(config: DQMConfig, out: Path, real, real_maps, resume: bool, progress: bool, log) -> dict:
    _check_resumable(out, config, None if real is None else str(real), resume)
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    results: dict = {"config": dataclasses.asdict(config), "real": None if real is None else str(real),
                     "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                                 "threads": torch.get_num_threads(), "torch": torch.__version__}}
    extra = None
    try:
        if config.task in ("faults", "both"):
            results["faults"], extra = _faults(config, real_maps, out, resume, progress, log)
        if config.task in ("run", "both"):
            results["run"] = {m: {how: _run_unit(m, how, config, real_maps, out, resume, progress, log)
                                  for how in RUN_NORMALISATIONS} for m in config.run_models}
    finally:
        torch.set_num_threads(threads)
    results["seconds"] = time.perf_counter() - started
    from .dqm_report import write_report

    write_report(out, results, extra)
    write_json(out / "results.json", results)
    return json.loads(json.dumps(strict(results)))
