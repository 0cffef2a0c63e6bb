"""The DQM benchmark: ``sim2real dqm`` at its defaults over seeds, on the simulated real domain and on a real file.

    python benchmarks/dqm.py [--seeds 0 1 2] [--real ../shared/data/hcal/hcal_dqm_run306138_10ls.hdf5]
                             [--threads 2] [--work DIR]

Per seed: :func:`sim2real_fast.workflow.dqm.run_dqm` with the default :class:`DQMConfig` (both tasks) on
the simulated real domain, then the fault task on the real file (run 306138 with faults injected, 20
draws per LS; tests only, the file carries no licence) if it exists. The seed changes the simulated
maps, the fault draws and the training. Nothing is chosen on these numbers: the checkpoint is the
``im`` rule's, the reported method the label-free pick. Writes benchmarks/dqm/SUMMARY.md (mean ± std
over seeds, and the counts behind each figure), results.json, and the report and figures of seed 0 per case.

Targets (issue 13): on real maps with injected faults the best method's per-map AUC >= 0.95, channel
AUC >= 0.90, false alarms <= 1% of untouched real maps at 90% efficiency, and the best learned method
beats both training-free baselines (or the README says it does not); run classification AUC with
per-LS normalisation next to the raw one, with the robustness curve; ``sim2real dqm`` with defaults
<= 10 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sim2real_fast.workflow.dqm import DQMConfig, run_dqm

HERE = Path(__file__).resolve().parent / "dqm"
DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "hcal" / "hcal_dqm_run306138_10ls.hdf5"


def _pm(values: list, digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def _fault_table(runs: list[dict]) -> list[str]:
    faults = [r["faults"] for r in runs]
    d = faults[0]["data"]
    lines = [f"Test maps per seed: {d['real_test_good']} untouched real maps, {d['real_test_faulty']} with a fault "
             f"({d['fault_draws_per_test_ls']} draw(s) per test LS); channels per seed: "
             f"{faults[0]['methods'][next(iter(faults[0]['methods']))]['channel']['n_touched']} touched (seed 0). "
             f"Label-free picks: {', '.join(f['label_free_pick']['method'] for f in faults)}.", "",
             "| detector | map AUC | channel AUC | false alarms at 90% eff. | 6-class accuracy | sim map AUC | train [s] |",
             "|---|---|---|---|---|---|---|"]
    for kind in ("methods", "baselines"):
        for name in faults[0][kind]:
            rows = [f[kind][name] for f in faults]
            lines.append(f"| {name}{'' if kind == 'methods' else ' (no training)'} | "
                         f"{_pm([r['map']['auc'] for r in rows])} | {_pm([r['channel']['auc'] for r in rows], 4)} | "
                         f"{_pm([r['false_alarm']['rate'] for r in rows])} | {_pm([r.get('accuracy') for r in rows])} | "
                         f"{_pm([r.get('sim_map_auc') for r in rows])} | {_pm([r.get('train_seconds') for r in rows], 0)} |")
    picks = [f["methods"][f["label_free_pick"]["method"]] for f in faults]
    lines += ["", f"Label-free pick, per seed: map AUC {_pm([p['map']['auc'] for p in picks])}, channel AUC "
              f"{_pm([p['channel']['auc'] for p in picks], 4)}, false alarms {_pm([p['false_alarm']['rate'] for p in picks])}."]
    for target in faults[0]["targets"]:
        met = [f["targets"][target]["met"] for f in faults]
        lines.append(f"- target {target}: met in {sum(met)}/{len(met)} seeds")
    return lines


def _run_table(runs: list[dict]) -> list[str]:
    lines = ["| model | maps | AUC, test half | AUC per LS range (mean over seeds) |", "|---|---|---|---|"]
    for model, per_how in runs[0]["run"].items():
        for how in per_how:
            rows = [r["run"][model][how] for r in runs]
            bins = [f"LS {b['ls'][0]}-{b['ls'][1]}: {_pm([r['by_ls'][i]['auc'] for r in rows])}"
                    for i, b in enumerate(rows[0]["by_ls"])]
            lines.append(f"| {model} | {how} | {_pm([r['auc'] for r in rows])} | {'; '.join(bins)} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("benchmark-dqm"))
    args = parser.parse_args()
    cases = {"simulated": None} | ({"run306138": args.real} if args.real.exists() else {})
    results: dict = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                                 "threads": args.threads, "torch": torch.__version__}, "cases": {}}
    for case, real in cases.items():
        runs = []
        for seed in args.seeds:
            config = DQMConfig(task="both" if real is None else "faults", seed=seed, threads=args.threads)
            out = args.work / f"{case}-seed{seed}"
            started = time.perf_counter()
            run = run_dqm(config, out=out, real=real, resume=(out / "dqm.json").exists(), log=lambda text: None)
            run["wall_seconds"] = time.perf_counter() - started
            runs.append(run)
            print(f"{case} seed {seed}: {run['wall_seconds']:.0f} s", flush=True)
        results["cases"][case] = runs
        shutil.rmtree(HERE / case, ignore_errors=True)
        (HERE / case).mkdir(parents=True)
        shutil.copy(args.work / f"{case}-seed{args.seeds[0]}" / "report.md", HERE / case / "report.md")
        shutil.copytree(args.work / f"{case}-seed{args.seeds[0]}" / "figures", HERE / case / "figures")
    lines = ["# DQM benchmark", "", f"`python benchmarks/dqm.py --seeds {' '.join(map(str, args.seeds))} "
             f"--threads {args.threads}`; {platform.processor() or platform.machine()}, torch {torch.__version__}. "
             "Mean ± std over seeds; nothing chosen on these numbers.", ""]
    for case, runs in results["cases"].items():
        lines += [f"## Fault detection, real domain: {runs[0]['faults']['data']['real']}", "",
                  *_fault_table(runs), "",
                  f"`sim2real dqm` wall time per seed: {_pm([r['wall_seconds'] for r in runs], 0)} s "
                  f"({'both tasks' if 'run' in runs[0] else 'fault task only'}).", ""]
        if "run" in runs[0]:
            lines += ["## Run classification (two simulated runs)", "", *_run_table(runs), ""]
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / "SUMMARY.md").write_text("\n".join(lines) + "\n")
    (HERE / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
