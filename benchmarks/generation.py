"""The generation benchmark: every generator trained at its defaults, judged as the CaloChallenge judges.

    python benchmarks/generation.py [--models vae flow-vae] [--events N] [--eval-events 20000]
                                    [--threads 2] [--work DIR]

Per generator: ``sim2real generate train`` at its defaults (:func:`sim2real_fast.workflow.generation.train`,
a simulated nominal CaloGAN training set of e+, gamma, pi+ at 1-100 GeV, seed 0, early stopping on its
own validation split), timed; sampling speed, ``sample(100_000)`` in memory (float32, batched) at
``--threads``; then ``--eval-events`` generated showers against a reference the generator never saw
(the simulator at seed 101) with the floor (the simulator at seed 102 against the same reference), by
:func:`sim2real_fast.evaluate.evaluate_generation`. Nothing is chosen on these numbers. Writes
benchmarks/generation/SUMMARY.md, results.json and one report folder per generator.

Targets (issue 12): sampling >= 50,000 showers/s on 2 CPU cores; the best model's high-level classifier
AUC <= 0.70 and low-level <= 0.85, KS of E_total / E_incident <= 0.03, sparsity per layer within 1 point,
FPD within 10x the floor; training <= 15 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from sim2real_fast import generate, simulate
from sim2real_fast.evaluate import evaluate_generation, write_generation_report
from sim2real_fast.workflow import generation

HERE = Path(__file__).resolve().parent / "generation"
GEOMETRY = "calogan"
RATIO = "total_over_incident"


def _one(model: str, args: argparse.Namespace, reference, floor) -> dict:
    out = args.work / model
    path = out / "model.pt"
    if not path.exists():  # a killed run resumes from its checkpoints
        started = time.perf_counter()
        generation.train(model, out=out, geometry=GEOMETRY, events=args.events, seed=0,
                         resume=(out / "checkpoints").exists(), progress=False)
        (out / "train_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    train_minutes = float((out / "train_seconds.txt").read_text()) / 60
    generator = generate.load(path)
    generator.sample(1_000, seed=7)  # warm-up
    started = time.perf_counter()
    generator.sample(100_000, seed=8)
    rate = 100_000 / (time.perf_counter() - started)
    generated = generator.sample(args.eval_events, energy=(1.0, 100.0), seed=1)
    results = evaluate_generation(generated, reference, geometry=GEOMETRY, floor=floor, seed=0)
    write_generation_report(results, HERE / model, generated=generated, reference=reference, geometry=GEOMETRY,
                            floor=floor)
    sparsity = {c: [100 * abs(s - r) for s, r in zip(results["sparsity"][c]["sample"]["mean"],
                                                       results["sparsity"][c]["reference"]["mean"])]
                for c in ("generated", "floor")}
    return {
        "train_minutes": train_minutes, "best_epoch": generator.best_epoch, "epochs": len(generator.history),
        "sample_per_s": rate,
        **{f"auc_{kind}_{c}": results["classifier"][kind][c]["auc"] for kind in ("features", "cells")
           for c in ("generated", "floor")},
        **{f"jsd_{kind}_{c}": results["classifier"][kind][c]["jsd"] for kind in ("features", "cells")
           for c in ("generated", "floor")},
        **{f"ks_ratio_{c}": results["features"][c][RATIO]["ks"] for c in ("generated", "floor")},
        **{f"sparsity_points_{c}": max(sparsity[c]) for c in ("generated", "floor")},
        **{f"fpd_{c}": results["fpd"][c]["value"] for c in ("generated", "floor")},
        **{f"fpd_error_{c}": results["fpd"][c]["error"] for c in ("generated", "floor")},
        **{f"kpd_{c}": results["kpd"][c]["value"] for c in ("generated", "floor")},
        "separation_mean_generated": sum(f["separation_power"] for f in results["features"]["generated"].values())
        / len(results["features"]["generated"]),
        "separation_mean_floor": sum(f["separation_power"] for f in results["features"]["floor"].values())
        / len(results["features"]["floor"]),
    }


def _verdicts(name: str, r: dict) -> list[tuple[str, bool]]:
    return [
        ("sampling >= 50,000 showers/s", r["sample_per_s"] >= 50_000),
        ("high-level AUC <= 0.70", r["auc_features_generated"] <= 0.70),
        ("low-level AUC <= 0.85", r["auc_cells_generated"] <= 0.85),
        ("KS of E_total / E_inc <= 0.03", r["ks_ratio_generated"] <= 0.03),
        ("sparsity per layer within 1 point", r["sparsity_points_generated"] <= 1.0),
        ("FPD within 10x the floor", r["fpd_generated"] <= 10 * max(r["fpd_floor"], r["fpd_error_floor"])),
        ("training <= 15 min", r["train_minutes"] <= 15),
    ]


def _summary(results: dict, args: argparse.Namespace, minutes: float) -> list[str]:
    lines = ["# Generation benchmark (CaloGAN, e+ gamma pi+, 1-100 GeV)", "",
             f"`python benchmarks/generation.py --models {' '.join(args.models)} --eval-events {args.eval_events} "
             f"--threads {args.threads}{'' if args.events is None else f' --events {args.events}'}` on "
             f"{platform.platform()}, torch {torch.__version__}, {minutes:.0f} min. Each value: generated vs the "
             "reference (simulator seed 101), and in brackets the floor (simulator seed 102 vs the same "
             "reference).", "",
             "| generator | train [min] (epochs, best) | sample [showers/s] | AUC features | AUC cells | "
             "JSD features | JSD cells | KS E_tot/E_inc | max sparsity diff [points] | FPD x 10^3 | "
             "mean separation power |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def pair(r, key, scale=1.0, digits=3):
        return f"{scale * r[key + '_generated']:.{digits}f} ({scale * r[key + '_floor']:.{digits}f})"

    for name, r in results.items():
        lines.append(f"| {name} | {r['train_minutes']:.1f} ({r['epochs']}, {r['best_epoch']}) | "
                     f"{r['sample_per_s']:,.0f} | {pair(r, 'auc_features')} | {pair(r, 'auc_cells')} | "
                     f"{pair(r, 'jsd_features')} | {pair(r, 'jsd_cells')} | {pair(r, 'ks_ratio')} | "
                     f"{pair(r, 'sparsity_points', digits=2)} | {pair(r, 'fpd', 1e3, 2)} | "
                     f"{pair(r, 'separation_mean')} |")
    lines += ["", "Targets (issue 12), per generator:"]
    for name, r in results.items():
        marks = ", ".join(f"{text}: **{'PASS' if ok else 'FAIL'}**" for text, ok in _verdicts(name, r))
        lines.append(f"- {name}: {marks}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vae", "flow-vae"])
    parser.add_argument("--events", type=int, default=None, help="training showers (default: the command's)")
    parser.add_argument("--eval-events", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("generation-runs"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    reference = simulate.showers(args.eval_events, effects="nominal", seed=101)
    floor = simulate.showers(args.eval_events, effects="nominal", seed=102)
    results = {}
    for model in args.models:
        print(f"+ {model}", flush=True)
        results[model] = _one(model, args, reference, floor)
    lines = _summary(results, args, (time.perf_counter() - started) / 60)
    HERE.mkdir(exist_ok=True)
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (HERE / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
