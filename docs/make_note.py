"""Writes the technical note from the benchmark outputs: ``python docs/make_note.py [--out FILE] [--pdf]``.

Fills docs/technical-note.template.md (prose, ``{{ name }}`` placeholders) with tables built from the
files under benchmarks/: main_job/SUMMARY.md and <case>/results.json, translation/ and
translation/downstream/, generation/, dqm/ (SUMMARY.md, results.json, figures), tuning/RESULTS.md and
RESULTS.md, and with the simulator's knob tables from README.md. Every number in the note comes from
those files, so rerunning a benchmark and this script updates the note. The note is written atomically;
its figure links are relative to its folder. ``--pdf`` also writes the PDF beside it (pandoc, xelatex).

A missing or malformed output stops the script with one line naming the file (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "docs" / "technical-note.template.md"
OUT = REPO / "docs" / "technical-note.md"

#: Main-job figures: file stem -> caption.
MAIN_FIGURES = {
    "roc": "one-vs-rest ROC curves on the real test set",
    "embeddings": "sim and real features on their first two principal components, before and after adaptation",
    "distributions": "shower quantities per domain",
    "training": "training curves",
}
#: The simulator's tables in README.md, found by their header rows.
README_TABLES = {
    "nominal": "| knob | nominal | what | source |",
    "residuals": "| knob | realistic | stress | prior (`PRIOR`) | published range | source |",
    "verdicts": "| knob | what was checked | verdict |",
}


class NoteError(Exception):
    """A benchmark output is missing or not what its script writes; the message names the file."""


class Target(NamedTuple):
    benchmark: str
    text: str
    verdict: str  # as the output says it: PASS, FAIL, "met in k/n seeds", "not run ..."
    met: bool | None  # None: not run


class Section(NamedTuple):
    text: str
    targets: list[Target]


def _rel(path: Path) -> str:
    try:
        return path.relative_to(REPO).as_posix()
    except ValueError:
        return str(path)


def _exists(path: Path) -> Path:
    if not path.is_file():
        raise NoteError(f"{_rel(path)}: missing benchmark output (rerun the benchmark that writes it)")
    return path


def _text(path: Path) -> str:
    return _exists(path).read_text(encoding="utf-8")


def _json(path: Path) -> dict:
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as error:
        raise NoteError(f"{_rel(path)}: not valid JSON ({error.msg}, line {error.lineno})") from None


@contextmanager
def _reading(path: Path, script: str) -> Iterator[None]:
    """Turns a missing key or a wrong type while reading ``path`` into one line naming it."""
    try:
        yield
    except (KeyError, TypeError, IndexError, ValueError, AttributeError, statistics.StatisticsError) as error:
        raise NoteError(f"{_rel(path)}: not the output of {script} ({type(error).__name__}: {error})") from None


def _link(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path, out_dir)).as_posix()


def _image(path: Path, caption: str, out_dir: Path) -> str:
    return f"![{caption}]({_link(_exists(path), out_dir)})"


def _lines_after(text: str, start: str, path: Path) -> list[str]:
    """The lines of ``text`` from the first that starts with ``start`` up to the next heading."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(start):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("#")), len(lines))
            return lines[i:end]
    raise NoteError(f"{_rel(path)}: no line starting with {start!r}")


def _table_at(lines: list[str], header: str, path: Path) -> str:
    """The Markdown table whose header row is ``header`` (up to the first line that is not a row)."""
    for i, line in enumerate(lines):
        if line.strip() == header:
            rows = [line.strip()]
            for row in lines[i + 1:]:
                if not row.startswith("|"):
                    break
                rows.append(row.strip())
            return "\n".join(rows)
    raise NoteError(f"{_rel(path)}: no table with the header {header!r}")


def _first_paragraph(text: str, path: Path) -> str:
    """The first paragraph after the title: the command, the machine and the run's time."""
    blocks = [b.strip() for b in text.split("\n\n") if b.strip() and not b.lstrip().startswith("#")]
    if not blocks:
        raise NoteError(f"{_rel(path)}: no paragraph after the title")
    return " ".join(blocks[0].split())


