"""The ``sim2real`` command: ``run`` (the main job), ``train``, ``adapt``, ``evaluate`` (its steps; see
:mod:`sim2real_fast.workflow.commands`), ``simulate``, ``gap``, ``translate``, ``generate`` and ``dqm``.

    sim2real simulate --out DIR [--events N] [--preset realistic] [--seed S] [--geometry calogan]
                      [--lumisections N] [--hdf5] [--dqm-format tree|th2]

Writes DIR/sim.root (the sim domain: preset nominal) and DIR/real.root (the chosen "real" preset)
(event trees: hit_cell, hit_energy MeV, label, energy GeV; the label of real events is for evaluation only), DIR/dqm_sim.root and DIR/dqm_real.root (HCAL occupancy
maps per lumi-section with fault labels), and with ``--hdf5`` the same as HDF5 (CaloGAN layout for
showers when the geometry is calogan, CaloChallenge otherwise; HCAL DQM layout for the maps).

    sim2real gap [--events N] [--test-events N] [--presets realistic dev stress] [--seeds 0 1 2]
                 [--epochs E] [--trainings sim randomized] [--threads T] [--out FILE.json]

trains the CaloCNN classifier (e+ / gamma / pi+) on the sim domain (preset nominal) and on
domain-randomised simulation (the prior) and prints its accuracy and e+/gamma AUC on held-out sim and
on each "real" preset, and the drops; ``--out`` also writes the full result as JSON.

    sim2real translate train --method M (--sim FILE --real FILE | --data ROOT) --out DIR [--geometry G]
                             [--epochs E] [--events N] [--batch-size B] [--seed S] [--resume]
    sim2real translate apply --model DIR/model.pt --input FILE --output FILE [--step-size N]
    sim2real translate evaluate --model DIR/model.pt --sim FILE --real FILE --out DIR [--events N]

image-level sim-to-real translation (see :mod:`sim2real_fast.workflow.translation`): ``train`` fits a
translator (cyclegan, simgan, pix2pix, ...) on sim and real showers (ROOT, HDF5 or npy files, folders,
or the CycleGAN layout ROOT/trainA, ROOT/trainB) and writes DIR/model.pt with a checkpoint per epoch in
DIR/checkpoints; ``apply`` translates a file step by step into an event file of the same schema
(.root; .h5 or .npy by extension); ``evaluate`` writes DIR/results.json and DIR/report.md with figures:
the distances of sim (the starting point), translated sim and a real half (the floor) to real showers.

    sim2real generate train [--data FILE] [--geometry G] [--model vae|flow-vae] --out DIR [--epochs E]
                            [--events N] [--particle P] [--energy-range LO-HI] [--resume] [--seed S]
    sim2real generate sample --model DIR|DIR/model.pt --n N --output FILE.h5|FILE.root [--energy LO-HI|E]
                             [--particle P] [--format calogan|calochallenge] [--geometry G] [--step-size S]
                             [--seed S]
    sim2real generate evaluate --generated FILE --reference FILE --geometry G --out DIR [--floor FILE]
                               [--events N] [--seed S]

generative fast simulation (see :mod:`sim2real_fast.workflow.generation`): ``train`` fits a generator of
showers given incident energy and particle on a ROOT, CaloGAN or CaloChallenge file, or without --data on
100,000 simulated showers (nominal detector, e+ gamma pi+, uniform in 1-100 GeV), and writes DIR/model.pt
with a checkpoint per epoch in DIR/checkpoints; ``sample`` draws N showers, uniform in GeV over --energy
(default: the trained range), step by step into a ROOT event tree or HDF5 (CaloGAN layout for the
calogan geometry, else CaloChallenge); ``evaluate`` compares any generated file with a reference file
(and a second reference, the floor) and writes DIR/results.json and DIR/report.md.

    sim2real dqm [--out DIR] [--real FILE] [--task run|faults|both] [--methods M ...] [--model cnn|vit]
                 [--input zscore|reference|events|median|raw] [--epochs E] [--seed S] [--threads T]
                 [--quick] [--resume]

data-quality monitoring on CMS HCAL occupancy maps (see :mod:`sim2real_fast.workflow.dqm`): ``faults``
trains a fault detector on simulated maps with each adaptation method and scores it on real maps,
untouched and with injected faults, next to the reference-ratio and z-score baselines; ``run`` trains
a CNN and the ViT to tell two runs apart on raw and per-LS normalised maps. --real takes a user's maps
(HCAL DQM .h5, .npy or .root); without it the real domain is simulated. Writes DIR/results.json,
DIR/report.md and DIR/figures (default DIR: sim2real-dqm).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

def _summary_rows(name: str, showers) -> list[list[str]]:
    """Events, non-zero cell fraction per layer and mean visible energy / incident energy per particle."""
    from . import simulate

    rows = []
    for particle, label in simulate.PARTICLES.items():
        chosen = showers.labels == label
        if bool(chosen.any()):
            layers = showers.geometry.split_layers(showers.images[chosen])
            occupancy = " ".join(f"{(layer != 0).float().mean().item():.3f}" for layer in layers)
            visible = showers.images[chosen].sum(1).double() / 1000.0  # GeV
            response = (visible / showers.energy[chosen]).mean().item()
            rows.append([name, particle, str(int(chosen.sum())), occupancy, f"{visible.mean().item():.2f}", f"{response:.3f}"])
    return rows


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))


def simulate_command(args: argparse.Namespace) -> int:
    from . import io, simulate
    from .workflow import simulate_domain
    from .workflow.data import shower_geometry

    out = Path(args.out)
    started = time.perf_counter()
    try:
        geometry = shower_geometry(args.geometry)
        out.mkdir(parents=True, exist_ok=True)
        domains = {
            "sim": simulate_domain(args.events, geometry=geometry, effects="nominal", seed=args.seed,
                                   description="sim"),
            "real": simulate_domain(args.events, geometry=geometry, effects=args.preset, seed=args.seed + 1,
                                    description=f"real ({args.preset})"),
        }
    except (FileExistsError, NotADirectoryError):
        args.error(f"--out {args.out!r}: a file is in the way; expected a folder (created if missing)")
    except ValueError as error:  # an unknown geometry, occupancy maps', or one without depths and cell sizes
        args.error(_one_line(error))
    written = []
    for name, showers in domains.items():
        path = out / f"{name}.root"
        io.write_showers_root(path, showers.images, showers.labels, showers.energy, geometry=geometry)
        written.append(path)
        if args.hdf5:
            path = out / f"{name}.h5"
            if geometry.name == "calogan":
                io.write_calogan(path, showers.images, showers.energy, labels=showers.labels)
            else:
                io.write_calochallenge(path, showers.images, showers.energy, labels=showers.labels, geometry=geometry)
            written.append(path)
    for domain in ("sim", "real"):
        maps = simulate.dqm_maps(args.lumisections, domain=domain, seed=args.seed)
        path = out / f"dqm_{domain}.root"
        if args.dqm_format == "th2":
            io.write_th2(path, maps.maps, geometry=maps.geometry)
        else:
            io.write_maps_root(path, maps.maps, geometry=maps.geometry, labels=maps.labels)
        written.append(path)
        if args.hdf5:
            io.write_hcal_dqm(out / f"dqm_{domain}.h5", maps.maps, labels=maps.labels)
            written.append(out / f"dqm_{domain}.h5")
    seconds = time.perf_counter() - started

    print(f"\nsim2real simulate: {args.events} showers per domain ({geometry.name}), sim 'nominal', real preset {args.preset!r}, "
          f"seed {args.seed}, {args.lumisections} DQM lumi-sections per domain, {seconds:.1f} s")
    layer_names = "/".join(layer.name for layer in geometry.layers)
    _print_table(
        ["domain", "particle", "events", f"non-zero cells ({layer_names})", "visible GeV", "visible / incident"],
        [row for name, showers in domains.items() for row in _summary_rows(name, showers)],
    )
    print("\nwritten:", *(f"  {path}" for path in written), sep="\n")
    return 0


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value

    return parse


def _write_json_atomically(path: Path, data: dict) -> None:
    """Write to a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _pm(value: dict[str, float], several: bool) -> str:
    return f"{value['mean']:.1f} +- {value['std']:.1f}" if several else f"{value['mean']:.1f}"


