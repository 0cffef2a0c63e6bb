"""Scores of one trained model: the checkpoint the label-free rule picks, classification on sim and real,
the physics scores, the feature-level gap, and what every validator would have picked."""

from __future__ import annotations

import copy

import torch

from ..adapt import FitResult, Domain, validators
from ..evaluate import classification_metrics, feature_mmd, particle_metrics, proxy_a_distance, two_sample_auc
from ..models import Predictions, predict
from .data import RunData

__all__ = ["evaluate_fit"]

_VALIDATION_EVENTS = 5000  # events of each domain the validators see per checkpoint


def _checkpoint_scores(fit: FitResult, sim_val: Domain, data: RunData, seed: int) -> list[dict]:
    """Per checkpoint: its stage/epoch, every validator's score and (for the report only) its real accuracy.

    The validators see the simulated validation events (as the method trained on them) and the
    unlabelled real adaptation events; the real test labels give each checkpoint's accuracy, which
    is reported next to the picks and never used to pick.
    """
    model = copy.deepcopy(fit.model)
    generator = torch.Generator().manual_seed(seed)
    sim_val = sim_val.subset(torch.randperm(len(sim_val), generator=generator)[:_VALIDATION_EVENTS])
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


def _picks(rows: list[dict]) -> dict[str, int]:
    """Checkpoint index per validator, "last", and "oracle" (best real test accuracy: a reference only)."""
    chosen = validators.select([row["scores"] for row in rows])
    best = max(range(len(rows)), key=lambda i: (rows[i]["target_accuracy"], i))
    return {**chosen, "last": len(rows) - 1, "oracle": best}


def evaluate_fit(fit: FitResult, data: RunData, *, seed: int, selection: str = "last",
                 feature_events: int = 4000) -> tuple[dict, dict]:
    """Metrics of the checkpoint of ``fit`` that ``selection`` picks, and the arrays the report needs.

    ``selection``: a validator name or "last" (the final weights); a validator that cannot score
    (all NaN) falls back to the last checkpoint, and ``selected`` says what was used.

    Returns ``(result, arrays)``: ``result`` has target_* (real test set) and source_* (sim validation,
    through the method's source transform) accuracy / f1 / auc, em_accuracy / em_auc / pion_auc on
    real (source_em_* on sim), per_class and confusion on real, a_distance, mmd and two_sample_auc between the sim-validation
    and real-test features, ``target_accuracy_last`` (final weights), ``selected`` (the pick) and
    ``selection`` (every rule's pick with its real accuracy); ``arrays`` has ``real_probs`` (N_real, C)
    for every event of the real file, ``test_probs``, subsamples of the sim and real features ((n, F)
    each) for the embedding plot, and the selected ``state_dict``.
    """
    names = list(data.class_names)
    sim_val = Domain(fit.source_transform(data.sim_val.inputs), data.sim_val.labels, data.sim_val.energy, "sim")
    rows = _checkpoint_scores(fit, sim_val, data, seed)
    picks = _picks(rows)
    used = selection if selection in picks else "last"
    model = copy.deepcopy(fit.model)
    fit.checkpoints[picks[used]].load_into(model)
    sim = predict(model, sim_val.inputs)
    real = predict(model, data.real.inputs)  # every real event once; the test set is its split-1 part
    real_test = Predictions(*(values[data.real_split == 1] for values in real))
    target = classification_metrics(data.real_test.labels, real_test.probs, class_names=names)
    source = classification_metrics(sim_val.labels, sim.probs, class_names=names)
    generator = torch.Generator().manual_seed(seed)
    sim_features = sim.features[torch.randperm(len(sim.features), generator=generator)[:feature_events]]
    real_features = real_test.features[torch.randperm(len(real_test.features), generator=generator)[:feature_events]]
    result = {
        "target_accuracy": target["accuracy"], "target_f1": target["f1"], "target_auc": target["auc"],
        **particle_metrics(data.real_test.labels, real_test.probs, class_names=names),
        "source_accuracy": source["accuracy"], "source_f1": source["f1"], "source_auc": source["auc"],
        **{f"source_{k}": v for k, v in particle_metrics(sim_val.labels, sim.probs, class_names=names).items()},
        "a_distance": proxy_a_distance(sim_features, real_features, seed=seed),
        "mmd": feature_mmd(sim_features, real_features, seed=seed),
        "two_sample_auc": two_sample_auc(sim_features, real_features, seed=seed),
        "per_class": target["per_class"], "confusion": target["confusion"],
        "target_accuracy_last": rows[-1]["target_accuracy"], "n_test": len(data.real_test),
        "selected": {"rule": used, "stage": rows[picks[used]]["stage"], "epoch": rows[picks[used]]["epoch"],
                     "index": picks[used]},
        "selection": {name: {key: rows[i][key] for key in ("stage", "epoch", "target_accuracy")} | {"index": i}
                      for name, i in picks.items()},
    }
    arrays = {
        "real_probs": real.probs,
        "test_probs": real_test.probs,
        "sim_features": sim_features,
        "real_features": real_features,
        "state_dict": model.state_dict(),
    }
    return result, arrays
