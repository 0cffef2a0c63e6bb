"""The ``sim2real`` command: ``run`` (the main job), ``train``, ``adapt``, ``evaluate`` (its steps; see
:mod:`sim2real_fast.workflow.commands`), ``simulate`` and ``gap``.

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
    from . import geometry as _geometry
    from .workflow import simulate_domain

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    geometry = _geometry.get(args.geometry)
    started = time.perf_counter()
    domains = {
        "sim": simulate_domain(args.events, geometry=geometry, effects="nominal", seed=args.seed, description="sim"),
        "real": simulate_domain(args.events, geometry=geometry, effects=args.preset, seed=args.seed + 1,
                                 description=f"real ({args.preset})"),
    }
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
    sim.set_defaults(run=simulate_command)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(getattr(args, name, None) is not None and getattr(args, name) < 1 for name in ("events", "lumisections")):
        parser.error("--events and --lumisections must be >= 1")
    if args.command == "gap" and len(set(args.seeds)) != len(args.seeds):
        args.error(f"--seeds must be distinct, got {args.seeds}")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