def _pm3(value: dict[str, float], several: bool) -> str:
    return f"{value['mean']:.3f} +- {value['std']:.3f}" if several else f"{value['mean']:.3f}"


def gap_command(args: argparse.Namespace) -> int:
    from .evaluate import domain_gap

    result = domain_gap(events=args.events, test_events=args.test_events, presets=args.presets, seeds=args.seeds,
                        epochs=args.epochs, trainings=args.trainings, threads=args.threads, progress=True)
    config, several = result["config"], len(args.seeds) > 1
    print(f"\nsim2real gap: CaloCNN (e+/gamma/pi+) trained on {config['events']} showers, {config['epochs']} epochs, "
          f"tested on {config['test_events']} per domain, seeds {config['seeds']}, {config['threads']} threads, "
          f"{result['seconds']:.0f} s")
    rows = []
    for training, entry in result["results"].items():
        summary = entry["summary"]
        for preset in config["presets"]:
            rows.append([training, preset, _pm(summary["sim_accuracy"], several),
                         _pm(summary["real_accuracy"][preset], several), _pm(summary["drop"][preset], several),
                         _pm3(summary["sim_auc"], several), _pm3(summary["real_auc"][preset], several),
                         _pm3(summary["auc_drop"][preset], several)])
    _print_table(["training", "preset", "sim accuracy %", "real accuracy %", "drop (points)", "sim e+/gamma AUC",
                  "real e+/gamma AUC", "AUC drop"], rows)
    if args.out is not None:
        _write_json_atomically(Path(args.out), result)
        print(f"\nwritten: {args.out}")
    return 0


