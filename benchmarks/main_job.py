"""The main job's targets: `sim2real run` with 3 seeds on the default preset and on a second shift.

    python benchmarks/main_job.py [--presets default severe] [--seeds 0 1 2] [--work DIR]

runs ``sim2real run --preset P --seeds ... --no-export --out WORK/P`` for each preset (skipping a preset
whose WORK/P/results.json exists: delete it to rerun), copies results.json, report.md and figures/ to
benchmarks/main_job/P/, and writes benchmarks/main_job/SUMMARY.md: per preset and method the real
accuracy and gap recovered (mean ± std over seeds), the sim-to-real drop of source_only, and the
issue's targets (drop >= 15 points, best method >= 70% of the gap, every method above source_only).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "main_job"


def _pm(entry: dict, key: str, scale: float = 100.0) -> str:
    value = entry.get(key)
    if value is None:
        return "–"
    return f"{scale * value:.1f} ± {scale * entry['spread'][key]:.1f}"


def summarise(preset: str, results: dict) -> list[str]:
    methods = results["methods"]
    base = methods["source_only"]
    drop = base["source_accuracy"] - base["target_accuracy"]
    adapted = {m: e for m, e in methods.items() if m not in ("source_only", "target_oracle")}
    best = max(adapted, key=lambda m: adapted[m]["gap_recovered"] or float("-inf"))
    below = [m for m, e in adapted.items() if e["target_accuracy"] <= base["target_accuracy"]]
    seeds = results["config"]["seeds"]
    lines = [
        f"### preset `{preset}`: {len(seeds)} seed(s) {seeds}, {results['seconds'] / 60:.1f} min",
        "",
        f"`sim2real run --preset {preset} --seeds {' '.join(map(str, seeds))} --no-export`"
        + (f" (threads {results['config']['threads']})" if results["config"]["threads"] else ""),
        "",
        "| method | real accuracy [%] | sim accuracy [%] | gap recovered [%] | A-distance | train time [s] |",
        "|---|---|---|---|---|---|",
    ]
    for method, entry in methods.items():
        lines.append(f"| {method} | {_pm(entry, 'target_accuracy')} | {_pm(entry, 'source_accuracy')} | "
                     f"{_pm(entry, 'gap_recovered')} | {_pm(entry, 'a_distance', 1.0)} | "
                     f"{_pm(entry, 'train_seconds', 1.0)} |")
    lines += [
        "",
        f"- source_only loses {100 * drop:.1f} points from sim to real (target >= 15): "
        f"{'PASS' if drop >= 0.15 else 'FAIL'}",
        f"- best method {best} recovers {100 * adapted[best]['gap_recovered']:.1f}% of the gap (target >= 70%): "
        f"{'PASS' if adapted[best]['gap_recovered'] >= 0.7 else 'FAIL'}",
        "- every method beats source_only on real accuracy: "
        + ("PASS" if not below else "FAIL (" + ", ".join(below) + ")"),
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["default", "severe"])
    parser.add_argument("--seeds", nargs="+", default=["0", "1", "2"])
    parser.add_argument("--work", type=Path, default=Path("main-job-runs"), help="where the runs write")
    args = parser.parse_args()
    sim2real = Path(sys.executable).with_name("sim2real")
    summary = ["# The main job across seeds and shifts", "",
               f"Collected by `python benchmarks/main_job.py --presets {' '.join(args.presets)}` on "
               f"{platform.platform()}. Train times depend on the machine's load while it ran.", ""]
    for preset in args.presets:
        out = args.work / preset
        if not (out / "results.json").exists():
            command = [str(sim2real), "run", "--preset", preset, "--seeds", *args.seeds, "--no-export", "--out", str(out)]
            print("+", " ".join(command), flush=True)
            subprocess.run(command, check=True)
        results = json.loads((out / "results.json").read_text())
        target = HERE / preset
        shutil.rmtree(target, ignore_errors=True)
        (target / "figures").mkdir(parents=True)
        for name in ("results.json", "report.md"):
            shutil.copy2(out / name, target / name)
        for figure in (out / "figures").glob("*.png"):
            shutil.copy2(figure, target / "figures" / figure.name)
        machine = results["machine"]
        summary += [f"Machine: {machine['processor']}, {machine['cpu_count']} threads, torch {machine['torch']}, "
                    f"{machine['device']}.", ""] + summarise(preset, results)
    (HERE / "SUMMARY.md").write_text("\n".join(summary) + "\n")
    print((HERE / "SUMMARY.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
