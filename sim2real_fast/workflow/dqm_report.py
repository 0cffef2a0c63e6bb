"""report.md and figures/ of ``sim2real dqm`` from its results (and, for the figures, the fault task's arrays)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..io._atomic import atomic_path

__all__ = ["fault_rows", "run_rows", "write_report"]

FAULT_HEADER = ["detector", "map AUC [95% CI]", "channel AUC", "false alarms at 90% eff.", "accuracy (6 classes)",
                "fault-type accuracy", "sim map AUC", "train [s]", "energy [J]"]
RUN_HEADER = ["model", "maps", "AUC [95% CI]", "AUC per LS range of the test half", "train [s]"]


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _value(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_number(v)}" for k, v in value.items())
    return _number(value)


def _interval(entry: dict) -> str:
    ci = entry.get("ci95")
    return _number(entry["auc"]) + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")


def fault_rows(faults: dict) -> list[list[str]]:
    """One row per method and baseline of the fault task."""
    rows = []
    for kind, entries in (("method", faults["methods"]), ("baseline", faults["baselines"])):
        for name, r in entries.items():
            fa = r["false_alarm"]
            label = name if kind == "method" else f"{name} (no training)"
            if name == faults["label_free_pick"]["method"] and kind == "method":
                label += " (label-free pick)"
            rows.append([label, _interval(r["map"]), _number((r["channel"] or {}).get("auc"), 4),
                         f"{_number(fa['rate'])} ({fa['n_alarms']}/{fa['n_good']})",
                         _number(r.get("accuracy")), _number(r.get("type_accuracy")), _number(r.get("sim_map_auc")),
                         _number(r.get("train_seconds"), 0), _number(r.get("energy_joules"), 0)])
    return rows


def run_rows(run: dict) -> list[list[str]]:
    """One row per (model, normalisation) of the run task."""
    rows = []
    for model, per_how in run.items():
        for how, r in per_how.items():
            curve = ", ".join(f"LS {p['ls'][0]}-{p['ls'][1]}: {_number(p['auc'])}" for p in r["by_ls"])
            rows.append([model, how, _interval(r), curve, _number(r["train_seconds"], 0)])
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _figures(out: Path, results: dict, extra: dict | None) -> dict[str, str]:
    from ..report import dqm_plots

    folder = out / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    if extra is not None:
        data, arrays = extra["data"], extra["arrays"]
        dqm_plots.plot_occupancy(folder / "occupancy.png", data.mean_sim, data.mean_real)
        figures["Mean occupancy of good maps per depth, sim vs real"] = "figures/occupancy.png"
        scores = {m: a["scores"] for m, a in arrays.items()}
        scores |= {f"{name} (no training)": s.maps for name, s in data.baselines.items()}
        dqm_plots.plot_fault_roc(folder / "roc_faults.png", data.real_test.labels, scores)
        figures["ROC curves of the fault detectors on the real test maps"] = "figures/roc_faults.png"
        from ..dqm import FAULTS

        shown = extra["shown"]
        if len(shown):
            pick = results["faults"]["label_free_pick"]["method"]
            names = {v: k for k, v in FAULTS.items()}
            dqm_plots.plot_anomaly_maps(
                folder / "anomaly_maps.png", data.channel_labels[shown],
                {f"{pick} channel scores": arrays[pick]["shown_channels"],
                 "z-score (no training)": data.baselines["zscore"].channels[shown]},
                [names[int(k)] for k in data.real_test.labels[shown]])
            figures["Per-channel anomaly maps of a few faulty real test maps"] = "figures/anomaly_maps.png"
    if "run" in results:
        curves = {f"{m} {how}": r["by_ls"] for m, per_how in results["run"].items() for how, r in per_how.items()}
        dqm_plots.plot_run_robustness(folder / "run_robustness.png", curves)
        figures["Run classification AUC per LS range (robustness)"] = "figures/run_robustness.png"
    return figures


def write_report(out: Path, results: dict, extra: dict | None) -> None:
    """report.md with the tables, the targets and the figures."""
    lines = [f"# sim2real dqm ({results['seconds']:.0f} s, {results['machine']['threads']} threads, "
             f"torch {results['machine']['torch']})", ""]
    if results["config"]["sim_maps"] < 1000:
        lines += ["**A smoke test (small sizes, e.g. --quick): not a measurement.**", ""]
    faults = results.get("faults")
    if faults is not None:
        d = faults["data"]
        lines += ["## Fault detection, trained on simulation, tested on real maps", "",
                  f"Real domain: {d['real']}. Detector: {faults['model']} on `{d['input']}` inputs. Test: "
                  f"{d['real_test_good']} untouched real maps (the false-alarm set) and {d['real_test_faulty']} with "
                  f"an injected fault ({d['fault_draws_per_test_ls']} draw(s) per test LS, {d['folds']} fold(s)); "
                  f"{d['real_adapt']} unlabelled real maps for adaptation (faults from other seeds); "
                  f"{d['sim_train']} + {d['sim_val']} labelled simulated maps for training and validation.",
                  "", "Every learned score is that of the checkpoint the label-free rule `im` picked; the "
                  "label-free pick among the methods is the one with the best `im`; the test labels choose "
                  f"nothing (the best by test map AUC, for reference only: {faults['best_by_test_auc']}).", ""]
        lines += _table(FAULT_HEADER, fault_rows(faults)) + [""]
        lines += ["Targets for the label-free pick:", ""]
        lines += [f"- {name}: {'met' if t['met'] else 'NOT met'} ({_value(t['value'])})"
                  for name, t in faults["targets"].items()]
        lines += [""]
    if "run" in results:
        runs = next(iter(next(iter(results["run"].values())).values()))["data"]["runs"]
        what = (f"run A (simulated) against the real run in {runs[1]}: with a real file the task asks whether a "
                "classifier tells simulation from data, and how much of that is intensity"
                if results.get("real") else "two simulated runs (`simulate.dqm.RUNS`): B records 2/3 of A's events per LS and sees 5% less pile-up")
        lines += ["## Run classification", "",
                  f"Classes: {what}. Trained on the first half of each run's LS, tested on the second half. `raw`: "
                  "counts; `events`: per-LS normalised by the LS's event count, which removes intensity but not "
                  "the pile-up-driven occupancy.", ""]
        lines += _table(RUN_HEADER, run_rows(results["run"])) + [""]
    figures = _figures(out, results, extra)
    lines += ["## Figures", ""] + [f"![{title}]({path})\n\n{title}\n" for title, path in figures.items()]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
