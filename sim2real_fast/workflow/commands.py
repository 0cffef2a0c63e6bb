"""The ``sim2real run``, ``train``, ``adapt`` and ``evaluate`` subcommands (registered by :mod:`sim2real_fast.cli`).

    sim2real run [--out DIR] [--sim FILE --real FILE --geometry NAME] [--methods M ...] [--config FILE]
                 [--preset P] [--detector-seeds S ...] [--seeds S ...] [--real-class-fractions F ...]
                 [--selection RULE] [--events N] [--real-events N] [--epochs E] [--threads T]
                 [--quick] [--resume] [--no-export]

With no arguments: simulates the default domains (the nominal simulation and one instance of the
realistic real detector), trains the baseline and every method, scores the checkpoint the label-free
selection rule picks on real events and writes results.json, report.md (with figures),
predictions.root, checkpoints and exported models to DIR (sim2real-run).
Options are taken from the defaults, then the --config YAML file, then --quick, then the flags.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import _one_line

__all__ = ["add_commands"]


def _run_config(args: argparse.Namespace):
    from ..adapt import AdaptConfig
    from .config import QUICK, RunConfig

    description: dict = {}
    if args.config is not None:
        description = RunConfig.from_yaml(args.config).to_dict()
    if args.quick:
        description = {**description, **{k: v for k, v in QUICK.items() if k != "adapt"},
                       "adapt": {**description.get("adapt", {}), **QUICK["adapt"]}}
    flags = {"out": args.out, "sim": args.sim, "real": args.real, "pairs": args.pairs, "geometry": args.geometry,
             "preset": args.preset, "methods": args.methods, "seeds": args.seeds, "events": args.events, "real_events": args.real_events,
             "threads": args.threads, "detector_seeds": args.detector_seeds, "selection": args.selection,
             "real_class_fractions": args.real_class_fractions}
    description |= {k: v for k, v in flags.items() if v is not None}
    if args.no_export:
        description["export"] = False
    if args.epochs is not None:
        description["adapt"] = {**description.get("adapt", AdaptConfig().to_dict()), "epochs": args.epochs}
    return RunConfig.from_dict(description, origin=args.config or "the command line")


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def run_command(args: argparse.Namespace) -> int:
    """``sim2real run``; under ``torchrun`` rank 0 alone prints (an error too: the other ranks exit with code 2)."""
    from .. import distributed
    from ..io import MissingKeyError
    from ..report import text_table
    from .config import SMOKE_TEST
    from .outputs import table_results
    from .runner import run

    try:  # bad files or options: one line, no traceback
        config = _run_config(args)
        results = run(config, resume=args.resume, progress=True, log=lambda text: print(text, file=sys.stderr))
    except (ValueError, TypeError, OSError, MissingKeyError) as error:
        if not distributed.is_main():
            raise SystemExit(2) from None
        args.error(_one_line(error))
    if results is None:
        return 0
    instances = "" if config.sim else f" x {len(config.detector_seeds)} detector instance(s)"
    print(file=sys.stderr)  # after the progress output; stdout starts with the results
    if config.quick:
        print(SMOKE_TEST)
    print(f"sim2real run: {len(config.methods)} methods x {len(config.seeds)} seed(s){instances} on {config.geometry} "
          f"({'files ' + config.sim + ', ' + config.real if config.sim else 'simulated, preset ' + config.preset}), "
          f"checkpoints picked by {config.selection}, {results['seconds']:.0f} s")
    print(text_table(table_results(results)))
    for method, gap in results["alarms"].items():
        print(f"GAP ALARM: {method} scores {100 * gap:.1f} points more on sim than on real")
    print(f"\nwritten: {Path(config.out) / 'results.json'}, {results['outputs']['report']}, "
          f"{results['outputs']['predictions']}")
    return 0


def _adapt_config(args: argparse.Namespace):
    from ..adapt import AdaptConfig
    from .config import RunConfig

    config = RunConfig.from_yaml(args.config).adapt if args.config else AdaptConfig()
    changes = {k: v for k, v in {"seed": args.seed, "epochs": args.epochs, "few_shot_k": getattr(args, "k", None)}.items()
               if v is not None}
    return AdaptConfig.from_dict({**config.to_dict(), **changes})


def adapt_command(args: argparse.Namespace) -> int:
    from ..io import MissingKeyError
    from .steps import adapt_step

    method = getattr(args, "method", "source_only")
    try:
        path = adapt_step(method, sim=args.sim, real=getattr(args, "real", None), out=args.out,
                          geometry=args.geometry, config=_adapt_config(args), resume=args.resume,
                          real_test=getattr(args, "real_test", None), pairs=getattr(args, "pairs", None))
    except (ValueError, TypeError, OSError, MissingKeyError) as error:  # bad files or options: one line
        args.error(_one_line(error))
    print(f"sim2real {args.command}: {method} trained; written {path} (+ model.pt, model.onnx)")
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from ..io import MissingKeyError
    from .steps import evaluate_step

    try:
        result = evaluate_step(args.model, real=args.real, sim=args.sim, out=args.out, split=args.split)
    except (ValueError, TypeError, OSError, MissingKeyError) as error:  # bad files or options: one line
        args.error(_one_line(error))
    shown = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    print(json.dumps(shown, indent=2))
    print(f"written: {Path(args.out) / 'metrics.json'}, {Path(args.out) / 'predictions.root'}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def add_commands(commands) -> None:
    """Add run / train / adapt / evaluate to the ``sim2real`` subparsers."""
    from ..simulate import PRESETS
    from .config import SELECTIONS

    run = commands.add_parser("run", help="the main job: train on sim, adapt, evaluate on real, report",
                              description=__doc__.split("\n\n")[1].strip() + "\n\n" + __doc__.split("\n\n")[2].strip(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--out", default=None, help="output folder (default sim2real-run)")
    run.add_argument("--sim", default=None, help="labelled simulation: ROOT event tree file(s)")
    run.add_argument("--real", default=None, help="real data: ROOT event tree (labels used for evaluation only)")
    run.add_argument("--pairs", default=None, metavar="DIR",
                     help="pix2pix with --sim/--real: trainA/ (sim) and trainB/ (real) files of the same events")
    run.add_argument("--geometry", default=None, help="geometry of the files (default calogan)")
    run.add_argument("--methods", nargs="+", default=None,
                     help="methods, e.g. source_only dann coral+mmd dann+pseudo_label (default: all)")
    run.add_argument("--config", default=None, help="YAML file of run options (RunConfig; adapt: AdaptConfig)")
    run.add_argument("--preset", default=None, choices=sorted(PRESETS), help="simulated real detector (default)")
    run.add_argument("--detector-seeds", nargs="+", type=_seed, default=None,
                     help="simulated real detector instances (dead/hot cells, calibration; default 0)")
    run.add_argument("--seeds", nargs="+", type=_seed, default=None, help="training seeds (default 0)")
    run.add_argument("--real-class-fractions", nargs="+", type=float, default=None, metavar="F",
                     help="real class fractions, one per class summing to 1 (label shift; default: as simulated)")
    run.add_argument("--selection", default=None, choices=SELECTIONS,
                     help="label-free checkpoint selection rule whose pick every score comes from")
    run.add_argument("--events", type=_positive, default=None, help="simulated sim showers (default 20000)")
    run.add_argument("--real-events", type=_positive, default=None, help="simulated real showers (default 20000)")
    run.add_argument("--epochs", type=_positive, default=None, help="training epochs of the main stage")
    run.add_argument("--threads", type=_positive, default=None, help="torch threads (default: torch's)")
    run.add_argument("--quick", action="store_true", help="tiny data, one epoch per stage (about a minute)")
    run.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    run.add_argument("--no-export", action="store_true", help="skip the TorchScript/ONNX export")
    run.set_defaults(run=run_command, error=run.error)

    for name, help_text in (("train", "train the baseline (source_only) on a labelled sim file"),
                            ("adapt", "train one adaptation method on a sim and a real file")):
        step = commands.add_parser(name, help=help_text, description=help_text)
        step.add_argument("--sim", required=True, help="labelled simulation: ROOT event tree file(s)")
        if name == "adapt":
            step.add_argument("--real", required=True, help="real data: ROOT event tree file(s)")
            step.add_argument("--method", required=True, help="e.g. dann, coral, mmd, dann+pseudo_label, few_shot")
            step.add_argument("--pairs", default=None, metavar="DIR",
                              help="pix2pix: trainA/ (sim) and trainB/ (real) files of the same events")
            step.add_argument("--k", type=_positive, default=None, help="few_shot: labelled real events per class")
            step.add_argument("--real-test", default=None,
                              help="real test file; without it half of --real is held out (out/real_split.json)")
        step.add_argument("--out", required=True, help="output folder: model.ckpt, model.pt, model.onnx, checkpoints/")
        step.add_argument("--geometry", default="calogan", help="geometry of the files (default calogan)")
        step.add_argument("--config", default=None, help="YAML file (its adapt: section is used)")
        step.add_argument("--seed", type=_seed, default=None, help="training seed (default 0)")
        step.add_argument("--epochs", type=_positive, default=None, help="training epochs of the main stage")
        step.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
        step.set_defaults(run=adapt_command, error=step.error)

    evaluate = commands.add_parser("evaluate", help="score a saved model on a real (and a sim) file",
                                   description="metrics.json and predictions.root (a ROOT friend of the real tree)")
    evaluate.add_argument("--model", required=True, help="model.ckpt written by sim2real train / adapt")
    evaluate.add_argument("--real", required=True, help="real data: ROOT event tree file(s)")
    evaluate.add_argument("--sim", default=None, help="labelled simulation, for the sim score and the feature gap")
    evaluate.add_argument("--split", default=None,
                          help="real_split.json of sim2real adapt: score only the events it held out of --real")
    evaluate.add_argument("--out", required=True, help="output folder")
    evaluate.set_defaults(run=evaluate_command, error=evaluate.error)