def _mean_std(values: list[float], digits: int = 3) -> str:
    """Mean ± sample standard deviation of the values that are not None ("–" without any)."""
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _verdict_targets(benchmark: str, lines: list[str]) -> list[Target]:
    """Targets from SUMMARY.md bullets that end in PASS or FAIL (bold or not). A bullet of several verdicts,
    ``- name: a: PASS, b: FAIL``, is the targets of ``name``."""
    targets = []
    for line in lines:
        if not line.startswith("- "):
            continue
        matches = list(re.finditer(r"(.+?): \**(PASS|FAIL)\**(?: \(([^)]*)\))?(?:, |$)", line[2:]))
        where = benchmark
        if len(matches) > 1 and ": " in matches[0].group(1):
            where = f"{benchmark}, {matches[0].group(1).split(': ', 1)[0]}"
        for i, match in enumerate(matches):
            text = match.group(1).removeprefix("target: ")
            if where != benchmark and i == 0:
                text = text.split(": ", 1)[1]
            verdict = match.group(2) + (f" ({match.group(3)})" if match.group(3) else "")
            targets.append(Target(where, text, verdict, match.group(2) == "PASS"))
    return targets


# --- the main job ------------------------------------------------------------------------------------

def _pm(entry: dict, key: str, scale: float = 100.0, decimals: int = 1) -> str:
    value = entry.get(key)
    if value is None:
        return "–"
    return f"{scale * value:.{decimals}f} ± {scale * entry['spread'][key]:.{decimals}f}"


def _interval(entry: dict) -> str:
    d = entry.get("vs_source_only", {}).get("target_accuracy")
    if not d:
        return "–"
    return f"{100 * d['mean']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _gap(entry: dict) -> str:
    k, n = sum(r.get("gap_recovered") is not None for r in entry["per_seed"]), len(entry["per_seed"])
    if k == 0:
        return "–"
    if k == 1:
        return f"{100 * entry['gap_recovered']:.1f} (1/{n} runs)"
    return _pm(entry, "gap_recovered") + ("" if k == n else f" ({k}/{n} runs)")


MAIN_HEADER = ("| method | real accuracy [%] | Δ vs source_only [points] (95% CI) | instances won | gap recovered [%] "
               "| real e/γ AUC | real π/EM AUC | sim accuracy [%] |")


def main_job_table(results: dict) -> str:
    """The per-method table of one ``sim2real run`` results.json, in the format of benchmarks/main_job.py."""
    rows = [MAIN_HEADER, "|---|---|---|---|---|---|---|---|"]
    for method, entry in results["methods"].items():
        wins = entry.get("vs_source_only", {}).get("target_accuracy", {}).get("wins")
        rows.append(f"| {method} | {_pm(entry, 'target_accuracy')} | {_interval(entry)} | "
                    f"{'–' if wins is None else f'{100 * wins:.0f}%'} | {_gap(entry)} | "
                    f"{_pm(entry, 'em_auc', 1.0, 3)} | {_pm(entry, 'pion_auc', 1.0, 4)} | "
                    f"{_pm(entry, 'source_accuracy')} |")
    return "\n".join(rows)


def _machine(results: dict) -> str:
    m = results["machine"]
    return (f"{m['platform']}, {m['processor']}, {m['cpu_count']} torch thread(s), torch {m['torch']}, "
            f"device {m['device']}, sim2real_fast {m['sim2real_fast']}")


def _headline(results: dict) -> str:
    methods = results["methods"]
    base = methods["source_only"]
    runs = len(base["per_seed"])
    text = (f"source_only: sim {100 * base['source_accuracy']:.1f}% → real {100 * base['target_accuracy']:.1f}% "
            f"({100 * (base['source_accuracy'] - base['target_accuracy']):.1f} points; e/γ AUC "
            f"{base['source_em_auc']:.3f} → {base['em_auc']:.3f}) over {runs} runs")
    oracle = methods.get("target_oracle")
    if oracle is not None:
        text += (f"; target_oracle {100 * oracle['target_accuracy']:.1f}%, gap (oracle − source_only) "
                 f"{100 * (oracle['target_accuracy'] - base['target_accuracy']):.1f} points")
    return text + "."


