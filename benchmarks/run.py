"""Runs the benchmark suite (pytest-benchmark) in one process and writes its results as Markdown.

    python benchmarks/run.py --out benchmarks/RESULTS.md [--save-json run.json] [-- PYTEST_ARGS...]
    python benchmarks/run.py --json run.json --out benchmarks/RESULTS.md   # rewrite from a saved run

pytest is the one installed beside this interpreter, not ``python -m pytest`` (which would put the
working directory, the source tree, on sys.path ahead of the installed package). The Markdown gives the
machine, the command, one table per case (mean time, ratio to ours, peak extra memory) and the targets
of the issue with PASS/FAIL computed from the numbers. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def run_pytest(json_path: Path, pytest_args: list[str]) -> int:
    pytest = Path(sys.executable).with_name("pytest")
    if not pytest.exists():
        sys.exit(f"run.py: no pytest beside {sys.executable}; install the bench extra: pip install '.[bench]'")
    command = [str(pytest), "benchmarks", "-p", "no:cacheprovider", f"--benchmark-json={json_path}", *pytest_args]
    print("+", shlex.join(command), flush=True)
    return subprocess.call(command, cwd=REPO)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(text)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


class Results:
    """The benchmarks of one pytest-benchmark JSON, looked up by case and implementation."""

    def __init__(self, data: dict) -> None:
        self.data = data
        self.entries = data["benchmarks"]

    def find(self, op: str, device: str, n: int, implementation: str, **match) -> dict | None:
        """The entry of (op, device, n, implementation) whose extra_info also has the items of `match`
        (an entry without a `d` counts as d=256 where match asks for d)."""
        for entry in self.entries:
            info = entry["extra_info"]
            if (info.get("op"), info.get("device"), info.get("n"), info.get("implementation")) != (op, device, n, implementation):
                continue
            if all(info.get(key, 256 if key == "d" else None) == value for key, value in match.items()):
                return entry
        return None

    def groups(self) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {}
        for entry in self.entries:
            grouped.setdefault(entry["group"], []).append(entry)
        return grouped


def mean(entry: dict) -> float:
    return entry["stats"]["mean"]


def peak_mib(entry: dict) -> float | None:
    return entry["extra_info"].get("peak_extra_mib")


def memory_bound_mib(info: dict) -> float:
    """64 MiB + 4 (n + m) d bytes: the issue's bound on ours' peak extra memory (float32)."""
    return 64 + 4 * (info["n"] + info["m"]) * info["d"] / MIB


def tflops(entry: dict) -> float | None:
    flop = entry["extra_info"].get("gemm_flop") or entry["extra_info"].get("flop")
    return flop / mean(entry) / 1e12 if flop else None


def fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_mib(mib: float | None) -> str:
    return "—" if mib is None else f"{mib:.1f}"


def fmt_load(data: dict, key: str) -> str:
    value = data.get(key, data["machine_info"].get("sim2real_fast", {}).get(key))
    return "?" if value is None else f"{value:.2f}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "**FAIL**"


def targets(results: Results) -> list[tuple[str, str, str]]:
    """(target, measured, PASS/FAIL/not run) rows for the issue's goals."""
    rows = []

    def speedup_row(target, op, device, n, other, factor, **match):
        ours, theirs = results.find(op, device, n, "ours", **match), results.find(op, device, n, other, **match)
        if ours is None or theirs is None:
            rows.append((target, "—", "not run"))
        else:
            ratio = mean(theirs) / mean(ours)
            rows.append((target, f"{ratio:.2f}× ({fmt_time(mean(ours))} vs {fmt_time(mean(theirs))})", verdict(ratio >= factor)))

    def memory_row(target, n):
        ours = results.find("mmd", "cpu", n, "ours", d=256)
        if ours is None or peak_mib(ours) is None:
            rows.append((target, "—", "not run"))
        else:
            bound = memory_bound_mib(ours["extra_info"])
            rows.append((target, f"{peak_mib(ours):.1f} MiB (bound {bound:.1f} MiB)", verdict(peak_mib(ours) < bound)))

    def gemm_fraction_row(n, d):
        target = f"CPU MMD n=m={n} d={d}: ours' GEMM rate as a fraction of torch.mm on the same products (same run)"
        ours, mm = results.find("mmd", "cpu", n, "ours", d=d), results.find("mmd", "cpu", n, "torch.mm (same GEMMs)", d=d)
        if ours is None or mm is None:
            rows.append((target, "—", "not run"))
        else:
            rows.append((target, f"{tflops(ours) * 1e3:.0f} vs {tflops(mm) * 1e3:.0f} GFLOP/s = {tflops(ours) / tflops(mm):.0%}", "info"))

    speedup_row("CPU MMD n=m=4096 d=256 unbiased fwd+bwd: ours ≥ 10× faster than pytorch-adapt", "mmd", "cpu", 4096, "pytorch-adapt", 10, d=256)
    speedup_row("CPU MMD n=m=4096 d=2048 unbiased fwd+bwd: ours ≥ 3× faster than pytorch-adapt", "mmd", "cpu", 4096, "pytorch-adapt", 3, d=2048)
    speedup_row("CPU MMD n=m=4096 d=256 unbiased fwd+bwd: ours faster than the reference (info)", "mmd", "cpu", 4096, "reference", 1, d=256)
    gemm_fraction_row(4096, 256)
    gemm_fraction_row(4096, 2048)
    one, two = results.find("mmd busy", "cpu", 4096, "ours, 1 thread(s)"), results.find("mmd busy", "cpu", 4096, "ours, 2 thread(s)")
    target = "CPU MMD n=m=4096 d=256 with one busy process beside it: 2 threads ≤ 1.1× the 1-thread time"
    if one is None or two is None:
        rows.append((target, "—", "not run"))
    else:
        ratio = mean(two) / mean(one)
        mm_one = results.find("mmd busy", "cpu", 4096, "torch.mm (same GEMMs), 1 thread(s)")
        mm_two = results.find("mmd busy", "cpu", 4096, "torch.mm (same GEMMs), 2 thread(s)")
        torch_ratio = "" if mm_one is None or mm_two is None else f"; torch.mm on the same products: {mean(mm_two) / mean(mm_one):.2f}×"
        rows.append((target, f"{ratio:.2f}× ({fmt_time(mean(two))} vs {fmt_time(mean(one))}{torch_ratio})", verdict(ratio <= 1.1)))
    memory_row("CPU MMD n=m=4096 d=256: ours' peak extra memory < 64 MiB + 4 (n+m) d bytes", 4096)
    large = results.find("mmd", "cpu", 32768, "ours")
    rows.append(
        (
            "CPU MMD n=m=32768 d=256 fwd+bwd: completes",
            "—" if large is None else f"completed in {fmt_time(mean(large))}",
            "not run" if large is None else "PASS",
        )
    )
    memory_row("CPU MMD n=m=32768 d=256: ours' peak extra memory < 64 MiB + 4 (n+m) d bytes", 32768)

    ours, adapt = results.find("grad_reverse", "cpu", 8192 * 8192, "ours"), results.find("grad_reverse", "cpu", 8192 * 8192, "pytorch-adapt")
    if ours is None or adapt is None:
        rows += [("CPU gradient reversal, 64M floats: ours no slower than pytorch-adapt", "—", "not run")]
        rows += [("CPU gradient reversal: ours' peak extra memory ≤ one gradient (256 MiB)", "—", "not run")]
    else:
        rows.append(("CPU gradient reversal, 64M floats: ours no slower than pytorch-adapt",
                     f"{fmt_time(mean(ours))} vs {fmt_time(mean(adapt))} ({mean(adapt) / mean(ours):.2f}×)",
                     verdict(mean(ours) <= mean(adapt))))
        one_gradient = 8192 * 8192 * 4 / MIB
        rows.append(("CPU gradient reversal: ours' peak extra memory ≤ one gradient (256 MiB)",
                     f"{fmt_mib(peak_mib(ours))} MiB (pytorch-adapt {fmt_mib(peak_mib(adapt))} MiB)",
                     verdict(peak_mib(ours) is not None and peak_mib(ours) <= one_gradient + 1)))

    ours, adapt = results.find("coral", "cpu", 8192, "ours"), results.find("coral", "cpu", 8192, "pytorch-adapt")
    if ours is None or adapt is None:
        rows += [("CPU CORAL n=8192 d=2048: ours no slower than pytorch-adapt", "—", "not run")]
    else:
        rows.append(
            (
                "CPU CORAL n=8192 d=2048: ours no slower than pytorch-adapt",
                f"{fmt_time(mean(ours))} vs {fmt_time(mean(adapt))} ({mean(adapt) / mean(ours):.2f}×); peak {fmt_mib(peak_mib(ours))} vs {fmt_mib(peak_mib(adapt))} MiB",
                verdict(mean(ours) <= mean(adapt)),
            )
        )

    for device in ("cpu", "cuda"):
        ours, ref = results.find("shower_features", device, 100_000, "ours"), results.find("shower_features", device, 100_000, "reference")
        target = f"{device.upper()} shower_features calogan N=100000 float32 forward: ours' speed-up over the reference"
        if ours is None or ref is None:
            rows.append((target, "—", "not run" if device == "cpu" else "not run (no GPU)"))
        else:
            measured = f"{mean(ref) / mean(ours):.1f}× ({fmt_time(mean(ours))} vs {fmt_time(mean(ref))}; {100_000 / mean(ours):.3g} vs {100_000 / mean(ref):.3g} events/s)"
            rows.append((target, measured, "info"))
    rows += read_showers_rows(results)

    speedup_row("GPU MMD n=m=8192 d=512 fwd+bwd: ours ≥ 5× faster than the reference", "mmd", "cuda", 8192, "reference", 5, d=512)
    gpu_ours, matmul = results.find("mmd", "cuda", 8192, "ours", d=512), results.find("matmul", "cuda", 8192, "torch.mm")
    if gpu_ours is None or matmul is None:
        rows.append(("GPU MMD n=m=8192 d=512: achieved fraction of fp32 matmul peak", "—", "not run (no GPU)"))
    else:
        achieved, peak = tflops(gpu_ours), tflops(matmul)
        rows.append(
            (
                "GPU MMD n=m=8192 d=512: achieved fraction of fp32 matmul peak",
                f"{achieved:.1f} TFLOP/s = {achieved / peak:.0%} of torch.mm fp32 ({peak:.1f} TFLOP/s, same run)",
                "info",
            )
        )
    rows += hits_to_image_targets(results)
    rows += simulator_targets(results)
    return rows


