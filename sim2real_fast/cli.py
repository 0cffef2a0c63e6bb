"""The ``sim2real`` command.

    sim2real simulate --out DIR [--events N] [--preset default] [--seed S] [--geometry calogan]
                      [--lumisections N] [--hdf5] [--dqm-format tree|th2]

Writes DIR/sim.root and DIR/real.root (event trees: hit_cell, hit_energy MeV, label, energy GeV; the
label of real events is for evaluation only), DIR/dqm_sim.root and DIR/dqm_real.root (HCAL occupancy
maps per lumi-section with fault labels), and with ``--hdf5`` the same as HDF5 (CaloGAN layout for
showers when the geometry is calogan, CaloChallenge otherwise; HCAL DQM layout for the maps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

_CHUNK = 10_000  # showers simulated and reported per progress step


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit=" showers", unit_scale=True, file=sys.stderr, disable=None)


def _simulate_domain(n: int, *, geometry: str, effects, seed: int, description: str):
    """n showers in chunks of _CHUNK (chunk k uses seed (seed, k)), joined; with a progress bar."""
    from . import simulate

    parts = []
    with _progress(n, description) as bar:
        for k, start in enumerate(range(0, n, _CHUNK)):
            size = min(_CHUNK, n - start)
            parts.append(simulate.showers(size, geometry=geometry, effects=effects, seed=seed * 1_000_003 + k))
            bar.update(size)
    first = parts[0]
    return first._replace(**{field: torch.cat([getattr(p, field) for p in parts]) for field in ("images", "labels", "energy", "overflow")})


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

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    geometry = _geometry.get(args.geometry)
    started = time.perf_counter()
    domains = {
        "sim": _simulate_domain(args.events, geometry=geometry, effects=None, seed=args.seed, description="sim"),
        "real": _simulate_domain(args.events, geometry=geometry, effects=args.preset, seed=args.seed + 1,
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

    print(f"\nsim2real simulate: {args.events} showers per domain ({geometry.name}), preset {args.preset!r}, "
          f"seed {args.seed}, {args.lumisections} DQM lumi-sections per domain, {seconds:.1f} s")
    layer_names = "/".join(layer.name for layer in geometry.layers)
    _print_table(
        ["domain", "particle", "events", f"non-zero cells ({layer_names})", "visible GeV", "visible / incident"],
        [row for name, showers in domains.items() for row in _summary_rows(name, showers)],
    )
    print("\nwritten:", *(f"  {path}" for path in written), sep="\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .simulate import PRESETS

    parser = argparse.ArgumentParser(prog="sim2real", description="sim-to-real adaptation for particle-detector images")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="write a simulated and a 'real' domain (showers and DQM maps)",
                              description=__doc__.split("\n\n")[2].strip())
    sim.add_argument("--out", required=True, help="output folder (created if missing)")
    sim.add_argument("--events", type=int, default=50_000, help="showers per domain (default 50000)")
    sim.add_argument("--preset", default="default", choices=sorted(PRESETS), help="the 'real' detector's effects")
    sim.add_argument("--seed", type=int, default=0, help="random seed (same seed, same files)")
    sim.add_argument("--geometry", default="calogan", help="geometry preset or description file (default calogan)")
    sim.add_argument("--lumisections", type=int, default=500, help="DQM lumi-sections per domain (default 500)")
    sim.add_argument("--dqm-format", default="tree", choices=("tree", "th2"),
                     help="DQM ROOT layout: a tree of per-depth arrays with labels, or TH2 per lumi-section")
    sim.add_argument("--hdf5", action="store_true", help="also write HDF5 (CaloGAN/CaloChallenge, HCAL DQM)")
    sim.set_defaults(run=simulate_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "events", 1) < 1 or getattr(args, "lumisections", 1) < 1:
        build_parser().error("--events and --lumisections must be >= 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