def _run_case(case: str, results: dict, summary_lines: list[str], folder: Path, out_dir: Path,
              level: str, embed: bool) -> str:
    config = results["config"]
    command = next((line.strip("`") for line in summary_lines if line.startswith("`sim2real run")), None)
    if command is None:
        raise NoteError(f"{_rel(folder.parent / 'SUMMARY.md')}: no `sim2real run` command under case {case!r}")
    lines = [f"{level} {case}", "",
             f"{len(config['detector_seeds'])} detector instance(s) × {len(config['seeds'])} seed(s), "
             f"{config['events']:,} sim and {config['real_events']:,} real events, checkpoints picked by "
             f"`{config['selection']}`, {results['seconds'] / 60:.0f} min.", "",
             f"- command: `{command}`", f"- machine: {_machine(results)}", "",
             main_job_table(results), "", _headline(results), ""]
    bullets = [line for line in summary_lines if line.startswith("- ")]
    lines += bullets + ([""] if bullets else [])
    figures = {stem: folder / "figures" / f"{stem}.png" for stem in MAIN_FIGURES}
    if embed:
        for stem in ("roc", "embeddings"):
            lines += [_image(figures[stem], f"{case}: {MAIN_FIGURES[stem]}", out_dir), ""]
    links = ", ".join(f"[{MAIN_FIGURES[stem]}]({_link(_exists(path), out_dir)})" for stem, path in figures.items()
                      if not (embed and stem in ("roc", "embeddings")))
    report = _link(_exists(folder / "report.md"), out_dir)
    return "\n".join(lines + [f"Figures: {links}; the run's own [report]({report}) (every selection rule's "
                              "pick, last-epoch scores, per-class tables).", ""])


def _case_sections(summary: str) -> dict[str, list[str]]:
    """SUMMARY.md's lines per case (from its ``### case:`` heading to the next heading)."""
    sections, current = {}, None
    for line in summary.splitlines():
        match = re.match(r"### ([\w-]+):", line)
        if match:
            current = sections.setdefault(match.group(1), [])
        elif line.startswith("#"):
            current = None
        elif current is not None:
            current.append(line)
    return sections


def main_job(bench: Path, out_dir: Path) -> Section:
    folder = bench / "main_job"
    summary_path = folder / "SUMMARY.md"
    summary = _text(summary_path)
    with _reading(summary_path, "benchmarks/main_job.py"):
        collected = re.search(r"Collected by `([^`]+)`", summary).group(1)
    cases = _case_sections(summary)
    if not cases:
        raise NoteError(f"{_rel(summary_path)}: no case (no '### <case>:' heading)")
    parts = [f"Collected by `{collected}`; one `sim2real run` per case.", ""]
    targets = []
    for i, (case, lines) in enumerate(cases.items()):
        path = folder / case / "results.json"
        results = _json(path)
        with _reading(path, "sim2real run"):
            parts.append(_run_case(case, results, lines, folder / case, out_dir, "###", embed=i == 0))
        targets += _verdict_targets(f"main job, {case}", lines)
    return Section("\n".join(parts), targets)


def protocol(bench: Path) -> str:
    """The protocol's settings as the main job's first case ran them (its results.json)."""
    folder = bench / "main_job"
    case = next(iter(_case_sections(_text(folder / "SUMMARY.md"))))
    path = folder / case / "results.json"
    results = _json(path)
    with _reading(path, "sim2real run"):
        c, a = results["config"], results["config"]["adapt"]
        sim_train = round((1 - c["val_fraction"]) * c["events"])
        real_test = round(c["test_fraction"] * c["real_events"])
        items = [
            f"events: {c['events']:,} simulated (`{c['sim_preset']}`) and {c['real_events']:,} real per detector "
            f"instance; sim split {100 * (1 - c['val_fraction']):.0f}/{100 * c['val_fraction']:.0f} into training "
            f"({sim_train:,}) and validation, real split {100 * (1 - c['test_fraction']):.0f}/"
            f"{100 * c['test_fraction']:.0f} into the adaptation set and the test set ({real_test:,})",
            f"repetitions: detector instances {c['detector_seeds']} × training seeds {c['seeds']}",
            f"label-free checkpoint selection: `{c['selection']}`",
            f"training: {a['epochs']} epochs of batch {a['batch_size']}, Adam lr {a['lr']}",
            "method settings chosen on `dev`: " + ", ".join(
                f"`{key}` {a[key]:g}" for key in ("dann_weight", "coral_weight", "mmd_weight", "pseudo_threshold",
                                                   "mask_occupancy")),
            f"gap alarm: sim accuracy above real accuracy by more than {100 * c['gap_alarm_threshold']:.0f} points",
        ]
    return "\n".join(f"- {item}" for item in items)


