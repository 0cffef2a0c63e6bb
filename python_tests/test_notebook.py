"""notebooks/demo.ipynb: committed without outputs, equal to its generator's, and run end to end (nbclient,
a python3 kernel of this interpreter) at its smallest sizes: no error, the gap table with every method's
row and accuracies in [0, 1], paired intervals around their means, and PNG figures."""

import base64
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "demo.ipynb"
METHODS = ("source_only", "mmd", "target_oracle")
SIZES = {"S2R_DEMO_EVENTS": "400", "S2R_DEMO_EPOCHS": "1", "S2R_DEMO_METHOD": "mmd"}


def _needs(module: str):
    return pytest.importorskip(module, reason=f"{module} is not installed (pip install '.[test]' installs it)")


def _generator():
    spec = importlib.util.spec_from_file_location("make_demo", NOTEBOOKS / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The notebook after a run in a python3 kernel of this interpreter (sys.executable), cwd a temporary folder."""
    nbformat = _needs("nbformat")
    nbclient = _needs("nbclient")
    _needs("ipykernel")
    root = tmp_path_factory.mktemp("notebook")
    spec = root / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (tests)", "language": "python"}))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(root / "jupyter"))  # searched first: this python3 wins over any other
        env.setenv("JUPYTER_RUNTIME_DIR", str(root / "runtime"))
        env.setenv("IPYTHONDIR", str(root / "ipython"))
        env.setenv("OMP_NUM_THREADS", "1")
        env.setenv("S2R_DEMO_OUT", str(root / "run"))
        for key, value in SIZES.items():
            env.setenv(key, value)
        nbclient.NotebookClient(notebook, kernel_name="python3", timeout=600, allow_errors=True,
                                resources={"metadata": {"path": str(root)}}).execute()
    return notebook


def _outputs(notebook, kind: str):
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == kind]


def _stdout(notebook) -> str:
    return "".join(o.text for o in _outputs(notebook, "stream") if o.name == "stdout")


def _percent(cell: str) -> float:
    return float(cell.split("±")[0]) / 100


def test_committed_notebook_has_no_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def test_committed_notebook_is_the_generators():
    nbformat = _needs("nbformat")
    assert json.loads(nbformat.writes(_generator().build())) == json.loads(NOTEBOOK.read_text())


def test_notebook_says_it_is_a_demonstration():
    text = " ".join("".join(cell["source"]) for cell in json.loads(NOTEBOOK.read_text())["cells"]
                    if cell["cell_type"] == "markdown")
    assert "A demonstration, not a measurement" in text and "benchmarks/main_job/SUMMARY.md" in text


def test_notebook_runs_without_errors(executed):
    errors = [f"{o.ename}: {o.evalue}" for o in _outputs(executed, "error")]
    assert not errors, errors
    assert all(cell.execution_count is not None for cell in executed.cells if cell.cell_type == "code")


def test_gap_table_has_every_method_with_accuracies_in_range(executed):
    text = _stdout(executed)
    assert f"gap table: preset stress, {SIZES['S2R_DEMO_EVENTS']} showers per domain" in text
    lines = text.split("gap table:", 1)[1].splitlines()[1:]
    header = re.split(r"\s{2,}", lines[0].strip())
    assert header[:3] == ["method", "real accuracy [%]", "sim accuracy [%]"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    assert list(rows) == list(METHODS)
    for method, cells in rows.items():
        for accuracy in (_percent(cells[1]), _percent(cells[2])):
            assert math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0, (method, cells)


def test_paired_intervals_hold_their_means(executed):
    text = _stdout(executed).split("paired differences to source_only", 1)[1]
    found = {}
    for method in METHODS[1:]:
        row = re.search(rf"^\| {re.escape(method)} \| ([-+]\d+\.\d) \[([-+]\d+\.\d), ([-+]\d+\.\d)\] \|", text, re.M)
        assert row, f"no paired row for {method} in:\n{text}"
        found[method] = tuple(map(float, row.groups()))
    for method, (mean, low, high) in found.items():
        assert low <= mean <= high, (method, mean, low, high)


def test_notebook_draws_png_figures(executed):
    images = [base64.b64decode(o.data["image/png"]) for o in _outputs(executed, "display_data")
              if "image/png" in o.data]
    assert len(images) >= 4  # the shower distributions, the ROC curves, the embeddings, the training curves
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 1000 for image in images)
