"""The files of a finished run: predictions.root, exported models, figures and report.md."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .. import io
from ..models import CaloCNN
from .config import SMOKE_TEST, RunConfig
from .data import RunData
from .runner import MIN_GAP, SCALARS

__all__ = ["table_results", "write_outputs"]

_EMBEDDED_METHODS = 4  # panels of the embedding figure besides source_only


def _predictions(path: Path, arrays: dict[str, dict], data: RunData) -> None:
    """Per event of the real file: its split and, per method, class probabilities and the predicted class."""
    branches = {"split": data.real_split}
    for method, values in arrays.items():
        slug = method.replace("+", "_")
        branches[f"{slug}_score"] = values["real_probs"]
        branches[f"{slug}_pred"] = values["real_probs"].argmax(1).to(torch.int32)
    io.write_results_root(path, branches)


def _export(folder: Path, arrays: dict[str, dict], data: RunData, log) -> dict[str, dict[str, str]]:
    from ..export import export_model

    exported = {}
    example = data.real_test.inputs[:8]
    for method, values in arrays.items():
        model = CaloCNN(data.geometry, n_classes=len(data.class_names))
        model.load_state_dict(values["state_dict"])
        paths = export_model(model.eval(), example, folder, name=method.replace("+", "_"))
        exported[method] = {kind: str(path) for kind, path in paths.items()}
    log(f"exported {len(exported)} models (TorchScript, ONNX) to {folder}")
    return exported


def _figures(folder: Path, results: dict, arrays: dict[str, dict], data: RunData, config: RunConfig) -> dict:
    from .. import report

    folder.mkdir(parents=True, exist_ok=True)
    names = list(data.class_names)
    figures = {}
    path = folder / "roc.png"
    report.plot_roc(path, data.real_test.labels, {m: a["test_probs"] for m, a in arrays.items()}, class_names=names)
    figures["ROC curves on the real test set (one-vs-rest)"] = path
    methods = results["methods"]
    ranked = sorted((m for m in arrays if m not in ("source_only", "target_oracle")),
                    key=lambda m: -(methods[m]["target_accuracy"] or 0.0))[:_EMBEDDED_METHODS]
    shown = [m for m in ("source_only", *ranked) if m in arrays] or list(arrays)[:1]
    path = folder / "embeddings.png"
    report.plot_embeddings(path, {m if m != "source_only" else "source_only (before)":
                                  (arrays[m]["sim_features"], arrays[m]["real_features"]) for m in shown},
                           seed=config.data_seed)
    figures["Features of sim and real events, before (source_only) and after adaptation"] = path
    domains = {"sim": data.sim_val, "real": data.real_test}
    quantities = {name: report.shower_quantities(d.inputs, d.energy, data.geometry) for name, d in domains.items()}
    per_quantity = {q: {domain: values[q] for domain, values in quantities.items()} for q in quantities["sim"]}
    path = folder / "distributions.png"
    report.plot_distributions(path, per_quantity)
    figures["Energy and shower-feature distributions per domain"] = path
    for label, particle in enumerate(names):  # per particle, log scale: the tails are where detectors differ
        chosen = {domain: d.labels == label for domain, d in domains.items()}
        if not all(bool(mask.any()) for mask in chosen.values()):
            continue
        per_particle = {q: {domain: quantities[domain][q][chosen[domain].numpy()] for domain in domains}
                        for q in quantities["sim"]}
        path = folder / f"distributions_{_file_safe(particle)}.png"
        report.plot_distributions(path, per_particle, log_y=True)
        figures[f"Distributions of {particle} showers per domain (log scale)"] = path
    path = folder / "training.png"
    report.plot_training_curves(path, results["histories"])
    figures["Training curves"] = path
    return figures


def _file_safe(name: str) -> str:
    return name.replace("+", "plus").replace("-", "minus").replace("/", "_")


def _unresolved(methods: dict) -> list[str]:
    """A note when gap_recovered is left out, in every run or in some, because target_oracle does not beat
    source_only by :data:`~sim2real_fast.workflow.runner.MIN_GAP` (2 points) of real accuracy."""
    if "target_oracle" not in methods or "source_only" not in methods:
        return []
    rule = f"target_oracle does not beat source_only by {100 * MIN_GAP:.0f} points of real accuracy or more"
    if methods["source_only"].get("gap_recovered") is None:
        low, high = (methods[m].get("target_accuracy") for m in ("source_only", "target_oracle"))
        scores = "" if low is None or high is None else f" ({100 * high:.1f}% vs {100 * low:.1f}%)"
        return [f"gap recovered is left out (–): {rule}{scores}, a gap the run cannot resolve; read the paired "
                "differences instead."]
    runs = methods["source_only"].get("per_seed", [])
    resolved = sum(r.get("gap_recovered") is not None for r in runs)
    if resolved < len(runs):
        return [f"gap recovered is defined in {resolved} of {len(runs)} runs: in the others {rule}; its mean and "
                "spread are over those runs only (a spread of 0 means one run). Read the paired differences as well."]
    return []


#: Why a score can be missing (NaN in a run, null in results.json), by a part of its name; the first match applies.
_WHY_MISSING = {
    "em_": "the events it is scored on have no e+ or no gamma (or the classes are not e+, gamma, pi+)",
    "pion_auc": "the events it is scored on have no pi+ or no e+/gamma (or the classes are not e+, gamma, pi+)",
    "auc": "a class is absent from the events it is scored on (a one-vs-rest AUC needs both groups)",
    "energy_joules": "no energy reading on this machine",
}


def _undefined(value) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def _missing(methods: dict) -> list[str]:
    """A note per score that a method lacks in its mean or in a run (– in the tables, null in results.json),
    and one for undefined per-class scores, saying why."""
    notes = []
    for key in SCALARS:
        lacking = [m for m, entry in methods.items()
                   if _undefined(entry.get(key)) or any(_undefined(r.get(key)) for r in entry.get("per_seed", []))]
        if lacking and key != "gap_recovered":
            why = next((text for part, text in _WHY_MISSING.items() if part in key), "it is undefined (NaN)")
            notes.append(f"{key} is missing (–, null in results.json) for {', '.join(lacking)}: {why}.")
    if any(_undefined(v) for entry in methods.values() for scores in (entry.get("per_class") or {}).values()
           for v in scores.values()):
        notes.append("Per-class scores shown as – (null in results.json): precision of a class a model never "
                     "predicts, recall and AUC of a class absent from the real test set.")
    return notes


def _not_better(methods: dict) -> list[str]:
    """A note for every method that does not beat source_only, or the best trivial baseline, on real accuracy."""
    from ..report import BASELINES

    baseline = methods.get("source_only", {}).get("target_accuracy")
    if baseline is None:
        return []
    trivial = {m: methods[m]["target_accuracy"] for m in BASELINES if methods.get(m, {}).get("target_accuracy")}
    best = max(trivial.items(), key=lambda kv: kv[1], default=None)
    notes = []
    for method, entry in methods.items():
        score = entry.get("target_accuracy")
        if method in ("source_only", "target_oracle", *BASELINES) or score is None:
            continue
        if score <= baseline:
            notes.append(f"{method} does not beat source_only on real accuracy ({100 * score:.1f}% vs "
                         f"{100 * baseline:.1f}%): its alignment or pseudo-labels did not help on this shift; "
                         "see its training curve and its validators' picks above.")
        elif best is not None and score <= best[1]:
            notes.append(f"{method} does not beat the trivial baseline {best[0]} ({100 * score:.1f}% vs "
                         f"{100 * best[1]:.1f}%).")
    return notes


def table_results(results: dict) -> dict:
    """Per method its scores; with several seeds each scalar as {"mean", "std"} (what the report tables show)."""
    several = len(results["config"]["seeds"]) > 1
    table = {}
    for method, entry in results["methods"].items():
        row = dict(entry)
        if several:
            row |= {k: {"mean": v, "std": entry["spread"][k]} for k, v in entry.items()
                    if k in entry["spread"] and v is not None}
        table[method] = row
    return table


def write_outputs(out: Path, results: dict, arrays: dict[str, dict], data: RunData, config: RunConfig,
                  *, log=print) -> dict:
    """Write predictions.root, models/, figures/ and report.md under ``out``; return what was written."""
    from .. import report

    outputs = {"predictions": str(out / "predictions.root")}
    _predictions(out / "predictions.root", arrays, data)
    if config.export:
        outputs["models"] = _export(out / "models", arrays, data, log)
    figures = _figures(out / "figures", results, arrays, data, config)
    outputs["figures"] = {title: str(path) for title, path in figures.items()}
    selection = {m: entry["selection"] for m, entry in results["methods"].items()}
    processes = results["machine"].get("world_size", 1)  # that trained (torchrun)
    report.write_report(
        out / "report.md", title=f"sim2real_fast report ({SMOKE_TEST})" if config.quick else "sim2real_fast report",
        results=table_results(results), figures={t: str(p.relative_to(out)) for t, p in figures.items()},
        config={**results["config"], "class_names": results["class_names"], "device": results["machine"]["device"],
                "gap_threshold": config.gap_alarm_threshold, **({"processes": processes} if processes > 1 else {})},
        selection=selection, alarms=results["alarms"],
        sections={"Paired difference to source_only": report.paired_table(results["methods"]),
                  "Gap decomposition: what the trivial baselines remove": report.gap_decomposition_table(
                      results["methods"])},
        notes=[f"Every score is that of the checkpoint the label-free rule `{config.selection}` picked "
               "(the model selection table lists every rule's pick; `oracle` used the real test labels and is "
               "shown as a reference only). Means and spreads are over detector instances and training seeds.",
               f"Data: sim {data.sim_file}, real {data.real_file} (figures, predictions.root and models: this "
               f"instance, first seed); real events {len(data.real)} ({len(data.real_adapt)} for adaptation, "
               f"labels hidden; {len(data.real_test)} for testing"
               + (f"; {int((data.real_split < 0).sum())} left out for the class fractions "
                  f"{list(config.real_class_fractions)}" if config.real_class_fractions else "") + ").",
               *_unresolved(results["methods"]), *_missing(results["methods"]), *_not_better(results["methods"])],
    )
    outputs["report"] = str(out / "report.md")
    return outputs