def _say(text: str) -> None:
    """Print ``text``: under ``torchrun`` on rank 0 alone (every rank runs the command)."""
    from . import distributed

    if distributed.is_main():
        print(text)


def _fail(args: argparse.Namespace, error: Exception) -> None:
    """Exit 2 with ``error``'s first line (rank 0 alone prints it under ``torchrun``)."""
    from . import distributed

    if not distributed.is_main():
        raise SystemExit(2) from None
    args.error(_one_line(error))


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def translate_command(args: argparse.Namespace) -> int:
    from .io import MissingKeyError
    from .workflow import translation

    started = time.perf_counter()
    try:
        if args.step == "train":
            path = translation.train(args.method, out=args.out, sim=args.sim, real=args.real, data=args.data,
                                     geometry=args.geometry, epochs=args.epochs, events=args.events,
                                     batch_size=args.batch_size, seed=args.seed, resume=args.resume)
            _say(f"sim2real translate train: {args.method} trained in {time.perf_counter() - started:.0f} s; "
                 f"written {path} (checkpoints in {Path(args.out) / 'checkpoints'})")
        elif args.step == "apply":
            n = translation.apply(args.model, input_file=args.input, output_file=args.output, geometry=args.geometry,
                                  step_size=args.step_size)
            print(f"sim2real translate apply: {n} showers translated in {time.perf_counter() - started:.0f} s; "
                  f"written {args.output}")
        else:
            results = translation.evaluate(args.model, sim=args.sim, real=args.real, out=args.out,
                                           geometry=args.geometry, events=args.events, seed=args.seed)
            print(f"\nsim2real translate evaluate: {results['method']} on {results['events']['sim']} sim and "
                  f"{results['events']['real']} real showers, {results['seconds']:.0f} s")
            _print_table(["metric", *translation.RESULT_ENTRIES.values()], translation.summary_rows(results))
            kept = results["label_preservation"]
            if kept is not None:
                print(f"label preservation: sim-trained classifier {100 * kept['accuracy_sim']:.1f}% on sim, "
                      f"{100 * kept['accuracy_translated']:.1f}% on translated sim")
            print(f"\nwritten: {Path(args.out) / 'results.json'}, {Path(args.out) / 'report.md'} (+ figures)")
    except (ValueError, TypeError, OSError, MissingKeyError) as error:  # bad files or options: one line, no traceback
        _fail(args, error)
    return 0


