"""Writes notebooks/demo.ipynb (no outputs) from the cells below: ``python notebooks/make_demo.py``.

The notebook is committed without outputs; python_tests/test_notebook.py executes it at its smallest
sizes (``S2R_DEMO_EVENTS``, ``S2R_DEMO_EPOCHS``) and checks what it prints and draws.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOK = Path(__file__).resolve().parent / "demo.ipynb"

INTRO = """\
# sim2real_fast: a first look at the sim-to-real gap

A classifier of calorimeter showers (e+, γ, π+) is trained on simulation and applied to a "real"
detector that differs from the simulation by residuals of documented size. This notebook goes through
the package's public API on the embedded simulator:

1. simulate the two domains (`sim2real_fast.simulate`) and compare their showers (`report`);
2. train `source_only` and one adaptation method by hand (`adapt.fit`, `models.predict`, `evaluate`);
3. run the benchmark protocol on both, with the `target_oracle` reference (`workflow.run`, the engine of
   `sim2real run`): label-free checkpoint selection, paired differences with bootstrap intervals, figures.

> **A demonstration, not a measurement.** The sizes below (a few thousand showers per domain, a few
> epochs, one detector instance, two training seeds) are chosen so that the notebook runs in one to
> two minutes on one CPU thread. The classifiers are under-trained, far below what the full run
> reaches, and the differences between methods here are mostly noise. The measured numbers are those
> of the benchmark: `benchmarks/main_job/SUMMARY.md` (`python benchmarks/main_job.py`: the full data
> sizes, several detector instances and training seeds per case), the README's Results section, and
> `docs/technical-note.md`, which `python docs/make_note.py` writes from the benchmark outputs."""

PARAMETERS = """\
import os
import tempfile

# Sizes: small on purpose (see above). The environment variables let a test make them smaller.
EVENTS = int(os.environ.get("S2R_DEMO_EVENTS", "5000"))   # showers per domain (sim and real)
EPOCHS = int(os.environ.get("S2R_DEMO_EPOCHS", "3"))      # epochs of the training stage
METHOD = os.environ.get("S2R_DEMO_METHOD", "mmd")         # the adaptation method beside source_only
PRESET = "stress"       # the real detector: the realistic residuals at 2.5x their size
SEEDS = (0, 1)          # training seeds; the paired intervals need at least two runs
THREADS = 1             # torch threads
OUT = os.environ.get("S2R_DEMO_OUT") or tempfile.mkdtemp(prefix="sim2real-demo-")   # workflow.run's folder"""

SETUP = """\
import torch
from IPython.display import Image, display

import sim2real_fast as s2r
from sim2real_fast import adapt, evaluate, models, report, simulate, workflow

torch.set_num_threads(THREADS)
os.makedirs(OUT, exist_ok=True)
print("sim2real_fast", s2r.__version__, "| torch", torch.__version__, "| build", s2r.build_info())"""

DOMAINS = """\
## 1. Two detectors

The **sim** domain is digitised like an experiment's simulation (preset `nominal`: nominal noise,
pile-up, the known dead cells, zero suppression). The **real** domain is instance 0 of the `stress`
detector: the same digitisation plus the residual families of the README's Simulator section (wider EM
showers, a deeper start, a different pion model, miscalibration, more noise, extra dead and hot cells,
cross-talk and pile-up changes) at 2.5 × their realistic size. The real labels are used for scoring
only (and by the `target_oracle` reference)."""

SIMULATE = """\
sim = simulate.showers(EVENTS, seed=0, effects="nominal")
real = simulate.showers(EVENTS, seed=1, effects=simulate.real_effects(PRESET, detector_seed=0))
geometry = sim.geometry   # CaloGAN: 3 layers, 504 cells; images are (N, 504) cell energies in MeV

for name, showers in (("sim", sim), ("real", real)):
    features = s2r.shower_features(showers.images, geometry)
    response = (features.total / 1000 / showers.energy).mean()
    lit = ", ".join(f"{100 * s:.1f}%" for s in features.sparsity.mean(0))
    print(f"{name:4s} {len(showers.images)} showers: visible / incident energy {response:.4f}; "
          f"cells lit per layer {lit}")"""

DISTRIBUTIONS = """\
quantities = {name: report.shower_quantities(s.images, s.energy, geometry)
              for name, s in (("sim", sim), ("real", real))}
shown = ["total energy [GeV]", "layer_0 energy fraction", "layer_2 energy fraction",
         "layer_1 width x [mm]", "sparsity layer_0", "sparsity layer_1"]
path = os.path.join(OUT, "demo_distributions.png")
report.plot_distributions(path, {q: {name: quantities[name][q] for name in quantities} for q in shown})
display(Image(filename=path))"""

BY_HAND = """\
## 2. By hand: `adapt.fit`

Sim events are split 80/20 into training and validation, real events 50/50 into the adaptation set
(the method sees its showers, never its labels) and the test set. `source_only` trains on labelled
simulation alone; the adaptation method adds its loss between sim and real features (for `mmd`, the
multi-kernel MMD² of the fused `sim2real_fast.mmd` op). The scores below are those of the final
epoch: no model selection yet. "MMD" is the feature-level MMD² between sim validation and real test
events: how far apart the two domains look to the classifier."""

