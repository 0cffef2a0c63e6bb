"""Scores of one trained model: classification on sim and real, the feature-level gap, and model selection."""

from __future__ import annotations

import copy

import torch

from ..adapt import FitResult, validators
from ..evaluate import classification_metrics, feature_mmd, proxy_a_distance, two_sample_auc
from ..models import Predictions, predict
from .data import RunData

__all__ = ["evaluate_fit"]

_VALIDATION_EVENTS = 5000  # events of each domain the validators see per checkpoint


def _checkpoint_scores(fit: FitResult, data: RunData, seed: int) -> list[dict]:
    """Per checkpoint: its stage/epoch, every validator's score and (for the report only) its real accuracy."""
    model = copy.deepcopy(fit.model)
    generator = torch.Generator().manual_seed(seed)
    sim_val = data.sim_val.subset(torch.randperm(len(data.sim_val), generator=generator)[:_VALIDATION_EVENTS])
    target = data.real_adapt.unlabelled()
    target = target.subset(torch.randperm(len(target), generator=generator)[:_VALIDATION_EVENTS])
    rows = []
    for checkpoint in fit.checkpoints:
        checkpoint.load_into(model)
        scores = validators.validator_scores(predict(model, sim_val.inputs), sim_val.labels,
                                             predict(model, target.inputs), seed=seed)
        real = predict(model, data.real_test.inputs).probs.argmax(1)
        accuracy = float((real == data.real_test.labels).float().mean())
        rows.append({"stage": checkpoint.stage, "epoch": checkpoint.epoch, "scores": scores,
                     "target_accuracy": accuracy})
    return rows


def _selection(rows: list[dict]) -> dict:
    """Which checkpoint each validator picks (and the best one by real accuracy, for reference)."""
    if not rows:
        return {}
    chosen = validators.select([row["scores"] for row in rows])
    best = max(range(len(rows)), key=lambda i: (rows[i]["target_accuracy"], i))
    picks = {**chosen, "oracle": best}
    return {name: {key: rows[i][key] for key in ("stage", "epoch", "target_accuracy")} | {"index": i}
            for name, i in picks.items()}


def evaluate_fit(fit: FitResult, data: RunData, *, seed: int, feature_events: int = 4000) -> tuple[dict, dict]:
    """Metrics of ``fit.model`` (its final weights) and the arrays the report and the friend tree need.

    Returns ``(result, arrays)``: ``result`` has target_* (real test set) and source_* (sim validation)
    accuracy / f1 / auc, per_class and confusion on real, a_distance, mmd and two_sample_auc between the
    sim-validation and real-test features, and ``selection`` (validators' picks); ``arrays`` has
    ``real_probs`` (N_real, C) for every event of the real file, ``test_probs``, and subsamples of the
    sim and real features ((n, F) each) for the embedding plot.
    """
    names = list(data.class_names)
    sim = predict(fit.model, data.sim_val.inputs)
    real = predict(fit.model, data.real.inputs)  # every real event once; the test set is its split-1 part
    real_test = Predictions(*(values[data.real_split == 1] for values in real))
    target = classification_metrics(data.real_test.labels, real_test.probs, class_names=names)
    source = classification_metrics(data.sim_val.labels, sim.probs, class_names=names)
    generator = torch.Generator().manual_seed(seed)
    sim_features = sim.features[torch.randperm(len(sim.features), generator=generator)[:feature_events]]
    real_features = real_test.features[torch.randperm(len(real_test.features), generator=generator)[:feature_events]]
    result = {
        "target_accuracy": target["accuracy"], "target_f1": target["f1"], "target_auc": target["auc"],
        "source_accuracy": source["accuracy"], "source_f1": source["f1"], "source_auc": source["auc"],
        "a_distance": proxy_a_distance(sim_features, real_features, seed=seed),
        "mmd": feature_mmd(sim_features, real_features, seed=seed),
        "two_sample_auc": two_sample_auc(sim_features, real_features, seed=seed),
        "per_class": target["per_class"], "confusion": target["confusion"],
        "selection": _selection(_checkpoint_scores(fit, data, seed)),
    }
    arrays = {
        "real_probs": real.probs,
        "test_probs": real_test.probs,
        "sim_features": sim_features,
        "real_features": real_features,
    }
    return result, arrays


