"""sim2real_fast.report: PNG figures written atomically, exact table formatting, report.md sections, bad inputs."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from sim2real_fast import report, simulate

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASSES = ["e+", "gamma", "pi+"]


def assert_png(path):
    """A readable, non-empty PNG and no temporary file left beside it."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_plot_roc(tmp_path, rng):
    labels = rng.integers(0, 3, 200)
    good = np.eye(3)[labels] + rng.random((200, 3))
    probs = {"source_only": rng.random((200, 3)), "dann": torch.from_numpy(good / good.sum(1, keepdims=True))}
    report.plot_roc(tmp_path / "roc.png", labels, probs, class_names=CLASSES)
    assert_png(tmp_path / "roc.png")
    no_pions = torch.from_numpy(labels % 2)  # a class without events: its panel has no curve
    report.plot_roc(tmp_path / "roc.png", no_pions, probs, class_names=CLASSES)
    assert_png(tmp_path / "roc.png")


def test_plot_roc_refuses_bad_inputs(tmp_path, rng):
    labels = rng.integers(0, 3, 50)
    with pytest.raises(ValueError, match="probs_by_method must be a non-empty dict"):
        report.plot_roc(tmp_path / "roc.png", labels, {}, class_names=CLASSES)
    with pytest.raises(ValueError, match=r"probs_by_method\['dann'\] must be \(N, C\) = \(50, 3\)"):
        report.plot_roc(tmp_path / "roc.png", labels, {"dann": rng.random((49, 3))}, class_names=CLASSES)
    with pytest.raises(ValueError, match=r"labels must be .* class indices in \[0, 3\)"):
        report.plot_roc(tmp_path / "roc.png", labels + 1, {"dann": rng.random((50, 3))}, class_names=CLASSES)
    assert list(tmp_path.iterdir()) == []


def test_plot_embeddings(tmp_path, rng):
    features = {
        "source_only": (rng.normal(size=(300, 8)), rng.normal(size=(200, 8)) + 2.0),
        "dann": (torch.randn(300, 8), torch.randn(200, 8)),
    }
    report.plot_embeddings(tmp_path / "embeddings.png", features, max_points=100)
    assert_png(tmp_path / "embeddings.png")


def test_plot_embeddings_refuses_bad_inputs(tmp_path, rng):
    with pytest.raises(ValueError, match="features must be a non-empty dict"):
        report.plot_embeddings(tmp_path / "e.png", {})
    with pytest.raises(ValueError, match=r"features\['dann'\] must be .* same F >= 2, got \(10, 8\) and \(10, 7\)"):
        report.plot_embeddings(tmp_path / "e.png", {"dann": (rng.random((10, 8)), rng.random((10, 7)))})
    with pytest.raises(ValueError, match=r"features\['dann'\]\[1\] must be 2-D"):
        report.plot_embeddings(tmp_path / "e.png", {"dann": (rng.random((10, 8)), rng.random(8))})
    with pytest.raises(ValueError, match="a \\(sim, real\\) pair"):
        report.plot_embeddings(tmp_path / "e.png", {"dann": rng.random((10, 8))})


def test_plot_distributions_with_log_axis_constant_and_non_finite_values(tmp_path, rng):
    quantities = {
        "total energy [GeV]": {"sim": rng.gamma(5.0, 10.0, 500), "real": rng.gamma(5.0, 11.0, 400)},
        "sparsity layer_2": {"sim": np.zeros(100), "real": np.r_[np.zeros(99), np.nan]},
    }
    report.plot_distributions(tmp_path / "d.png", quantities, bins=20, log_y=True)
    assert_png(tmp_path / "d.png")


