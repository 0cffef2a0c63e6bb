"""Which residual family costs the sim-trained classifier what: `sim2real gap`'s setup, one family at a time.

    python benchmarks/gap_families.py [--preset stress | --factor F] [--seeds 0 1] [--threads 1]

For each seed s: CaloCNN trained as in ``sim2real gap`` (30,000 ``nominal`` showers, seed 1000 s + 1,
4 epochs), then tested on 10,000 showers (seed 1000 s + 3) through ``nominal``, through the preset, and
through ``nominal`` plus one residual family at the preset's size. Prints the accuracy drop (points)
and the e+/gamma AUC drop per family and seed. ``--factor F`` replaces the preset by ``nominal`` plus
the realistic residuals at F times their size (``stress`` is F = 2.5; the issue allows 2-3).
"""

from __future__ import annotations

import argparse

import torch

from sim2real_fast import simulate
from sim2real_fast.evaluate.domain_gap import _accuracy, _electron_photon_auc, _scores, _train
from sim2real_fast.simulate import PRESETS
from sim2real_fast.simulate.presets import REALISTIC_RESIDUALS
from sim2real_fast.simulate.effects import RESIDUALS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="stress", choices=["realistic", "dev", "stress"])
    parser.add_argument("--factor", type=float, help="the realistic residuals times this instead of --preset")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nominal, preset = PRESETS["nominal"], PRESETS[args.preset]
    if args.factor is not None:
        preset = nominal.replace(**{name: RESIDUALS[name] + args.factor * (value - RESIDUALS[name])
                                    for name, value in REALISTIC_RESIDUALS.items()})
        args.preset = f"realistic x {args.factor:g}"
    rows = {}
    for seed in args.seeds:
        train = simulate.showers(30_000, effects="nominal", seed=1000 * seed + 1)
        model = _train(train.images, train.labels, train.geometry, epochs=4, batch_size=256, lr=2e-3, seed=seed, bar=None)

        def score(effects) -> tuple[float, float]:
            test = simulate.showers(10_000, effects=effects, seed=1000 * seed + 3)
            logits = _scores(model, test.images)
            return _accuracy(logits, test.labels), _electron_photon_auc(logits, test.labels)

        accuracy, auc = score(nominal)
        cases = {f"all ({args.preset})": preset} | {name: nominal.replace(**{name: getattr(preset, name)})
                                                    for name in RESIDUALS}
        for name, effects in cases.items():
            real_accuracy, real_auc = score(effects)
            rows.setdefault(name, []).append(f"{accuracy - real_accuracy:5.1f} / {auc - real_auc:+.3f}")
    print(f"drop in accuracy points / e+-gamma AUC drop, classifier trained on nominal, seeds {args.seeds}")
    for name, values in rows.items():
        print(f"{name:24s}  " + "   ".join(values))


if __name__ == "__main__":
    main()