def simulator_targets(results: Results) -> list[tuple[str, str, str]]:
    """The simulator's throughput target, with the machine's default torch threads."""
    entries = [e for e in results.entries if e["extra_info"].get("op") == "simulate.showers"]
    threads = max((e["extra_info"]["threads"] for e in entries), default=None)
    rows = []
    for domain in ("sim", "real (realistic)"):
        target = f"CPU simulator, CaloGAN, {domain}: ≥ 20,000 showers/s"
        entry = next((e for e in entries if e["extra_info"]["implementation"] == f"{domain}, {threads} thread(s)"), None)
        if entry is None:
            rows.append((target, "—", "not run"))
        else:
            rate = entry["extra_info"]["showers_per_s"]
            rows.append((target, f"{rate:,.0f} showers/s ({threads} threads)", verdict(rate >= 20_000)))
    return rows


def hits_to_image_targets(results: Results) -> list[tuple[str, str, str]]:
    rows = []
    target = "CPU hits_to_image 100k events × ~200 hits, 504 cells, float32: ours ≥ 3× np.bincount in hits/s"
    ours, bincount = results.find("hits_to_image", "cpu", 100_000, "ours"), results.find("hits_to_image", "cpu", 100_000, "np.bincount")
    if ours is None or bincount is None:
        rows.append((target, "—", "not run"))
    else:
        hits, ratio = ours["extra_info"]["hits"], mean(bincount) / mean(ours)
        measured = f"{hits / mean(ours) / 1e6:.0f} vs {hits / mean(bincount) / 1e6:.0f} M hits/s ({ratio:.2f}×)"
        rows.append((target, measured, verdict(ratio >= 3)))
    target = "CPU hits_to_image 100k events: the log1p path within 1.5× the plain path"
    log1p = results.find("hits_to_image", "cpu", 100_000, "ours log1p")
    if ours is None or log1p is None:
        rows.append((target, "—", "not run"))
    else:
        ratio = mean(log1p) / mean(ours)
        rows.append((target, f"{ratio:.2f}× ({fmt_time(mean(log1p))} vs {fmt_time(mean(ours))})", verdict(ratio <= 1.5)))
    target = "GPU hits_to_image 100k events: achieved fraction of the memory bandwidth (device copy, same run)"
    ours, copy = results.find("hits_to_image", "cuda", 100_000, "ours"), results.find("hits_to_image", "cuda", 100_000, "copy (bandwidth)")
    if ours is None or copy is None:
        rows.append((target, "—", "not run (no GPU)"))
    else:
        traffic = ours["extra_info"]["traffic_bytes"]
        measured = (f"{traffic / mean(ours) / 1e9:.0f} GB/s = {mean(copy) / mean(ours):.0%} of a device copy "
                    f"({traffic / mean(copy) / 1e9:.0f} GB/s)")
        rows.append((target, measured, "info"))
    return rows