def test_plot_distributions_refuses_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="quantities must be a non-empty dict"):
        report.plot_distributions(tmp_path / "d.png", {})
    with pytest.raises(ValueError, match=r"quantities\['e'\] must be a non-empty dict"):
        report.plot_distributions(tmp_path / "d.png", {"e": {}})
    with pytest.raises(ValueError, match=r"quantities\['e'\]\['real'\] has no finite value"):
        report.plot_distributions(tmp_path / "d.png", {"e": {"sim": np.ones(3), "real": np.full(3, np.nan)}})
    with pytest.raises(ValueError, match=r"quantities\['e'\]\['sim'\] must be 1-D"):
        report.plot_distributions(tmp_path / "d.png", {"e": {"sim": np.ones((3, 2))}})
    with pytest.raises(ValueError, match=r"quantities\['e'\]\['sim'\] must be a 1-D array of numbers"):
        report.plot_distributions(tmp_path / "d.png", {"e": {"sim": [1.0, "x"]}})
    with pytest.raises(ValueError, match="bins must be a positive int"):
        report.plot_distributions(tmp_path / "d.png", {"e": {"sim": np.ones(3)}}, bins=0)


def test_plot_training_curves(tmp_path):
    histories = {
        "dann": [{"stage": "pretrain", "epoch": e, "loss": 1.0 / (e + 1), "ce": 0.9 / (e + 1)} for e in range(3)]
        + [{"stage": "adapt", "epoch": e, "loss": 0.6, "ce": 0.4, "dann": 0.2, "domain_accuracy": 0.6}
           for e in range(3)],
        "source_only": [{"stage": "train", "epoch": e, "loss": 1.0 / (e + 1)} for e in range(4)],
    }
    report.plot_training_curves(tmp_path / "t.png", histories)
    assert_png(tmp_path / "t.png")
    with pytest.raises(ValueError, match=r"histories\['dann'\] must be a non-empty list"):
        report.plot_training_curves(tmp_path / "t.png", {"dann": []})
    with pytest.raises(ValueError, match=r"histories\['dann'\]\[0\] must be a dict with 'stage', 'epoch' and 'loss'"):
        report.plot_training_curves(tmp_path / "t.png", {"dann": [{"epoch": 0, "loss": 1.0}]})


def test_a_failing_plot_keeps_the_previous_file(tmp_path, rng, monkeypatch):
    path = tmp_path / "roc.png"
    path.write_bytes(b"old")
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        report.plot_roc(path, np.arange(4) % 2, {"m": rng.random((4, 2))}, class_names=["a", "b"])
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def test_shower_quantities_on_simulated_showers():
    showers = simulate.showers(50, seed=0)
    quantities = report.shower_quantities(showers.images, showers.energy, showers.geometry)
    layers = [layer.name for layer in showers.geometry.layers]
    assert len(quantities) == 2 + 6 * len(layers)
    assert {"total energy [GeV]", "incident energy [GeV]", "layer_0 energy fraction", "layer_1 width x [mm]",
            "sparsity layer_2"} <= quantities.keys()
    for name, values in quantities.items():
        assert values.shape == (50,) and np.isfinite(values).all(), name
    np.testing.assert_allclose(quantities["incident energy [GeV]"], showers.energy.numpy())
    fractions = sum(quantities[f"{layer} energy fraction"] for layer in layers)
    np.testing.assert_allclose(fractions[quantities["total energy [GeV]"] > 0], 1.0, rtol=1e-6)
    assert np.all((quantities["sparsity layer_0"] >= 0) & (quantities["sparsity layer_0"] <= 1))
    with pytest.raises(ValueError, match=r"energy \(N,\), got \(50, 504\) and \(49,\)"):
        report.shower_quantities(showers.images, showers.energy[:49], "calogan")


def test_shower_quantities_width_unit_follows_the_geometry():
    images = torch.rand(4, 7 * 72 * 84)
    assert "depth1 width x [cells]" in report.shower_quantities(images, np.ones(4), "hcal")


RESULTS = {
    "source_only": {"target_accuracy": 0.71234, "target_f1": 0.7049, "target_auc": 0.9, "source_accuracy": 0.95,
                    "gap_recovered": 0.0, "a_distance": 1.5234, "mmd": 0.034567, "train_seconds": 12.34,
                    "energy_joules": None},
    "dann+pseudo_label": {"target_accuracy": {"mean": 0.8, "std": 0.0123}, "target_f1": float("nan"),
                          "gap_recovered": {"mean": 0.4, "std": float("nan")}, "mmd": np.float32(0.5),
                          "energy_joules": 1234.56},
}


