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
from ..adapt import AdaptConfig, Domain, fit, parse_method
from ..evaluate import EnergyMeter, classification_metrics, feature_mmd, gap_alarm, proxy_a_distance, two_sample_auc
from ..io._atomic import atomic_path
from ..models import CaloCNN, predict
from .data import particle_names, read_domain

__all__ = ["adapt_step", "evaluate_step", "load_model"]


def adapt_step(method: str, *, sim: str, real: str | None, out: str, geometry: str = "calogan",
               config: AdaptConfig = AdaptConfig(), resume: bool = False, progress: bool = True) -> Path:
    """Fit ``method`` ("source_only" for ``sim2real train``) on the files and save it in ``out``; returns model.ckpt."""
    stages = parse_method(method)
    geometry = _geometry.get(geometry)
    source = read_domain(sim, geometry, "sim", labelled=True)
    needs_labels = any(m in ("target_oracle", "few_shot") for m in stages)
    target = None if real is None else read_domain(real, geometry, "real", labelled=needs_labels)
    if target is None and any(m not in ("source_only", "domain_randomization") for m in stages):
        raise ValueError(f"method {method!r} adapts to the real domain: give --real FILE")
    randomized = None
    if "domain_randomization" in stages:
        from ..evaluate import randomized_effects
        from .data import simulate_domain

        showers = simulate_domain(len(source), geometry=geometry, effects=randomized_effects(), seed=config.seed + 2,
                                  description="randomised sim", progress=progress)
        randomized = Domain(showers.images, showers.labels, showers.energy.float(), "randomized")
    class_names = particle_names(int(source.labels.max()) + 1)
    folder = Path(out)
    if not resume:
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
    torch.manual_seed(config.seed)
    model = CaloCNN(geometry, n_classes=len(class_names))
    started = time.perf_counter()
    with EnergyMeter() as meter:
        fitted = fit(method, model, source=source, target=(target or source).unlabelled(), config=config,
                     target_labelled=target if needs_labels else None, randomized_source=randomized,
                     checkpoint_dir=folder / "checkpoints", resume=resume, progress=progress)
    saved = {"state_dict": fitted.model.state_dict(), "geometry": geometry.to_dict(), "class_names": class_names,
             "method": method, "config": config.to_dict(), "history": fitted.history,
             "train_seconds": time.perf_counter() - started, "energy_joules": meter.joules}
    with atomic_path(folder / "model.ckpt") as tmp:
        torch.save(saved, tmp)
    from ..export import export_model

    export_model(fitted.model.eval(), source.inputs[:8], folder, name="model")
    return folder / "model.ckpt"


def load_model(path: str | Path) -> tuple[CaloCNN, dict]:
    """A model saved by :func:`adapt_step` and what was saved with it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"model file not found: {str(path)!r} (written by sim2real train / adapt as model.ckpt)")
    saved = torch.load(path, weights_only=True)
    geometry = _geometry.Geometry.from_dict(saved["geometry"], origin=str(path))
    model = CaloCNN(geometry, n_classes=len(saved["class_names"]))
    model.load_state_dict(saved["state_dict"])
    return model.eval(), saved


def evaluate_step(model_path: str, *, real: str, sim: str | None = None, out: str, threshold: float = 0.05) -> dict:
    """Scores of a saved model on a real file (and a sim file): metrics.json and predictions.root in ``out``.

    Classification metrics need a labelled real file; without labels only the per-event predictions and
    (with ``sim``) the feature-level gap are reported. ``threshold``: the gap alarm's limit on sim minus
    real accuracy.
    """
    model, saved = load_model(model_path)
    geometry, names = model.geometry, list(saved["class_names"])
    target = read_domain(real, geometry, "real", labelled=False)
    predictions = predict(model, target.inputs)
    result: dict = {"model": str(model_path), "method": saved["method"], "real": str(real), "events": len(target)}
    if target.labelled:
        metrics = classification_metrics(target.labels, predictions.probs, class_names=names)
        result |= {f"target_{k}": v for k, v in metrics.items()}
    if sim is not None:
        source = read_domain(sim, geometry, "sim", labelled=True)
        sim_predictions = predict(model, source.inputs)
        result["source_accuracy"] = classification_metrics(source.labels, sim_predictions.probs,
                                                           class_names=names)["accuracy"]
        features = sim_predictions.features[:4000], predictions.features[:4000]
        result |= {"a_distance": proxy_a_distance(*features), "mmd": feature_mmd(*features),
                   "two_sample_auc": two_sample_auc(*features)}
        if "target_accuracy" in result:
            result["gap_alarm"] = gap_alarm(result["source_accuracy"], result["target_accuracy"], threshold=threshold)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    io.write_results_root(folder / "predictions.root",
                          {"score": predictions.probs, "pred": predictions.probs.argmax(1).to(torch.int32)})
    with atomic_path(folder / "metrics.json") as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2) + "\n")
    return result