# --- tuning on dev ----------------------------------------------------------------------------------------

def _chosen(path: Path) -> dict[str, float]:
    """benchmarks/tuning/chosen.yaml's ``adapt:`` values (flat ``key: number`` lines)."""
    values = {}
    for line in _text(path).splitlines():
        match = re.match(r"\s+(\w+):\s*([-+0-9.eE]+)\s*$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    if not values:
        raise NoteError(f"{_rel(path)}: no 'adapt:' values (expected the output of benchmarks/tune.py)")
    return values


def tuning(bench: Path) -> str:
    path = bench / "tuning" / "RESULTS.md"
    text = _text(path)
    body = [line for line in text.splitlines() if not line.startswith("# ")]
    chosen = _chosen(bench / "tuning" / "chosen.yaml")
    case = next(iter(_case_sections(_text(bench / "main_job" / "SUMMARY.md"))))
    ran_path = bench / "main_job" / case / "results.json"
    with _reading(ran_path, "sim2real run"):
        ran = _json(ran_path)["config"]["adapt"]
        differ = [f"`{key}` ({value:g} chosen, {ran[key]:g} run)" for key, value in chosen.items()
                  if float(ran[key]) != value]
    check = (f"The main job ran with the chosen values (its results.json, case {case})." if not differ else
             f"The main job ran with other values than the chosen ones: {', '.join(differ)}.")
    return "\n".join(body).strip() + "\n\n" + check


# --- translation --------------------------------------------------------------------------------------------

def translation(bench: Path, out_dir: Path) -> Section:
    folder = bench / "translation"
    summary_path, path = folder / "SUMMARY.md", folder / "results.json"
    summary, results = _text(summary_path), _json(path)
    lines = [f"Produced by {_first_paragraph(summary, summary_path)}", "",
             "| translator | feature AUC: sim vs real → translated vs real (floor) | distance to 0.5 closed [%] "
             "| cell AUC: sim vs real → translated vs real | FPD: sim vs real → translated vs real (floor) "
             "| label preservation [points] | train [min] | apply [showers/s] |",
             "|---|---|---|---|---|---|---|---|"]
    with _reading(path, "benchmarks/translation.py"):
        for method, runs in results.items():
            col = {key: [r[key] for r in runs] for key in runs[0]}
            mean = {key: statistics.fmean(values) for key, values in col.items()}
            lines.append(
                f"| {method} | {mean['auc_start']:.3f} → {_mean_std(col['auc_translated'])} "
                f"({mean['auc_floor']:.3f}) "
                f"| {_mean_std([100 * c for c in col['closed']], digits=0)} | {mean['auc_cells_start']:.3f} → "
                f"{mean['auc_cells_translated']:.3f} | {mean['fpd_start']:.3f} → {mean['fpd_translated']:.3f} "
                f"({mean['fpd_floor']:.3f}) | {_mean_std(col['label_points'], digits=1)} "
                f"| {_mean_std(col['train_minutes'], digits=1)} | {mean['apply_per_s']:,.0f} |")
    targets = _lines_after(summary, "Targets", summary_path)
    lines += ["", "Targets, as the benchmark judged them:", "", *[t for t in targets if t.startswith("- ")], ""]
    return Section("\n".join(lines), _verdict_targets("translation", targets))


def translation_downstream(bench: Path, out_dir: Path) -> str:
    folder = bench / "translation" / "downstream"
    summary_path = folder / "SUMMARY.md"
    summary = _text(summary_path)
    with _reading(summary_path, "benchmarks/main_job.py --results benchmarks/translation/downstream"):
        collected = re.search(r"Collected by `([^`]+)`", summary).group(1)
    parts = [f"Collected by `{collected}`.", ""]
    for case, lines in _case_sections(summary).items():
        path = folder / case / "results.json"
        results = _json(path)
        with _reading(path, "sim2real run"):
            parts.append(_run_case(f"downstream, {case}", results, lines, folder / case, out_dir, "###",
                                   embed=False))
    return "\n".join(parts)


# --- generation -------------------------------------------------------------------------------------------

def generation(bench: Path, out_dir: Path) -> Section:
    folder = bench / "generation"
    summary_path, path = folder / "SUMMARY.md", folder / "results.json"
    summary, results = _text(summary_path), _json(path)
    lines = [f"Produced by {_first_paragraph(summary, summary_path)}", "",
             "| generator | train [min] (epochs, best) | sample [showers/s] | classifier AUC, features | "
             "classifier AUC, cells | JSD features | JSD cells | KS of E_total / E_inc | largest sparsity difference "
             "[points] | FPD × 10³ | KPD × 10³ | mean separation power |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def pair(r: dict, key: str, scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * r[key + '_generated']:.{digits}f} ({scale * r[key + '_floor']:.{digits}f})"

    figures = []
    with _reading(path, "benchmarks/generation.py"):
        for name, r in results.items():
            lines.append(f"| {name} | {r['train_minutes']:.1f} ({r['epochs']}, {r['best_epoch']}) | "
                         f"{r['sample_per_s']:,.0f} | {pair(r, 'auc_features')} | {pair(r, 'auc_cells')} | "
                         f"{pair(r, 'jsd_features')} | {pair(r, 'jsd_cells')} | {pair(r, 'ks_ratio')} | "
                         f"{pair(r, 'sparsity_points', digits=2)} | {pair(r, 'fpd', 1e3, 2)} | "
                         f"{pair(r, 'kpd', 1e3, 2)} | {pair(r, 'separation_mean')} |")
            figures.append((name, folder / name))
    targets = _lines_after(summary, "Targets", summary_path)
    lines += ["", "In brackets: the floor, a second simulator sample against the same reference.", "",
              "Targets, as the benchmark judged them:", "", *[t for t in targets if t.startswith("- ")], ""]
    first, first_folder = figures[0]
    lines += [_image(first_folder / "average_shower.png", f"{first}: average shower per layer", out_dir), "",
              _image(first_folder / "features.png", f"{first}: shower features, generated vs reference", out_dir), ""]
    links = "; ".join(f"{name}: [report]({_link(_exists(f / 'report.md'), out_dir)}), "
                      f"[average shower]({_link(_exists(f / 'average_shower.png'), out_dir)}), "
                      f"[features]({_link(_exists(f / 'features.png'), out_dir)})" for name, f in figures)
    return Section("\n".join(lines + [f"Per generator: {links}.", ""]), _verdict_targets("generation", targets))


# --- DQM ------------------------------------------------------------------------------------------------------

def _dqm_faults(runs: list[dict]) -> list[str]:
    faults = [r["faults"] for r in runs]
    d = faults[0]["data"]
    first = next(iter(faults[0]["methods"].values()))
    lines = [f"Real test maps per seed: {d['real_test_good']} untouched, {d['real_test_faulty']} with a fault "
             f"({d['fault_draws_per_test_ls']} draw(s) per test LS); {first['channel']['n_touched']:,} touched and "
             f"{first['channel']['n_untouched']:,} untouched channels (seed {runs[0]['config']['seed']}). "
             f"One false alarm is {100 / d['real_test_good']:.2g}% of the untouched maps. "
             f"Label-free picks per seed: {', '.join(f['label_free_pick']['method'] for f in faults)}.", "",
             "| detector | map AUC | channel AUC | false alarms at 90% efficiency | 6-class accuracy | sim map AUC "
             "| train [s] |", "|---|---|---|---|---|---|---|"]
    for kind in ("methods", "baselines"):
        for name in faults[0][kind]:
            rows = [f[kind][name] for f in faults]
            lines.append(f"| {name}{'' if kind == 'methods' else ' (no training)'} | "
                         f"{_mean_std([r['map']['auc'] for r in rows])} | "
                         f"{_mean_std([r['channel']['auc'] for r in rows], digits=4)} | "
                         f"{_mean_std([r['false_alarm']['rate'] for r in rows])} | "
                         f"{_mean_std([r.get('accuracy') for r in rows])} | "
                         f"{_mean_std([r.get('sim_map_auc') for r in rows])} | "
                         f"{_mean_std([r.get('train_seconds') for r in rows], digits=0)} |")
    return lines


def _dqm_run(runs: list[dict]) -> list[str]:
    lines = ["| model | maps | AUC, test half | AUC per LS range (mean ± std over seeds) |", "|---|---|---|---|"]
    for model, per_how in runs[0]["run"].items():
        for how in per_how:
            rows = [r["run"][model][how] for r in runs]
            bins = [f"LS {b['ls'][0]}–{b['ls'][1]}: {_mean_std([r['by_ls'][i]['auc'] for r in rows])}"
                    for i, b in enumerate(rows[0]["by_ls"])]
            lines.append(f"| {model} | {how} | {_mean_std([r['auc'] for r in rows])} | {'; '.join(bins)} |")
    return lines


DQM_FIGURES = {"roc_faults": "ROC curves of the fault detectors", "anomaly_maps": "per-channel anomaly maps",
               "occupancy": "mean occupancy, sim vs real, per depth",
               "run_robustness": "run classification per LS range"}


def dqm(bench: Path, out_dir: Path) -> Section:
    folder = bench / "dqm"
    summary_path, path = folder / "SUMMARY.md", folder / "results.json"
    summary, results = _text(summary_path), _json(path)
    with _reading(summary_path, "benchmarks/dqm.py"):
        command = re.search(r"`(python benchmarks/dqm\.py[^`]*)`", summary).group(1)
    lines, targets = [], []
    with _reading(path, "benchmarks/dqm.py"):
        m = next(iter(results["cases"].values()))[0]["machine"]  # a run's own record: the top one lacks the processor
        lines += [f"- command: `{command}`",
                  f"- machine: {m['platform']}, {m['processor']}, {m['threads']} torch threads, torch {m['torch']}", ""]
        for case, runs in results["cases"].items():
            seeds = [r["config"]["seed"] for r in runs]
            wall = _mean_std([r["wall_seconds"] for r in runs], digits=0)
            lines += [f"### Fault detection: {runs[0]['faults']['data']['real']}", "",
                      f"Seeds {seeds}; `sim2real dqm` wall time per seed {wall} s "
                      f"({'both tasks' if 'run' in runs[0] else 'fault task only'}).", "",
                      *_dqm_faults(runs), "", "Targets, for the label-free pick:", ""]
            for name in runs[0]["faults"]["targets"]:
                met = [r["faults"]["targets"][name]["met"] for r in runs]
                verdict = f"met in {sum(met)}/{len(met)} seeds"
                lines.append(f"- {name}: {verdict}")
                targets.append(Target(f"DQM, {case}", name, verdict, all(met)))
            lines.append("")
            if "run" in runs[0]:
                lines += ["### Run classification (two simulated runs)", "", *_dqm_run(runs), ""]
            figures = folder / case / "figures"
            shown = [stem for stem in DQM_FIGURES if (figures / f"{stem}.png").exists()]
            if not shown:
                raise NoteError(f"{_rel(figures)}: no DQM figure (expected {', '.join(DQM_FIGURES)} .png)")
            lines.append(f"Figures (seed {seeds[0]}): " + ", ".join(
                f"[{DQM_FIGURES[stem]}]({_link(figures / f'{stem}.png', out_dir)})" for stem in shown)
                + f"; the [report]({_link(_exists(folder / case / 'report.md'), out_dir)}).")
            lines.append("")
    simulated = folder / "simulated" / "figures"
    lines += [_image(simulated / "roc_faults.png", "DQM, simulated real domain: ROC curves of the fault detectors",
                     out_dir), "",
              _image(simulated / "run_robustness.png", "DQM: run classification per LS range", out_dir), ""]
    return Section("\n".join(lines), targets)


# --- the kernels (benchmarks/RESULTS.md) ---------------------------------------------------------------------

def kernels(bench: Path) -> Section:
    path = bench / "RESULTS.md"
    text = _text(path)
    produced = next((line for line in text.splitlines() if line.startswith("Produced ")), None)
    if produced is None:
        raise NoteError(f"{_rel(path)}: no 'Produced ...' line (expected the output of benchmarks/run.py)")
    machine = [line for line in _lines_after(text, "## Machine", path)[1:] if line.strip()]
    table = _table_at(_lines_after(text, "## Targets", path), "| target | measured | result |", path)
    targets = []
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) != 3:
            raise NoteError(f"{_rel(path)}: a targets row without 3 cells: {row!r}")
        verdict = cells[2].strip("*")
        if verdict in ("PASS", "FAIL"):
            targets.append(Target("kernels", cells[0], verdict, verdict == "PASS"))
        elif verdict.startswith("not run"):
            targets.append(Target("kernels", cells[0], verdict, None))
    body = [produced, "", "Machine:", "", *machine, "", table]
    return Section("\n".join(body), targets)


# --- the simulator (README.md) -------------------------------------------------------------------------------

def simulator_tables(readme: Path) -> dict[str, str]:
    lines = _text(readme).splitlines()
    return {name: _table_at(lines, header, readme) for name, header in README_TABLES.items()}


# --- targets ---------------------------------------------------------------------------------------------------

def _targets_table(targets: list[Target]) -> str:
    if not targets:
        return "None."
    rows = ["| benchmark | target | verdict |", "|---|---|---|"]
    rows += [f"| {t.benchmark} | {t.text.replace('|', '/')} | {t.verdict} |" for t in targets]
    return "\n".join(rows)


# --- the note ----------------------------------------------------------------------------------------------------

def build(*, benchmarks: Path = REPO / "benchmarks", readme: Path = REPO / "README.md",
          template: Path = TEMPLATE, out: Path = OUT) -> str:
    """The note's Markdown, with figure links relative to ``out``'s folder."""
    out_dir = out.resolve().parent
    text = _text(template)
    sections = {"main_job": main_job(benchmarks, out_dir), "translation": translation(benchmarks, out_dir),
                "generation": generation(benchmarks, out_dir), "dqm": dqm(benchmarks, out_dir),
                "kernels": kernels(benchmarks)}
    targets = [t for section in sections.values() for t in section.targets]
    values = {name: section.text for name, section in sections.items()}
    values |= {f"simulator_{name}": table for name, table in simulator_tables(readme).items()}
    values |= {
        "protocol": protocol(benchmarks),
        "tuning": tuning(benchmarks),
        "translation_downstream": translation_downstream(benchmarks, out_dir),
        "targets_missed": _targets_table([t for t in targets if t.met is False]),
        "targets_met": _targets_table([t for t in targets if t.met]),
        "targets_not_run": _targets_table([t for t in targets if t.met is None]),
    }

    def fill(match: re.Match) -> str:
        name = match.group(1)
        if name not in values:
            raise NoteError(f"{_rel(template)}: unknown placeholder {{{{ {name} }}}}; "
                            f"known: {', '.join(sorted(values))}")
        return values[name].strip()

    return re.sub(r"\{\{\s*(\w+)\s*\}\}", fill, text)


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False,
                                     **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as tmp:
        tmp.write(data)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)