def test_results_table_formats_percent_mean_std_and_missing_values():
    columns = ("target_accuracy", "target_f1", "target_auc", "source_accuracy", "gap_recovered", "a_distance", "mmd",
               "train_seconds", "energy_joules")
    assert report.results_table(RESULTS, columns=columns) == (
        "| method | real accuracy [%] | real F1 [%] | real AUC [%] | sim accuracy [%] | gap recovered [%] "
        "| A-distance | MMD | train time [s] | energy [J] |\n"
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        "| source_only | 71.2 | 70.5 | 90.0 | 95.0 | 0.0 | 1.523 | 0.0346 | 12.3 | – |\n"
        "| dann+pseudo_label | 80.0 ± 1.2 | – | – | – | 40.0 | – | 0.5000 | – | 1234.6 |"
    )
    assert report.results_table(RESULTS).splitlines()[0].startswith(
        "| method | real accuracy [%] | real acc., last epoch [%] | real e/γ AUC | real π/EM AUC | sim accuracy [%]")
    assert report.results_table(RESULTS, columns=["target_accuracy", "pseudo_kept"]) == (
        "| method | real accuracy [%] | pseudo_kept |\n| :--- | ---: | ---: |\n"
        "| source_only | 71.2 | – |\n| dann+pseudo_label | 80.0 ± 1.2 | – |"
    )


def test_text_table_aligns_the_same_cells():
    table = report.text_table(RESULTS, columns=["target_accuracy", "mmd"])
    assert table == (
        "method             real accuracy [%]     MMD\n"
        "-----------------  -----------------  ------\n"
        "source_only                     71.2  0.0346\n"
        "dann+pseudo_label         80.0 ± 1.2  0.5000"
    )


def test_tables_refuse_bad_inputs():
    with pytest.raises(ValueError, match="results must be a non-empty dict"):
        report.results_table({})
    with pytest.raises(ValueError, match=r"results\['dann'\] must be a dict of scores"):
        report.text_table({"dann": 0.8})
    with pytest.raises(TypeError, match=r"results\['dann'\]\['mmd'\]: expected a number"):
        report.results_table({"dann": {"mmd": "small"}})


def test_write_report_has_every_section(tmp_path):
    (tmp_path / "figures").mkdir()
    per_class = {"e+": {"recall": 0.5, "support": 10}, "gamma": {"recall": 1.0, "support": 12},
                 "pi+": {"recall": 0.9, "support": 8}}
    confusion = [[5, 5, 0], [0, 12, 0], [0, 1, 7]]
    results = {**RESULTS, "coral": {"target_accuracy": 0.75, "per_class": per_class, "confusion": confusion}}
    selection = {"dann+pseudo_label": {"entropy": {"epoch": 3, "stage": "adapt", "target_accuracy": 0.78},
                                       "oracle": {"epoch": 5, "stage": "adapt", "target_accuracy": 0.82}}}
    path = report.write_report(
        tmp_path / "report.md",
        results=results,
        figures={"ROC curves": "figures/roc.png", "Embeddings": tmp_path / "figures" / "embeddings.png"},
        config={"preset": "default", "events": 2000, "seeds": [0, 1], "geometry": "calogan", "class_names": CLASSES,
                "gap_threshold": 0.05},
        selection=selection,
        alarms={"source_only": 0.2377},
        notes=["pseudo-labels kept: 83%"],
    )
    text = path.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures", "report.md"]
    assert report.results_table(results) in text
    assert "- **seeds**: 0, 1" in text and f"/ {torch.__version__}" in text
    assert "![ROC curves](figures/roc.png)" in text and "![Embeddings](figures/embeddings.png)" in text
    assert "## Sim-to-real gap alarms" in text and "by more than 5.0 points" in text
    assert "- **source_only**: 23.8 points" in text
    assert "## Model selection" in text
    assert "| dann+pseudo_label | entropy | adapt | 3 | 78.0 | -4.0 |" in text
    assert "| dann+pseudo_label | oracle | adapt | 5 | 82.0 | – |" in text
    assert "| gamma | 100.0 | 12 |" in text and "| e+ | 5 | 5 | 0 |" in text
    assert text.rstrip().endswith("- pseudo-labels kept: 83%")
    assert text.index("## Results") < text.index("## Sim-to-real") < text.index("## Model selection") < text.index(
        "## Figures") < text.index("## Per-class") < text.index("## Notes")