READ_SHOWERS_STAGES = (
    ("read_s", "uproot: decompression + deserialisation"),
    ("convert_s", "awkward -> torch, value checks"),
    ("hits_to_image_s", "hits_to_image"),
    ("other_s", "opening files, concatenating steps"),
)


def read_showers_rows(results: Results) -> list[tuple[str, str, str]]:
    """Events/s of read_showers (100k CaloGAN showers -> log1p images) and whether the kernel is the bottleneck."""
    entry = results.find("read_showers", "cpu", 100_000, "ours")
    rate_target = "CPU read_showers, 100k CaloGAN showers of ~200 hits -> log1p images: events/s"
    share_target = "CPU read_showers: hits_to_image is not the bottleneck (< 50% of the time)"
    if entry is None:
        return [(rate_target, "—", "not run"), (share_target, "—", "not run")]
    info = entry["extra_info"]
    total = sum(info[key] for key, _ in READ_SHOWERS_STAGES)
    share = info["hits_to_image_s"] / total
    return [
        (rate_target, f"{info['events_per_s']:,.0f} events/s ({fmt_time(mean(entry))} per read)", "info"),
        (share_target, f"{share:.0%} of the time ({info['kernel']} hits_to_image)", verdict(share < 0.5)),
    ]


def read_showers_breakdown(results: Results) -> list[str]:
    """Markdown lines: where the time of read_showers goes (empty when it did not run)."""
    entry = results.find("read_showers", "cpu", 100_000, "ours")
    if entry is None:
        return []
    info = entry["extra_info"]
    total = sum(info[key] for key, _ in READ_SHOWERS_STAGES)
    rows = [[label, fmt_time(info[key]), f"{info[key] / total:.0%}"] for key, label in READ_SHOWERS_STAGES]
    return [
        "",
        "## Reading ROOT event trees",
        "",
        f"`read_showers(path, normalize=\"log1p\")` on {info['n']:,} CaloGAN showers ({info['hits']:,} hits, "
        f"{info['file_mib']:.0f} MiB, ZLIB level 1): {info['events_per_s']:,.0f} events/s; "
        f"hits_to_image: {info['kernel']}. Mean over the rounds:",
        "",
        table(["stage", "time", "share"], rows),
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def group_table(entries: list[dict]) -> str:
    ours = next((e for e in entries if e["extra_info"].get("implementation") == "ours"), None)
    rows = []
    for entry in sorted(entries, key=mean):
        info = entry["extra_info"]
        notes = []
        if info.get("kernels") == 1 or info.get("estimator") == "biased":
            notes.append(f"{info['kernels']} kernel, {info['estimator']} estimator")
        if str(info.get("implementation", "")).startswith(("ours", "torch.mm")) and tflops(entry):
            rate = tflops(entry)
            notes.append(f"{rate:.1f} TFLOP/s" if rate >= 1 else f"{rate * 1e3:.0f} GFLOP/s")
        if info.get("note"):
            notes.append(info["note"])
        rows.append(
            [
                info.get("implementation", entry["name"]),
                fmt_time(mean(entry)),
                f"± {fmt_time(entry['stats']['stddev'])}" if entry["stats"]["rounds"] > 1 else "—",
                str(entry["stats"]["rounds"]),
                "—" if ours is None else f"{mean(entry) / mean(ours):.2f}×",
                fmt_mib(peak_mib(entry)),
                "; ".join(notes),
            ]
        )
    header = ["implementation", "mean", "stddev", "rounds", "time ÷ ours (ours' speed-up)", "peak extra MiB", "notes"]
    return table(header, rows)


def render(data: dict, command: str, pytest_rc: int | None) -> str:
    results = Results(data)
    machine = data["machine_info"].get("sim2real_fast", {})
    lines = [
        "# sim2real_fast benchmarks",
        "",
        f"Produced {data['datetime']} (UTC) by `{command}`; pytest ran `pytest {shlex.join(data.get('pytest_args', []))}`"
        + ("" if pytest_rc in (None, 0) else f" and **exited with status {pytest_rc}** (see Failures)")
        + ".",
        "Rerun everything (installs pytest-benchmark and the peers first): `make bench`.",
        "",
        "## Machine",
        "",
        f"- CPU: {machine.get('cpu_model')}, {machine.get('logical_cores')} logical cores "
        f"(torch threads {machine.get('torch_threads')}), {machine.get('memory_gib')} GiB memory",
        f"- GPU: {machine.get('gpu') or 'none'}",
        f"- Load: 1-minute load average {fmt_load(data, 'load_average_start')} when the run started, "
        f"{fmt_load(data, 'load_average_end')} when it ended (other processes on the machine: {machine.get('other_busy_processes', '?')} "
        "busy at the start, besides the benchmark's own helper in the busy-process case)",
        f"- Python {data['machine_info'].get('python_version')}, torch {machine.get('torch')} "
        f"(float32 matmul precision: {machine.get('float32_matmul_precision')})",
        f"- sim2real_fast {machine.get('version')}, build: `{json.dumps(machine.get('build_info'))}`",
        "",
        "## Targets",
        "",
        table(["target", "measured", "result"], [list(row) for row in targets(results)]),
        "",
        "## Results",
        "",
        "Losses (MMD, CORAL) and gradient reversal: each time is one forward + backward pass (inputs require",
        "grad, the loss's `.backward()`; gradient reversal: `.backward(g)` with a fixed g). hits_to_image,",
        "shower_features, read_showers and the simulator: one forward call (no gradient). Means over the rounds",
        "after warm-up, all in one pytest process.",
        "Peak extra memory: the most memory any round needed above what was in use before it (CPU: resident-set",
        "high-water mark, CUDA: allocator peak), gradients of the inputs included. Every MMD implementation gets",
        "the same squared bandwidths (our `mean` heuristic, computed once, untimed); each value was checked",
        "against the reference before timing. Timings on a shared 2-core machine are noisy: read ratios, not digits.",
        "read_showers reads a whole file per call (see Reading ROOT event trees below).",
    ]
    for group, entries in results.groups().items():
        lines += ["", f"### {group}", "", group_table(entries)]
    lines += read_showers_breakdown(results)
    lines += ["", "## Peers", ""]
    lines += [f"- {name}: {version}" for name, version in machine.get("peers", {}).items()]
    if data.get("skipped"):
        lines += ["", "## Skipped", ""]
        lines += [f"- `{item['test']}`: {item['reason']}" for item in data["skipped"]]
    if data.get("failed"):
        lines += ["", "## Failures", ""]
        for item in data["failed"]:
            lines += [f"- `{item['test']}` ({item['when']}):", "", "```", item["error"], "```"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    parser.add_argument("--json", type=Path, help="rewrite the Markdown from this saved pytest-benchmark JSON instead of running")
    parser.add_argument("--save-json", type=Path, help="also keep the run's pytest-benchmark JSON here")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    args = parser.parse_args()
    interpreter = Path(sys.executable)
    if interpreter.is_relative_to(REPO):
        interpreter = interpreter.relative_to(REPO)
    command = shlex.join([str(interpreter), "benchmarks/run.py", *sys.argv[1:]])

    if args.json:
        data, rc = json.loads(args.json.read_text()), None
    else:
        with tempfile.TemporaryDirectory() as tmp:
            json_path = Path(tmp) / "benchmarks.json"
            rc = run_pytest(json_path, args.pytest_args)
            if not json_path.exists():
                print(f"run.py: pytest exited with {rc} and wrote no results", file=sys.stderr)
                return rc or 1
            raw = json_path.read_text()
        data = json.loads(raw)
        if args.save_json:
            write_atomic(args.save_json, raw)

    write_atomic(args.out, render(data, command, rc))
    print(f"\nwrote {args.out}\n")
    print(table(["target", "measured", "result"], [list(row) for row in targets(Results(data))]))
    print("\n".join(read_showers_breakdown(Results(data))))
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