def write_pdf(note: Path, pdf: Path) -> None:
    """The note as a PDF through pandoc and xelatex (DejaVu fonts, for the Greek letters and arrows)."""
    missing = [tool for tool in ("pandoc", "xelatex") if shutil.which(tool) is None]
    if missing:
        raise NoteError(f"--pdf needs {' and '.join(missing)} (e.g. apt-get install pandoc texlive-xetex "
                        "texlive-latex-recommended fonts-dejavu-core)")
    with tempfile.TemporaryDirectory(dir=pdf.parent, prefix=".make_note.") as work:
        target = Path(work) / pdf.name
        command = ["pandoc", str(note), "-o", str(target), "--pdf-engine=xelatex", f"--resource-path={note.parent}",
                   "-V", "mainfont=DejaVu Serif", "-V", "monofont=DejaVu Sans Mono", "-V", "fontsize=9pt",
                   "-V", "geometry:margin=1.5cm", "-V", "colorlinks=true"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise NoteError(f"{pdf.name}: pandoc failed ({last})")
        write_atomic(pdf, target.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", type=Path, default=REPO / "benchmarks", help="the benchmark outputs")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md", help="the simulator's knob tables")
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--pdf", action="store_true", help="also write the PDF beside --out (pandoc, xelatex)")
    args = parser.parse_args(argv)
    try:
        write_atomic(args.out, build(benchmarks=args.benchmarks, readme=args.readme, template=args.template,
                                     out=args.out))
        print(f"written {args.out}")
        if args.pdf:
            pdf = args.out.with_suffix(".pdf")
            write_pdf(args.out, pdf)
            print(f"written {pdf}")
    except NoteError as error:
        print(f"make_note: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
