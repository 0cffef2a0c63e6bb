"""The speed targets of translation and generation on saved models, at a given thread count.

    python benchmarks/speed.py [--threads 2] [--generators G.pt ...] [--translator T.pt --input FILE]
                               [--train-sim FILE --train-real FILE [--method cyclegan]] [--repeats 3]

- generators: ``sample(100_000)`` in memory (float32, batched), showers/s, ``--repeats`` times after a warm-up;
- translator: ``translate`` in memory and ``translate apply`` (the command's function, --input ROOT to ROOT)
  on every shower of --input, showers/s;
- training: ``sim2real translate train --method M`` (default settings) on --train-sim and --train-real,
  minutes.

The models come from benchmarks/generation.py and benchmarks/translation.py (their work folders).
Prints one line per measurement; measure on a quiet machine, and again with a busy co-tenant.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from sim2real_fast import generate, io, translate
from sim2real_fast.workflow import translation


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--generators", nargs="*", type=Path, default=[])
    parser.add_argument("--translator", type=Path, default=None)
    parser.add_argument("--input", type=Path, default=None)
    parser.add_argument("--train-sim", type=Path, default=None)
    parser.add_argument("--train-real", type=Path, default=None)
    parser.add_argument("--method", default="cyclegan")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, torch {torch.__version__}")
    for path in args.generators:
        model = generate.load(path)
        model.sample(1_000, seed=7)
        rates = []
        for k in range(args.repeats):
            started = time.perf_counter()
            model.sample(100_000, seed=8 + k)
            rates.append(100_000 / (time.perf_counter() - started))
        print(f"{model.name} ({path}): sample {', '.join(f'{r:,.0f}' for r in rates)} showers/s")
    if args.translator is not None:
        model = translate.load(args.translator)
        showers = io.read_showers(args.input).images
        model.translate(showers[:500])
        started = time.perf_counter()
        model.translate(showers)
        memory = len(showers) / (time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            n = translation.apply(args.translator, input_file=args.input, output_file=Path(folder) / "out.root",
                                  progress=False)
            applied = n / (time.perf_counter() - started)
        print(f"{model.name} ({args.translator}): translate in memory {memory:,.0f} showers/s, "
              f"apply ROOT to ROOT {applied:,.0f} showers/s ({n} showers)")
    if args.train_sim is not None:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            translation.train(args.method, out=folder, sim=args.train_sim, real=args.train_real, progress=False)
            minutes = (time.perf_counter() - started) / 60
        print(f"{args.method}: train on {args.train_sim} + {args.train_real} in {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
