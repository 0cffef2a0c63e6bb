"""The training-free DQM baselines on the real HCAL file with injected faults (issue 13, nothing tuned).

    python benchmarks/dqm_baselines.py [--file ../shared/data/hcal/hcal_dqm_run306138_10ls.hdf5] [--seeds 20]

The file's 10 RecHitTask lumi-sections (LS) are split into a reference half and a test half, both
ways (two folds), by two rules: interleaved (even / odd LS) and contiguous (LS 0-4 / 5-9, across the
run's luminosity step). The untouched test LS are the good maps (each LS scored once, against the
reference that excludes it); every test LS also gets a fault injected (``dqm.inject_faults``,
``fault_fraction=1``) with seeds 0 .. --seeds-1. Prints, per split and baseline (``dqm.ratio_scores``,
``dqm.zscore_scores``, map score = max over channels): the per-map AUC, the channel-level AUC, the
false-alarm rate on good maps at 90% fault efficiency and the per-fault-type AUC, with the counts
behind each. With 10 good maps the false-alarm rate moves in steps of 10%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sim2real_fast import dqm, io

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "hcal" / "hcal_dqm_run306138_10ls.hdf5"
SPLITS = {
    "interleaved": [([0, 2, 4, 6, 8], [1, 3, 5, 7, 9]), ([1, 3, 5, 7, 9], [0, 2, 4, 6, 8])],
    "contiguous": [([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]), ([5, 6, 7, 8, 9], [0, 1, 2, 3, 4])],
}


def measure(real: torch.Tensor, baseline, folds, seeds: int) -> dict:
    maps, channels, labels, touched, active = [], [], [], [], []
    for ref_ls, test_ls in folds:
        reference = dqm.build_reference(real[ref_ls])
        mask = reference.active.expand(len(test_ls), -1)
        good = baseline(real[test_ls], reference)
        maps.append(good.maps), channels.append(good.channels), active.append(mask)
        labels.append(torch.zeros(len(test_ls), dtype=torch.long))
        touched.append(torch.zeros(len(test_ls), real.shape[1], dtype=torch.bool))
        for seed in range(seeds):
            out = dqm.inject_faults(real[test_ls], fault_fraction=1.0, seed=seed)
            scores = baseline(out.maps, reference, events=out.events)
            maps.append(scores.maps), channels.append(scores.channels), active.append(mask)
            labels.append(out.labels), touched.append(out.channel_labels)
    return dqm.detection_metrics(torch.cat(maps), torch.cat(labels), channel_scores=torch.cat(channels),
                                 channel_labels=torch.cat(touched), active=torch.cat(active))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    real = io.read_hcal_dqm(args.file).maps
    print("| split | baseline | map AUC (faulty / good maps) | channel AUC (touched / untouched) | false alarms at 90% "
          "efficiency | per-fault AUC |\n|---|---|---|---|---|---|")
    for split, folds in SPLITS.items():
        for name, baseline in (("ratio", dqm.ratio_scores), ("z-score", dqm.zscore_scores)):
            m = measure(real, baseline, folds, args.seeds)
            per = ", ".join(f"{k} {v['auc']:.2f} ({v['n_faulty']})" for k, v in m["per_fault"].items())
            print(f"| {split} | {name} | {m['map']['auc']:.3f} ({m['map']['n_faulty']} / {m['map']['n_good']}) | "
                  f"{m['channel']['auc']:.4f} ({m['channel']['n_touched']} / {m['channel']['n_untouched']}) | "
                  f"{m['false_alarm']['rate']:.2f} ({m['false_alarm']['n_alarms']} / {m['false_alarm']['n_good']}) | {per} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