def test_write_report_says_when_no_alarm_and_leaves_out_absent_sections(tmp_path):
    text = report.write_report(tmp_path / "r.md", results=RESULTS, figures={}, config={}, alarms={}).read_text()
    assert "No method's sim accuracy exceeds its real accuracy by more than the threshold." in text
    assert "## Model selection" not in text and "## Figures" not in text and "## Per-class" not in text


def test_write_report_takes_per_class_scores_as_lists_and_multi_seed_confusion(tmp_path):
    results = {"dann": {"per_class": {"f1": [0.5, {"mean": 0.8, "std": 0.1}]},
                        "confusion": {"mean": [[1.5, 0.5], [0.0, 2.0]], "std": [[0.5, 0.5], [0.0, 0.0]]}}}
    text = report.write_report(tmp_path / "r.md", results=results, figures={}, config={"class_names": ["a", "b"]})
    text = text.read_text()
    assert "| a | 50.0 |\n| b | 80.0 ± 10.0 |" in text
    assert "Confusion matrix (mean over seeds):" in text and "| a | 1.5 | 0.5 |" in text


def test_write_report_takes_scikit_learns_classification_report(tmp_path):
    from sklearn.metrics import classification_report

    per_class = classification_report([0, 0, 1, 1], [0, 1, 1, 1], target_names=["a", "b"], output_dict=True)
    results = {"m": {"target_accuracy": 0.75, "per_class": per_class}}
    text = report.write_report(tmp_path / "r.md", results=results, figures={}, config={}).read_text()
    table = text[text.index("### m"):]
    assert "| class | precision [%] | recall [%] | f1-score [%] | support |" in table
    assert "| a | 100.0 | 50.0 | 66.7 | 2 |" in table and "| macro avg |" in table and "accuracy" not in table


def test_write_report_refuses_a_confusion_matrix_of_the_wrong_size(tmp_path):
    results = {"dann": {"target_accuracy": 0.8, "confusion": [[1, 2], [3, 4]]}}
    with pytest.raises(ValueError, match=r"results\['dann'\]\['confusion'\] must be a \(C, C\) matrix with C = 3"):
        report.write_report(tmp_path / "r.md", results=results, figures={}, config={"class_names": CLASSES})
    assert list(tmp_path.iterdir()) == []


def test_paired_and_gap_decomposition_tables():
    paired = {"mean": 0.05, "low": 0.01, "high": 0.09, "wins": 2 / 3, "runs": 6}
    methods = {"source_only": {"target_accuracy": 0.60}, "target_oracle": {"target_accuracy": {"mean": 0.80}},
               "mask_cells": {"target_accuracy": 0.65, "vs_source_only": {"target_accuracy": paired}},
               "coral": {"target_accuracy": 0.70, "vs_source_only": {
                   "target_accuracy": paired, "em_auc": {"mean": -0.01, "low": -0.02, "high": 0.0}}}}
    table = report.paired_table(methods)
    assert "| coral | +5.0 [+1.0, +9.0] | -0.010 [-0.020, +0.000] | – | 67% | 6 |" in table
    assert "source_only" not in table
    decomposition = report.gap_decomposition_table(methods)
    assert "| mask_cells | 65.0 | 25.0 |" in decomposition and "coral" not in decomposition
    assert report.gap_decomposition_table({"source_only": {"target_accuracy": 0.6}}) == ""
