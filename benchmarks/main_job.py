"""The sim-to-real benchmark: `sim2real run` over detector instances and training seeds, with its targets.

    python benchmarks/main_job.py [--cases stress realistic stress-label-shift] [--detector-seeds 0 1 2]
                                  [--seeds 0 1] [--events 20000] [--threads 1] [--methods M ...]
                                  [--work DIR] [--results DIR]

Each case is one ``sim2real run --preset P --detector-seeds ... --seeds ... --no-export`` (a case whose
WORK/<case>/results.json exists is reused: delete it to rerun; an interrupted case resumes). Every
number is that of the checkpoint the run's label-free selection rule picked (the package default,
chosen on `dev` by benchmarks/tune.py); nothing here was tuned on these presets. Writes
benchmarks/main_job/<case>/ (results.json, report.md, figures) and benchmarks/main_job/SUMMARY.md (or
under ``--results DIR``):
per case and method mean ± std over (instance, seed) runs, the paired difference to source_only with
its bootstrap 95% interval and the share of instances won, the gap decomposition, and the targets:

- stress: source_only loses >= 8 points of 3-class accuracy or >= 0.05 of e/gamma AUC from sim to
  real, and the best trivial baseline (mask_cells, rescale_layers) recovers < 50% of the gap;
- the best adaptation method recovers >= 50% of the stress gap in the mean and beats source_only
  in >= 80% of the instances;
- realistic: reported as it is (no target).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from sim2real_fast.report import BASELINES as TRIVIAL

HERE = Path(__file__).resolve().parent / "main_job"

#: case -> extra ``sim2real run`` arguments.
CASES = {
    "stress": ["--preset", "stress"],
    "realistic": ["--preset", "realistic"],
    "stress-label-shift": ["--preset", "stress", "--real-class-fractions", "0.2", "0.2", "0.6"],
}
REFERENCES = ("source_only", "target_oracle")


def _pm(entry: dict, key: str, scale: float = 100.0, decimals: int = 1) -> str:
    value = entry.get(key)
    if value is None:
        return "–"
    return f"{scale * value:.{decimals}f} ± {scale * entry['spread'][key]:.{decimals}f}"


def _interval(entry: dict, key: str = "target_accuracy") -> str:
    d = entry.get("vs_source_only", {}).get(key)
    if not d:
        return "–"
    return f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _resolved(entry: dict) -> int:
    """How many of the method's runs have a gap_recovered (the others' gap is within the test noise)."""
    return sum(r.get("gap_recovered") is not None for r in entry["per_seed"])


def _gap(entry: dict) -> str:
    k, n = _resolved(entry), len(entry["per_seed"])
    if k == 0:
        return "–"
    if k == 1:
        return f"{100 * entry['gap_recovered']:.1f} (1/{n} runs)"
    return _pm(entry, "gap_recovered") + ("" if k == n else f" ({k}/{n} runs)")


def summarise(case: str, results: dict, command: str) -> list[str]:
    methods = results["methods"]
    base, oracle = methods["source_only"], methods.get("target_oracle")
    drop = base["source_accuracy"] - base["target_accuracy"]
    em_drop = (base.get("source_em_auc") or float("nan")) - (base.get("em_auc") or float("nan"))
    config = results["config"]
    runs = len(config["detector_seeds"]) * len(config["seeds"])
    lines = [
        f"### {case}: {len(config['detector_seeds'])} detector instances x {len(config['seeds'])} seeds, "
        f"selection `{config['selection']}`, {results['seconds'] / 60:.0f} min", "", f"`{command}`", "",
        "| method | real accuracy [%] | Δ vs source_only [points] (95% CI) | instances won | gap recovered [%] | "
        "real e/γ AUC | real π/EM AUC | sim accuracy [%] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, entry in methods.items():
        wins = entry.get("vs_source_only", {}).get("target_accuracy", {}).get("wins")
        lines.append(f"| {method} | {_pm(entry, 'target_accuracy')} | {_interval(entry)} | "
                     f"{'–' if wins is None else f'{100 * wins:.0f}%'} | {_gap(entry)} | "
                     f"{_pm(entry, 'em_auc', 1.0, 3)} | {_pm(entry, 'pion_auc', 1.0, 4)} | "
                     f"{_pm(entry, 'source_accuracy')} |")
    trivial = {m: methods[m] for m in TRIVIAL if m in methods}
    adapted = {m: e for m, e in methods.items() if m not in (*REFERENCES, *TRIVIAL)}
    lines += ["", f"source_only: sim {100 * base['source_accuracy']:.1f}% -> real {100 * base['target_accuracy']:.1f}% "
              f"({100 * drop:.1f} points; e/γ AUC {base.get('source_em_auc', float('nan')):.3f} -> "
              f"{base.get('em_auc', float('nan')):.3f}) over {runs} runs."]
    if oracle is None:
        return lines + ["", "- no target_oracle in this run: no gap decomposition and no targets; compare the "
                            "paired differences to source_only", ""]
    gap = oracle["target_accuracy"] - base["target_accuracy"]
    lines += [f"target_oracle {100 * oracle['target_accuracy']:.1f}%; gap (oracle − source_only) {100 * gap:.1f} "
              "points.", ""]
    resolved, runs_total = _resolved(base), len(base["per_seed"])
    if resolved < runs_total:
        lines.append(f"- gap recovered is defined in {resolved} of {runs_total} runs: in the others oracle − source_only "
                     "is within two standard errors of the test set's noise; the means are over those runs only")
    if trivial:
        best_trivial = max(trivial, key=lambda m: trivial[m]["gap_recovered"] or float("-inf"))
        share = trivial[best_trivial]["gap_recovered"]
        lines.append(f"- best trivial baseline: {best_trivial}, {100 * share:.1f}% of the gap")
    if adapted:
        best = max(adapted, key=lambda m: adapted[m]["gap_recovered"] or float("-inf"))
        entry = adapted[best]
        wins = entry.get("vs_source_only", {}).get("target_accuracy", {}).get("wins", float("nan"))
        lines.append(f"- best adaptation method: {best}, {100 * entry['gap_recovered']:.1f}% of the gap, "
                     f"Δ accuracy {_interval(entry)} points, beats source_only in {100 * wins:.0f}% of instances")
    if case == "stress":
        ok_gap = drop >= 0.08 or em_drop >= 0.05
        lines.append(f"- target: source_only loses >= 8 points or >= 0.05 e/γ AUC: {100 * drop:.1f} points, "
                     f"{em_drop:.3f} AUC: {'PASS' if ok_gap else 'FAIL'}")
        if trivial:
            lines.append(f"- target: best trivial baseline < 50% of the gap: {'PASS' if share < 0.5 else 'FAIL'}")
        if adapted:
            ok = entry["gap_recovered"] >= 0.5 and wins >= 0.8
            lines.append(f"- target: best method >= 50% of the gap and wins >= 80% of instances: "
                         f"{'PASS' if ok else 'FAIL'}")
    return lines + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--detector-seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--seeds", nargs="+", default=["0", "1"])
    parser.add_argument("--events", default="20000")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--methods", nargs="+", default=None, help="default: the run's default methods")
    parser.add_argument("--work", type=Path, default=Path("main-job-runs"), help="where the runs write")
    parser.add_argument("--results", type=Path, default=HERE, help="where the summary and reports go")
    args = parser.parse_args()
    sim2real = Path(sys.executable).with_name("sim2real")
    summary = ["# The sim-to-real benchmark", "",
               f"Collected by `python benchmarks/main_job.py --cases {' '.join(args.cases)} --detector-seeds "
               f"{' '.join(args.detector_seeds)} --seeds {' '.join(args.seeds)} --events {args.events} --threads "
               f"{args.threads}{' --methods ' + ' '.join(args.methods) if args.methods else ''}"
               f"{'' if args.results == HERE else f' --results {args.results}'}` on {platform.platform()}. Train times depend on the machine's load.", ""]
    for case in args.cases:
        out = args.work / case
        command = [str(sim2real), "run", *CASES[case], "--detector-seeds", *args.detector_seeds, "--seeds",
                   *args.seeds, "--events", args.events, "--real-events", args.events, "--threads", args.threads,
                   "--no-export", "--out", str(out), *(["--methods", *args.methods] if args.methods else [])]
        shown = "sim2real " + " ".join(command[1:])
        if not (out / "results.json").exists():
            print("+", shown, flush=True)
            subprocess.run(command + (["--resume"] if (out / "run.json").exists() else []), check=True)
        results = json.loads((out / "results.json").read_text())
        target = args.results / case
        shutil.rmtree(target, ignore_errors=True)
        (target / "figures").mkdir(parents=True)
        for name in ("results.json", "report.md"):
            shutil.copy2(out / name, target / name)
        for figure in (out / "figures").glob("*.png"):
            shutil.copy2(figure, target / "figures" / figure.name)
        machine = results["machine"]
        summary += [f"Machine: {machine['processor']}, {machine['cpu_count']} threads, torch {machine['torch']}, "
                    f"{machine['device']}.", ""] + summarise(case, results, shown)
    (args.results / "SUMMARY.md").write_text("\n".join(summary) + "\n")
    print((args.results / "SUMMARY.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
