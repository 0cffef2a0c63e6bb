"""The steps of ``sim2real run`` on their own: train or adapt one model and save it; evaluate a saved model.

A saved model is ``DIR/model.ckpt`` (``torch.save`` of the CaloCNN weights with its geometry, class names,
method and configuration), plus ``model.pt`` (TorchScript) and ``model.onnx`` next to it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from .. import geometry as _geometry
from .. import io
from ..adapt import AdaptConfig, fit, parse_method
from ..adapt.methods import REGISTRY
from ..evaluate import (EnergyMeter, classification_metrics, feature_mmd, gap_alarm, particle_metrics,
                        proxy_a_distance, two_sample_auc)
from ..io._atomic import atomic_path
from ..models import CaloCNN, predict
from .data import load_pairs, particle_names, randomized_copy, read_domain

__all__ = ["adapt_step", "evaluate_step", "load_model"]


def adapt_step(method: str, *, sim: str, real: str | None, out: str, geometry: str = "calogan",
               config: AdaptConfig = AdaptConfig(), resume: bool = False, progress: bool = True,
               real_test: str | None = None, test_fraction: float = 0.5, pairs: str | None = None,
               log=print) -> Path:
    """Fit ``method`` ("source_only" for ``sim2real train``) on the files and save it in ``out``; returns model.ckpt.

    The real file is split: ``test_fraction`` of its events (a fixed random draw, seed 0) are held out
    and never adapted on nor drawn as shots, and their entry numbers are saved in ``out/real_split.json``
    to evaluate on; with ``real_test`` that file is the test set instead and every event of ``real`` is
    used. Domain randomisation applies the prior's image-level residuals to the sim file's events.
    ``pairs``: the folder of paired sim/real files ``pix2pix`` trains its translator on (:func:`load_pairs`).
    """
    methods = parse_method(method)
    geometry = _geometry.get(geometry)
    source = read_domain(sim, geometry, "sim", labelled=True)
    needs_labels = any(m in ("target_oracle", "few_shot") for m in methods)
    target = None if real is None else read_domain(real, geometry, "real", labelled=needs_labels)
    if target is None and any(m not in ("source_only", "domain_randomization") for m in methods):
        raise ValueError(f"method {method!r} adapts to the real domain: give --real FILE")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if target is not None:
        if real_test is not None:
            if not Path(real_test).exists():
                raise FileNotFoundError(f"real test file not found: {real_test!r}")
            split = {"real": str(real), "test": str(real_test), "held_out": None}
            log(f"sim2real {'adapt' if methods != ('source_only',) else 'train'}: adapting on every event of "
                f"{real}; the test set is {real_test}")
        else:
            if not 0 < test_fraction < 1:
                raise ValueError(f"test_fraction: expected a fraction in (0, 1), got {test_fraction!r}")
            order = torch.randperm(len(target), generator=torch.Generator().manual_seed(0))
            cut = round(test_fraction * len(target))
            held_out, kept = order[:cut].sort().values, order[cut:].sort().values
            if len(kept) == 0 or len(held_out) == 0:
                raise ValueError(f"real file {real!r}: {len(target)} events are too few to hold out a test set; "
                                 "give --real-test FILE")
            target = target.subset(kept)
            split = {"real": str(real), "test": str(real), "held_out": held_out.tolist()}
            log(f"sim2real adapt: {len(held_out)} of the {len(order)} events of {real} are held out as the test set "
                f"(never adapted on; entries in {folder / 'real_split.json'}); evaluate on them with "
                f"sim2real evaluate --real {real} --split {folder / 'real_split.json'}")
        with atomic_path(folder / "real_split.json") as tmp:
            Path(tmp).write_text(json.dumps(split) + "\n")
    randomized = None
    if "domain_randomization" in methods:
        randomized = randomized_copy(source, geometry, seed=config.seed + 2)
    paired = None
    if any("paired" in REGISTRY[m].sees for m in methods):
        if pairs is None:
            raise ValueError(f"method {method!r} trains on paired showers: give --pairs DIR (trainA/ sim and trainB/ "
                             "real files of the same events, e.g. test-beam events simulated one by one)")
        paired = load_pairs(pairs, geometry)
    class_names = particle_names(int(source.labels.max()) + 1)
    if not resume:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    torch.manual_seed(config.seed)
    model = CaloCNN(geometry, n_classes=len(class_names))
    started = time.perf_counter()
    with EnergyMeter() as meter:
        fitted = fit(method, model, source=source, target=None if target is None else target.unlabelled(),
                     config=config, target_labelled=target if needs_labels else None, randomized_source=randomized,
                     paired=paired,
                     checkpoint_dir=folder / "checkpoints", resume=resume, progress=progress)
    saved = {"state_dict": fitted.model.state_dict(), "geometry": geometry.to_dict(), "class_names": class_names,
             "method": method, "config": config.to_dict(), "history": fitted.history,
             "train_seconds": time.perf_counter() - started, "energy_joules": meter.joules}
    with atomic_path(folder / "model.ckpt") as tmp:
        torch.save(saved, tmp)
    from ..export import export_model

    export_model(fitted.model.eval(), source.inputs[:8], folder, name="model")
    return folder / "model.ckpt"


def _held_out(split: str, real: str, n_events: int) -> torch.Tensor:
    """The held-out entry numbers of a real_split.json, checked against the real file it was made for."""
    if not Path(split).exists():
        raise FileNotFoundError(f"split file not found: {split!r} (written by sim2real adapt as real_split.json)")
    try:
        description = json.loads(Path(split).read_text())
        held_out = description["held_out"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"split file {split!r}: expected the real_split.json of sim2real adapt") from None
    if held_out is None:
        raise ValueError(f"split file {split!r}: that model was adapted on every event of {description['real']!r} "
                         f"and tested on {description['test']!r}; evaluate on that file without --split")
    index = torch.tensor(held_out, dtype=torch.long)
    if len(index) and int(index.max()) >= n_events:
        raise ValueError(f"split file {split!r} was made for a real file with more events than {real!r} "
                         f"({n_events}); use the file it was made for ({description['real']!r})")
    return index


def load_model(path: str | Path) -> tuple[CaloCNN, dict]:
    """A model saved by :func:`adapt_step` and what was saved with it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"model file not found: {str(path)!r} (written by sim2real train / adapt as model.ckpt)")
    expected = "expected a model.ckpt written by sim2real train / adapt"
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as error:  # pickle, zip and unpickler errors of all kinds
        raise ValueError(f"{path}: cannot be read as a model file ({type(error).__name__}); {expected}") from error
    if not isinstance(saved, dict) or not {"geometry", "class_names", "state_dict"} <= set(saved):
        raise ValueError(f"{path}: holds no geometry, class_names and state_dict; {expected}")
    geometry = _geometry.Geometry.from_dict(saved["geometry"], origin=str(path))
    model = CaloCNN(geometry, n_classes=len(saved["class_names"]))
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"{path}: its weights do not fit a CaloCNN of its geometry; {expected}") from error
    return model.eval(), saved