FIT = """\
sim_train, sim_val = adapt.Domain(sim.images, sim.labels, sim.energy, name="sim").split(0.8, seed=0)
real_adapt, real_test = adapt.Domain(real.images, real.labels, real.energy, name="real").split(0.5, seed=0)
classes = evaluate.PARTICLE_CLASSES

scores = {}
for method in ("source_only", METHOD):
    torch.manual_seed(0)
    fitted = adapt.fit(method, models.CaloCNN("calogan"), source=sim_train, target=real_adapt.unlabelled(),
                       config=adapt.AdaptConfig(epochs=EPOCHS, seed=0))
    on_sim = models.predict(fitted.model, fitted.source_transform(sim_val.inputs))
    on_real = models.predict(fitted.model, real_test.inputs)
    scores[method] = {
        "source_accuracy": evaluate.classification_metrics(sim_val.labels, on_sim.probs,
                                                           class_names=classes)["accuracy"],
        "target_accuracy": evaluate.classification_metrics(real_test.labels, on_real.probs,
                                                           class_names=classes)["accuracy"],
        "mmd": evaluate.feature_mmd(on_sim.features, on_real.features),
        "train_seconds": fitted.train_seconds,
    }
print(report.text_table(scores, columns=("source_accuracy", "target_accuracy", "mmd", "train_seconds")))"""

PROTOCOL = """\
## 3. The protocol: `workflow.run`

`workflow.run` (what `sim2real run` calls) simulates both domains itself, trains every method once per
training seed, and scores on the real test set the checkpoint that a **label-free** rule picks (`im`,
information maximisation, chosen on the separate `dev` detector). `target_oracle` trains on the
labelled real adaptation set with source_only's number of steps: the upper reference. The gap table
gives the mean ± standard deviation over the runs; the second table the paired difference of each
method to source_only (same data and seed) with its bootstrap 95% interval (over seeds here, over
detector instances and seeds in the benchmark). "gap recovered" is left out (–) where the oracle is
less than 2 points above source_only: a ratio to a smaller gap would be noise."""

RUN = """\
config = workflow.RunConfig(out=OUT, preset=PRESET, methods=("source_only", METHOD, "target_oracle"),
                            events=EVENTS, real_events=EVENTS, seeds=SEEDS, threads=THREADS, export=False,
                            adapt=adapt.AdaptConfig(epochs=EPOCHS))
results = workflow.run(config, progress=False, log=lambda text: None)
print(f"{len(config.methods)} methods x {len(SEEDS)} seeds in {results['seconds']:.0f} s; written to {OUT}")"""

TABLE = """\
columns = ("target_accuracy", "source_accuracy", "em_auc", "pion_auc", "gap_recovered", "a_distance", "mmd")
table = {method: {key: {"mean": entry[key], "std": entry["spread"][key]} for key in columns}
         for method, entry in results["methods"].items()}
print(f"gap table: preset {PRESET}, {EVENTS} showers per domain, {EPOCHS} epoch(s), seeds {list(SEEDS)}, "
      f"checkpoints picked by {config.selection}; mean ± std over the runs")
print(report.text_table(table, columns=columns))
print()
print("paired differences to source_only (bootstrap 95% intervals):")
print(report.paired_table(results["methods"]))
for method, gap in results["alarms"].items():
    print(f"gap alarm: {method} scores {100 * gap:.1f} points more on sim than on real")"""

FIGURES = """\
for title, path in results["outputs"]["figures"].items():
    if os.path.basename(path) in ("roc.png", "embeddings.png", "training.png"):
        print(title)
        display(Image(filename=path))"""

CLOSING = """\
## Where the real numbers are

Everything above is a demonstration at toy sizes. The measurements, each with the command that
produced it and its machine:

- the sim-to-real benchmark, `stress`, `realistic` and label shift, every method against the trivial
  baselines: `benchmarks/main_job/SUMMARY.md` and the README's Results section;
- image translation, generative fast simulation and DQM: `benchmarks/translation/`,
  `benchmarks/generation/`, `benchmarks/dqm/` (each with SUMMARY.md and results.json);
- all of them in one document: `docs/technical-note.md` (`python docs/make_note.py`).

`OUT` holds this run's `results.json` and `report.md` (every selection rule's pick, per-class scores,
all figures). The full run is `sim2real run` (20,000 showers per domain, every method)."""


def build() -> nbformat.NotebookNode:
    cells = [
        new_markdown_cell(INTRO),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell(SETUP),
        new_markdown_cell(DOMAINS),
        new_code_cell(SIMULATE),
        new_code_cell(DISTRIBUTIONS),
        new_markdown_cell(BY_HAND),
        new_code_cell(FIT),
        new_markdown_cell(PROTOCOL),
        new_code_cell(RUN),
        new_code_cell(TABLE),
        new_code_cell(FIGURES),
        new_markdown_cell(CLOSING),
    ]
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    return new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    })


def write(path: Path = NOTEBOOK) -> Path:
    """Write the notebook atomically (a temporary file in the same folder, then renamed)."""
    notebook = build()
    nbformat.validate(notebook)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                     delete=False, encoding="utf-8") as tmp:
        nbformat.write(notebook, tmp)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)
    return path


if __name__ == "__main__":
    print(f"written {write()}")
