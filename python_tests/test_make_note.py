"""docs/make_note.py: the technical note's tables hold the numbers of the committed benchmark outputs, follow
them when they change, and a missing or malformed output stops the script with one line naming the file."""

import importlib.util
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "docs" / "make_note.py"
BENCH = REPO / "benchmarks"

spec = importlib.util.spec_from_file_location("make_note", SCRIPT)
make_note = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_note)


@pytest.fixture(scope="module")
def note(tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("note") / "note.md"
    assert make_note.main(["--out", str(out)]) == 0
    return out.read_text(encoding="utf-8"), out


@pytest.fixture
def outputs(tmp_path) -> Path:
    """A copy of the committed benchmark outputs (no scripts) to change."""
    return Path(shutil.copytree(BENCH, tmp_path / "benchmarks", ignore=shutil.ignore_patterns("*.py", "__pycache__")))


def _section(text: str, start: str, end: str = "\n## ") -> str:
    body = text.split(start, 1)[1]
    return body.split(end, 1)[0]


def _row(text: str, name: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _numbers(cell: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"[-+]?\d[\d,]*\.?\d*", cell)]


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_main_job_tables_hold_the_results(note):
    text, _ = note
    for case in ("stress", "realistic", "stress-label-shift"):
        results = json.loads((BENCH / "main_job" / case / "results.json").read_text())
        section = _section(text, f"\n### {case}\n", "\n### ")
        for method in ("source_only", "mmd", "domain_randomization"):
            entry = results["methods"][method]
            cells = _row(section, method)
            mean, spread = _numbers(cells[1])
            assert mean == pytest.approx(100 * entry["target_accuracy"], abs=0.051)
            assert spread == pytest.approx(100 * entry["spread"]["target_accuracy"], abs=0.051)
            assert _numbers(cells[7])[0] == pytest.approx(100 * entry["source_accuracy"], abs=0.051)
            if method != "source_only":
                d = entry["vs_source_only"]["target_accuracy"]
                expected = [100 * d["mean"], 100 * d["low"], 100 * d["high"]]
                assert _numbers(cells[2]) == pytest.approx(expected, abs=0.051)


def test_main_job_rows_equal_the_benchmarks_own_summary(note):
    text, _ = note
    summary = (BENCH / "main_job" / "SUMMARY.md").read_text()
    shown = re.compile(r"\| (source_only|target_oracle|mmd|coral|dann) \|")
    rows = [line for line in summary.splitlines() if shown.match(line)]
    assert len(rows) == 15
    assert all(row in text for row in rows)


def test_translation_generation_and_dqm_tables_hold_the_results(note):
    text, _ = note
    translation = json.loads((BENCH / "translation" / "results.json").read_text())
    cells = _row(_section(text, "## Results: image translation"), "cyclegan")
    runs = translation["cyclegan"]
    start, translated, spread, floor = _numbers(cells[1])
    assert start == pytest.approx(statistics.fmean(r["auc_start"] for r in runs), abs=5e-4)
    assert translated == pytest.approx(statistics.fmean(r["auc_translated"] for r in runs), abs=5e-4)
    assert spread == pytest.approx(statistics.stdev(r["auc_translated"] for r in runs), abs=5e-4)
    assert floor == pytest.approx(statistics.fmean(r["auc_floor"] for r in runs), abs=5e-4)
    assert _numbers(cells[-1])[0] == pytest.approx(statistics.fmean(r["apply_per_s"] for r in runs), abs=0.5)

    generation = json.loads((BENCH / "generation" / "results.json").read_text())
    section = _section(text, "## Results: generative fast simulation")
    for name, r in generation.items():
        cells = _row(section, name)
        assert _numbers(cells[3]) == pytest.approx([r["auc_features_generated"], r["auc_features_floor"]], abs=5e-4)
        assert _numbers(cells[9]) == pytest.approx([1e3 * r["fpd_generated"], 1e3 * r["fpd_floor"]], abs=5e-3)

    dqm = json.loads((BENCH / "dqm" / "results.json").read_text())
    runs = dqm["cases"]["simulated"]
    section = _section(text, "### Fault detection: simulated", "\n### ")
    for name, kind in (("pseudo_label", "methods"), ("zscore (no training)", "baselines")):
        key = name.split()[0]
        aucs = [r["faults"][kind][key]["map"]["auc"] for r in runs]
        assert _numbers(_row(section, name)[1]) == pytest.approx([statistics.fmean(aucs), statistics.stdev(aucs)],
                                                                 abs=5e-4)


def test_kernel_targets_and_commands_are_the_outputs_own(note):
    text, _ = note
    results = (BENCH / "RESULTS.md").read_text()
    targets = results.split("## Targets", 1)[1].split("\n## ", 1)[0].strip()
    assert targets in text
    for summary in ("main_job", "translation", "generation", "dqm"):
        command = re.search(r"`(python benchmarks/[^`]+)`", (BENCH / summary / "SUMMARY.md").read_text()).group(1)
        assert f"`{command}`" in text
    assert "| kernels | CPU gradient reversal, 64M floats: ours no slower than pytorch-adapt | FAIL |" in text


def test_note_is_filled_and_its_links_resolve(note):
    text, out = note
    assert "{{" not in text and "}}" not in text
    links = re.findall(r"\]\(([^)]+\.(?:png|md))\)", text)
    assert len(links) > 20
    broken = [link for link in links if not (out.parent / link).is_file()]
    assert not broken, broken


def test_note_follows_a_rerun_benchmark(outputs, tmp_path):
    path = outputs / "generation" / "results.json"
    results = json.loads(path.read_text())
    results["vae"]["auc_features_generated"] = 0.6789
    path.write_text(json.dumps(results))
    out = tmp_path / "note.md"
    assert make_note.main(["--benchmarks", str(outputs), "--out", str(out)]) == 0
    assert _numbers(_row(out.read_text(), "vae")[3]) == [0.679, 0.503]


@pytest.mark.parametrize("missing", ["generation/results.json", "main_job/stress/figures/roc.png",
                                     "dqm/SUMMARY.md", "RESULTS.md", "tuning/chosen.yaml"])
def test_a_missing_output_is_one_line_naming_it(outputs, tmp_path, missing):
    (outputs / missing).unlink()
    done = _run("--benchmarks", str(outputs), "--out", str(tmp_path / "note.md"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and missing in done.stderr, done.stderr
    assert not (tmp_path / "note.md").exists()


def test_a_malformed_output_is_one_line_naming_it(outputs, tmp_path):
    (outputs / "translation" / "results.json").write_text("{not json")
    results = json.loads((outputs / "main_job" / "realistic" / "results.json").read_text())
    del results["methods"]["source_only"]["spread"]
    (outputs / "main_job" / "realistic" / "results.json").write_text(json.dumps(results))
    for broken in ("main_job/realistic/results.json", "translation/results.json"):  # in the order the note reads them
        done = _run("--benchmarks", str(outputs), "--out", str(tmp_path / "note.md"))
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert broken in done.stderr
        (outputs / broken).write_text((BENCH / broken).read_text())


def test_committed_note_is_up_to_date():
    committed = REPO / "docs" / "technical-note.md"
    assert make_note.build(out=committed) == committed.read_text(encoding="utf-8"), \
        "docs/technical-note.md is stale: run `python docs/make_note.py`"


@pytest.mark.slow  # xelatex: 10-25 s
@pytest.mark.skipif(not (shutil.which("pandoc") and shutil.which("xelatex")), reason="--pdf needs pandoc and xelatex")
def test_pdf_is_written_beside_the_note(tmp_path):
    done = _run("--out", str(tmp_path / "note.md"), "--pdf")
    assert done.returncode == 0, done.stderr
    pdf = tmp_path / "note.pdf"
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 100_000  # the figures are embedded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["note.md", "note.pdf"]  # no temporary left behind
