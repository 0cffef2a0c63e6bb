"""Tune the adaptation hyper-parameters and the label-free selection rule on the `dev` detector only.

    python benchmarks/tune.py [--events 20000] [--seeds 0] [--work DIR] [--threads 1]

`dev` is a realistic detector instance of its own with its own events (``data_seed`` 100: sim and real
events, splits); the test presets (`realistic`, `stress`) and their instances are never simulated here.
Each hyper-parameter of the grid is varied for the method it belongs to (the others keep their
defaults); every run scores its checkpoints on dev's labelled real validation split (the run's real
test split of dev: its labels are dev's, never a test preset's). The script picks

- the selection rule (a validator or "last") whose picks have the best mean dev validation accuracy
  over every adaptation method and value run, and
- per hyper-parameter the value with the best mean dev validation accuracy of that rule's picks,

and writes benchmarks/tuning/RESULTS.md (every value's score and the choices) and chosen.yaml (the
values, in the YAML form of ``sim2real run --config``). The package defaults are these choices.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from sim2real_fast import workflow
from sim2real_fast.adapt import AdaptConfig
from sim2real_fast.workflow.config import SELECTIONS

HERE = Path(__file__).resolve().parent / "tuning"

#: method -> (AdaptConfig field, values tried).
GRID = {
    "dann": ("dann_weight", (0.3, 1.0, 3.0)),
    "coral": ("coral_weight", (10.0, 30.0, 100.0, 300.0)),
    "mmd": ("mmd_weight", (1.0, 3.0, 10.0)),
    "pseudo_label": ("pseudo_threshold", (0.8, 0.9, 0.95)),
    "mask_cells": ("mask_occupancy", (0.005, 0.02, 0.05)),
}
#: Methods without a grid, run once for the selection rule and as references.
REFERENCES = ("source_only", "target_oracle", "rescale_layers", "few_shot", "domain_randomization")


def _runs(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "methods").glob("*/result.json"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=Path("tuning-runs"), help="where the runs write")
    args = parser.parse_args()
    started = time.perf_counter()
    base = dict(preset="dev", data_seed=100, events=args.events, real_events=args.events, seeds=tuple(args.seeds),
                threads=args.threads, export=False, selection="last")
    defaults = AdaptConfig()
    plan = [(m, None, None) for m in REFERENCES] + [(m, f, v) for m, (f, values) in GRID.items() for v in values]
    scores: dict[tuple, dict[str, list[float]]] = {}
    for method, field, value in plan:
        name = method if field is None else f"{method}-{field}-{value:g}"
        adapt = defaults if field is None else defaults.replace(**{field: value})
        out = args.work / name
        config = workflow.RunConfig(out=str(out), methods=(method,), adapt=adapt, **base)
        print(f"+ {name}", flush=True)
        workflow.run(config, resume=True, progress=False, log=lambda text: None)
        picks: dict[str, list[float]] = {}
        for run in _runs(out):
            for rule, pick in run["selection"].items():
                picks.setdefault(rule, []).append(pick["target_accuracy"])
        scores[(method, field, value)] = picks
    rules = [r for r in SELECTIONS if all(r in p for p in scores.values())]
    by_rule = {r: statistics.fmean(statistics.fmean(p[r]) for k, p in scores.items()
                                   if k[0] not in ("source_only", "target_oracle")) for r in rules}
    rule = max(by_rule, key=by_rule.get)
    chosen = {}
    for method, (field, values) in GRID.items():
        mean = {v: statistics.fmean(scores[(method, field, v)][rule]) for v in values}
        chosen[field] = max(mean, key=mean.get)
    lines = ["# Tuning on the `dev` detector", "",
             f"`python benchmarks/tune.py --events {args.events} --seeds {' '.join(map(str, args.seeds))} "
             f"--threads {args.threads}` on {platform.platform()}, torch {torch.__version__}, "
             f"{(time.perf_counter() - started) / 60:.0f} min. Dev validation accuracy [%] of the checkpoint each "
             "rule picks (mean over seeds); `oracle` is the best checkpoint by the dev validation labels (a "
             "reference, never a rule).", "",
             "| method | " + " | ".join([*rules, "oracle"]) + " |", "|---" * (len(rules) + 2) + "|"]
    for (method, field, value), picks in scores.items():
        label = method if field is None else f"{method}, {field} = {value:g}"
        lines.append(f"| {label} | " + " | ".join(f"{100 * statistics.fmean(picks[r]):.1f}"
                                                 for r in [*rules, "oracle"]) + " |")
    lines += ["", "Mean over the adaptation methods and values (not the references): "
              + ", ".join(f"{r} {100 * v:.1f}%" for r, v in by_rule.items()) + f". Chosen rule: **{rule}**.", "",
              "Chosen values (by that rule's picks): " + ", ".join(f"{k} = {v:g}" for k, v in chosen.items()) + "."]
    HERE.mkdir(exist_ok=True)
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    (HERE / "chosen.yaml").write_text(f"selection: {rule}\nadapt:\n"
                                      + "".join(f"  {k}: {v}\n" for k, v in chosen.items()))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