def evaluate_step(model_path: str, *, real: str, sim: str | None = None, out: str, threshold: float = 0.05,
                  split: str | None = None) -> dict:
    """Scores of a saved model on a real file (and a sim file): metrics.json and predictions.root in ``out``.

    ``split``: the real_split.json that ``adapt_step`` wrote: only its held-out events are scored (the
    predictions tree still has every event, with a ``test`` branch).

    Classification metrics need a labelled real file; without labels only the per-event predictions and
    (with ``sim``) the feature-level gap are reported. ``threshold``: the gap alarm's limit on sim minus
    real accuracy.
    """
    model, saved = load_model(model_path)
    geometry, names = model.geometry, list(saved["class_names"])
    target = read_domain(real, geometry, "real", labelled=False)
    predictions = predict(model, target.inputs)
    test = torch.ones(len(target), dtype=torch.bool)
    if split is not None:
        held_out = _held_out(split, real, len(target))
        test = torch.zeros(len(target), dtype=torch.bool)
        test[held_out] = True
    scored = target.subset(test)
    probs = predictions.probs[test]
    result: dict = {"model": str(model_path), "method": saved["method"], "real": str(real), "events": len(scored),
                    "split": split}
    if scored.labelled:
        metrics = classification_metrics(scored.labels, probs, class_names=names)
        result |= {f"target_{k}": v for k, v in metrics.items()}
        result |= particle_metrics(scored.labels, probs, class_names=names)
    if sim is not None:
        source = read_domain(sim, geometry, "sim", labelled=True)
        sim_predictions = predict(model, source.inputs)
        result["source_accuracy"] = classification_metrics(source.labels, sim_predictions.probs,
                                                           class_names=names)["accuracy"]
        features = sim_predictions.features[:4000], predictions.features[test][:4000]
        result |= {"a_distance": proxy_a_distance(*features), "mmd": feature_mmd(*features),
                   "two_sample_auc": two_sample_auc(*features)}
        if "target_accuracy" in result:
            result["gap_alarm"] = gap_alarm(result["source_accuracy"], result["target_accuracy"], threshold=threshold)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    io.write_results_root(folder / "predictions.root",
                          {"score": predictions.probs, "pred": predictions.probs.argmax(1).to(torch.int32),
                           "test": test.to(torch.int8)})
    with atomic_path(folder / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    return result