def _add_translate(commands) -> None:
    from .translate import REGISTRY

    positive, non_negative = _int_at_least(1), _int_at_least(0)
    paragraphs = __doc__.split("\n\n")
    translate = commands.add_parser("translate", help="image-level sim-to-real translation: train, apply, evaluate",
                                    description=paragraphs[5].strip("\n") + "\n\n" + paragraphs[6].strip(),
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = translate.add_subparsers(dest="step", required=True)
    train = steps.add_parser("train", help="fit a translator on sim and real showers; writes DIR/model.pt",
                             description="fit a translator on sim and real showers; writes DIR/model.pt and "
                                         "DIR/checkpoints/ (one per epoch)")
    train.add_argument("--method", required=True, choices=sorted(REGISTRY), help="the translator")
    train.add_argument("--sim", default=None, help="sim showers: ROOT event tree, HDF5 or npy file, or a folder")
    train.add_argument("--real", default=None, help="real showers: ROOT event tree, HDF5 or npy file, or a folder")
    train.add_argument("--data", default=None,
                       help="instead of --sim/--real: a folder holding trainA/ (sim) and trainB/ (real)")
    train.add_argument("--geometry", default="calogan", help="geometry of the files (default calogan)")
    train.add_argument("--out", required=True, help="output folder: model.pt, checkpoints/")
    train.add_argument("--epochs", type=positive, default=None, help="epochs (default: the translator's)")
    train.add_argument("--events", type=positive, default=None, help="train on the first N showers of each side")
    train.add_argument("--batch-size", type=positive, default=None, help="showers per step (default: the translator's)")
    train.add_argument("--seed", type=non_negative, default=None, help="training seed (default 0)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.set_defaults(run=translate_command, error=train.error)

    apply = steps.add_parser("apply", help="translate a shower file into an event file of the same schema",
                             description="translate a shower file step by step into a ROOT event tree (hit_cell, "
                                         "hit_energy MeV, label and energy GeV carried over), or .h5 / .npy by "
                                         "the output's extension")
    apply.add_argument("--model", required=True, help="model.pt written by sim2real translate train")
    apply.add_argument("--input", required=True, help="showers to translate: ROOT, HDF5 or npy file, or a folder")
    apply.add_argument("--output", required=True, help="translated showers: .root, .h5/.hdf5 or .npy")
    apply.add_argument("--geometry", default=None, help="expected geometry of the model (default: the model's)")
    apply.add_argument("--step-size", type=positive, default=50_000, help="showers read and written at a time")
    apply.set_defaults(run=translate_command, error=apply.error)

    evaluate = steps.add_parser("evaluate", help="distances of sim, translated sim and real halves to real showers",
                                description="results.json and report.md (with figures): sim vs real, translated "
                                            "vs real and real vs real (the floor)")
    evaluate.add_argument("--model", required=True, help="model.pt written by sim2real translate train")
    evaluate.add_argument("--sim", required=True, help="sim showers to translate (labels enable the particle checks)")
    evaluate.add_argument("--real", required=True, help="real showers to compare with")
    evaluate.add_argument("--out", required=True, help="output folder")
    evaluate.add_argument("--geometry", default=None, help="expected geometry of the model (default: the model's)")
    evaluate.add_argument("--events", type=positive, default=None, help="use the first N showers of each file")
    evaluate.add_argument("--seed", type=non_negative, default=0, help="seed of the halves, metrics and classifier")
    evaluate.set_defaults(run=translate_command, error=evaluate.error)


def generate_command(args: argparse.Namespace) -> int:
    from .generate import read_payload
    from .io import MissingKeyError
    from .workflow import generation

    started = time.perf_counter()
    try:
        if args.step == "train":
            energy_range = None if args.energy_range is None else generation.parse_energy(args.energy_range,
                                                                                          "--energy-range")
            path = generation.train(args.model, out=args.out, data=args.data, geometry=args.geometry,
                                    particle=args.particle, epochs=args.epochs, events=args.events, seed=args.seed,
                                    energy_range=energy_range, resume=args.resume)
            payload = read_payload(path)
            history = payload["history"]
            best = next((h for h in history if h["epoch"] == payload["best_epoch"]), None)
            loss = "" if best is None else f", validation loss {best['validation_loss']:.4g}"
            _say(f"sim2real generate train: {payload['method']} trained {len(history)} epochs in "
                 f"{time.perf_counter() - started:.0f} s, kept epoch {payload['best_epoch']}{loss}; written {path} "
                 f"(checkpoints in {Path(args.out) / 'checkpoints'})")
        elif args.step == "sample":
            energy = None if args.energy is None else generation.parse_energy(args.energy)
            n = generation.sample(args.model, n=args.n, output=args.output, energy=energy, particle=args.particle,
                                  layout=args.format, geometry=args.geometry, step_size=args.step_size,
                                  seed=args.seed)
            print(f"sim2real generate sample: {n} showers in {time.perf_counter() - started:.0f} s; "
                  f"written {args.output}")
        else:
            results = generation.evaluate(generated=args.generated, reference=args.reference,
                                          geometry=args.geometry, out=args.out, floor=args.floor,
                                          events=args.events, seed=args.seed)
            print(f"\nsim2real generate evaluate: {args.generated} against {args.reference}, "
                  f"{time.perf_counter() - started:.0f} s")
            _print_table(*generation.summary_table(results))
            print(f"\nwritten: {Path(args.out) / 'results.json'}, {Path(args.out) / 'report.md'}")
    except (ValueError, TypeError, OSError, ImportError, FloatingPointError, MissingKeyError) as error:  # one line
        _fail(args, error)
    return 0


def _add_generate(commands) -> None:
    from .generate import REGISTRY
    from .simulate import PARTICLES

    positive, non_negative = _int_at_least(1), _int_at_least(0)
    paragraphs = __doc__.split("\n\n")
    generate = commands.add_parser("generate", help="generative fast simulation: train, sample, evaluate",
                                   description=paragraphs[7].strip("\n") + "\n\n" + paragraphs[8].strip(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = generate.add_subparsers(dest="step", required=True)
    train = steps.add_parser("train", help="fit a generator of showers; writes DIR/model.pt",
                             description="fit a generator of showers given incident energy and particle; writes "
                                         "DIR/model.pt and DIR/checkpoints/ (one per epoch)")
    train.add_argument("--data", default=None, help="training showers: ROOT event tree, CaloGAN or CaloChallenge "
                                                    "HDF5 (default: simulate them)")
    train.add_argument("--geometry", default="calogan", help="geometry of the showers (default calogan)")
    train.add_argument("--model", default="vae", choices=sorted(REGISTRY), help="the generator (default vae)")
    train.add_argument("--out", required=True, help="output folder: model.pt, checkpoints/")
    train.add_argument("--epochs", type=positive, default=None, help="most epochs (default: the generator's)")
    train.add_argument("--events", type=positive, default=None,
                       help="the first N showers of --data, or N simulated (default 100000)")
    train.add_argument("--particle", default=None, choices=list(PARTICLES),
                       help="the particle of every shower of a --data file without labels")
    train.add_argument("--seed", type=non_negative, default=None, help="training (and simulation) seed (default 0)")
    train.add_argument("--energy-range", default=None, metavar="LO-HI",
                       help="GeV range the --data showers were drawn from, the range sample accepts "
                            "(default: their lowest to highest energy)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    train.set_defaults(run=generate_command, error=train.error)

    sample = steps.add_parser("sample", help="draw showers into a ROOT or HDF5 file",
                              description="draw N showers step by step into a ROOT event tree (hit_cell, hit_energy "
                                          "MeV, label, energy GeV) or HDF5 (CaloGAN or CaloChallenge layout)")
    sample.add_argument("--model", required=True, help="DIR or DIR/model.pt written by sim2real generate train")
    sample.add_argument("--n", type=positive, required=True, help="showers to draw")
    sample.add_argument("--output", required=True, help="output file: .root, or .h5/.hdf5")
    sample.add_argument("--energy", default=None,
                        help="incident GeV: LO-HI drawn uniformly (as the simulator), or one value "
                             "(default: the trained range)")
    sample.add_argument("--particle", default=None, help="the particle of every shower (default: the trained ones, "
                                                        "uniformly)")
    sample.add_argument("--format", default=None, choices=("calogan", "calochallenge"),
                        help="HDF5 layout (default calogan for the calogan geometry, else calochallenge)")
    sample.add_argument("--geometry", default=None, help="expected geometry of the model (default: the model's)")
    sample.add_argument("--step-size", type=positive, default=10_000, help="showers drawn and written at a time")
    sample.add_argument("--seed", type=non_negative, default=0, help="seed of the draws (default 0)")
    sample.set_defaults(run=generate_command, error=sample.error)

    evaluate = steps.add_parser("evaluate", help="compare generated showers with reference showers",
                                description="results.json and report.md: generated vs reference, next to the "
                                            "floor (a second reference file vs the reference)")
    evaluate.add_argument("--generated", required=True, help="generated showers: ROOT, CaloGAN or CaloChallenge file")
    evaluate.add_argument("--reference", required=True, help="reference showers: ROOT, CaloGAN or CaloChallenge file")
    evaluate.add_argument("--geometry", required=True, help="geometry of both files")
    evaluate.add_argument("--out", required=True, help="output folder")
    evaluate.add_argument("--floor", default=None, help="a second reference file (another seed): the floor")
    evaluate.add_argument("--events", type=positive, default=None, help="use the first N showers of each file")
    evaluate.add_argument("--seed", type=non_negative, default=0, help="seed of the metrics (default 0)")
    evaluate.set_defaults(run=generate_command, error=evaluate.error)


def dqm_command(args: argparse.Namespace) -> int:
    from .io import MissingKeyError
    from .workflow import dqm
    from .workflow.dqm_report import FAULT_HEADER, RUN_HEADER, fault_rows, run_rows

    try:
        options = {"task": args.task, "model": args.model, "input": args.input, "seed": args.seed,
                   "threads": args.threads, **(dqm.QUICK if args.quick else {})}
        if args.methods is not None:
            options["methods"] = tuple(args.methods)
        if args.epochs is not None:
            options["epochs"] = args.epochs
        config = dqm.DQMConfig(**options)
        results = dqm.run_dqm(config, out=args.out, real=args.real, resume=args.resume, progress=True,
                              log=lambda text: print(text, file=sys.stderr))
    except (ValueError, TypeError, OSError, ImportError, MissingKeyError) as error:  # one line, no traceback
        args.error(_one_line(error))
    print(f"\nsim2real dqm: task {config.task}, real domain {args.real or 'simulated'}, {results['seconds']:.0f} s"
          + (" (--quick: a smoke test, not a measurement)" if args.quick else ""))
    if "faults" in results:
        print("\nfault detection on real maps (trained on simulation):")
        _print_table(FAULT_HEADER, fault_rows(results["faults"]))
    if "run" in results:
        print("\nrun classification (trained on the first half of each run's LS, tested on the second):")
        _print_table(RUN_HEADER, run_rows(results["run"]))
    out = Path(args.out)
    print(f"\nwritten: {out / 'results.json'}, {out / 'report.md'}, {out / 'figures'}")
    return 0


def _add_dqm(commands) -> None:
    positive, non_negative = _int_at_least(1), _int_at_least(0)
    text = __doc__.split("\n\n")
    dqm = commands.add_parser("dqm", help="data-quality monitoring on HCAL occupancy maps: fault detection, run classification",
                              description=text[-2].strip() + "\n\n" + text[-1].strip(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    dqm.add_argument("--out", default="sim2real-dqm", help="output folder (default sim2real-dqm)")
    dqm.add_argument("--real", default=None, help="real HCAL maps (.h5 HCAL DQM layout, .npy, .root); default: simulated")
    dqm.add_argument("--task", default="both", choices=("run", "faults", "both"), help="which task (default both)")
    dqm.add_argument("--methods", nargs="+", default=None,
                     help="adaptation methods of the fault detector (default source_only dann mmd coral pseudo_label)")
    dqm.add_argument("--model", default="cnn", choices=("cnn", "vit"), help="the fault detector (default cnn)")
    dqm.add_argument("--input", default="zscore", choices=("zscore", "reference", "events", "median", "raw"),
                     help="the fault detector's input: maps against the run's reference (default zscore)")
    dqm.add_argument("--epochs", type=positive, default=None, help="training epochs (default 6; --quick 2)")
    dqm.add_argument("--seed", type=non_negative, default=0, help="seed of data, models and training (default 0)")
    dqm.add_argument("--threads", type=positive, default=None, help="torch threads (default: torch's)")
    dqm.add_argument("--quick", action="store_true", help="small sizes: a smoke test of every step, not a measurement")
    dqm.add_argument("--resume", action="store_true", help="continue an interrupted run in --out with the same options")
    dqm.set_defaults(run=dqm_command, error=dqm.error)


def build_parser() -> argparse.ArgumentParser:
    from .simulate import PRESETS

    parser = argparse.ArgumentParser(prog="sim2real", description="sim-to-real adaptation for particle-detector images")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="write a simulated and a 'real' domain (showers and DQM maps)",
                              description=__doc__.split("\n\n")[2].strip())
    sim.add_argument("--out", required=True, help="output folder (created if missing)")
    sim.add_argument("--events", type=int, default=50_000, help="showers per domain (default 50000)")
    sim.add_argument("--preset", default="realistic", choices=sorted(PRESETS),
                     help="the 'real' detector (default realistic; dev, stress; the sim domain is nominal)")
    sim.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    sim.add_argument("--geometry", default="calogan", help="geometry preset or description file (default calogan)")
    sim.add_argument("--lumisections", type=int, default=500, help="DQM lumi-sections per domain (default 500)")
    sim.add_argument("--dqm-format", default="tree", choices=("tree", "th2"),
                     help="DQM ROOT layout: a tree of per-depth arrays with labels, or TH2 per lumi-section")
    sim.add_argument("--hdf5", action="store_true", help="also write HDF5 (CaloGAN/CaloChallenge, HCAL DQM)")
    sim.set_defaults(run=simulate_command, error=sim.error)

    from .evaluate import TRAININGS

    gap = commands.add_parser("gap", help="accuracy a classifier trained on the sim domain loses on each 'real' preset",
                              description=__doc__.split("\n\n")[3].strip())
    positive, non_negative = _int_at_least(1), _int_at_least(0)
    gap.add_argument("--events", type=positive, default=30_000, help="training showers (default 30000)")
    gap.add_argument("--test-events", type=positive, default=10_000, help="test showers per domain (default 10000)")
    gap.add_argument("--presets", nargs="+", default=["realistic", "dev", "stress"], choices=sorted(PRESETS),
                     help="'real' detector presets to test on (default realistic dev stress)")
    gap.add_argument("--seeds", nargs="+", type=non_negative, default=[0], help="seeds, one training each (default 0)")
    gap.add_argument("--epochs", type=positive, default=4, help="training epochs (default 4)")
    gap.add_argument("--trainings", nargs="+", default=list(TRAININGS), choices=TRAININGS,
                     help="training domains: sim (nominal) and/or domain-randomised (the prior; default both)")
    gap.add_argument("--threads", type=positive, default=None, help="torch threads (default: torch's)")
    gap.add_argument("--out", default=None, help="also write the result as JSON to this file")
    gap.set_defaults(run=gap_command, error=gap.error)

    from .workflow.commands import add_commands

    add_commands(commands)
    _add_translate(commands)
    _add_generate(commands)
    _add_dqm(commands)
    return parser


#: The commands that train data-parallel under ``torchrun`` (see :mod:`sim2real_fast.distributed`).
DISTRIBUTED = ("run", "translate train", "generate train")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(getattr(args, name, None) is not None and getattr(args, name) < 1 for name in ("events", "lumisections")):
        parser.error("--events and --lumisections must be >= 1")
    if args.command == "gap" and len(set(args.seeds)) != len(args.seeds):
        args.error(f"--seeds must be distinct, got {args.seeds}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        command = " ".join(filter(None, (args.command, getattr(args, "step", None))))
        if command not in DISTRIBUTED:
            if os.environ.get("RANK", "0") != "0":  # rank 0 says it
                raise SystemExit(2)
            args.error(f"sim2real {command} does not run under torchrun (WORLD_SIZE > 1); "
                       f"these do: {', '.join('sim2real ' + c for c in DISTRIBUTED)}")
        from . import distributed

        with distributed.process_group():
            return args.run(args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
