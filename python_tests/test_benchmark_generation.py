"""benchmarks/generation.py: the targets' verdicts from a generator's measured values."""

import argparse
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("generation_benchmark",
                                              Path(__file__).parents[1] / "benchmarks" / "generation.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

ARGS = argparse.Namespace(models=["vae"], events=None, eval_events=20_000, threads=2)


def _result(**changes):
    r = {"train_minutes": 9.0, "epochs": 20, "best_epoch": 18, "sample_per_s": 80_000.0,
         "auc_features_generated": 0.65, "auc_features_floor": 0.51, "auc_cells_generated": 0.8,
         "auc_cells_floor": 0.5, "jsd_features_generated": 0.1, "jsd_features_floor": 0.0,
         "jsd_cells_generated": 0.2, "jsd_cells_floor": 0.0, "ks_ratio_generated": 0.02, "ks_ratio_floor": 0.01,
         "sparsity_points_generated": 0.5, "sparsity_points_floor": 0.1, "fpd_generated": 0.004,
         "fpd_floor": 0.0005, "fpd_error_floor": 0.0001, "fpd_error_generated": 0.0002, "kpd_generated": 0.0,
         "kpd_floor": 0.0, "separation_mean_generated": 0.02, "separation_mean_floor": 0.001}
    return {**r, **changes}


def _marks(result):
    line = next(line for line in bench._summary({"vae": result}, ARGS, 1.0) if line.startswith("- vae:"))
    return [part.split(": **")[1].rstrip("*") for part in line[len("- vae: "):].split(", ")]


def test_every_target_passes_when_met():
    assert _marks(_result()) == ["PASS"] * 7


def test_each_target_fails_on_its_own_number():
    for key, value, index in (("sample_per_s", 49_999.0, 0), ("auc_features_generated", 0.71, 1),
                              ("auc_cells_generated", 0.86, 2), ("ks_ratio_generated", 0.031, 3),
                              ("sparsity_points_generated", 1.2, 4), ("fpd_generated", 0.0051, 5),
                              ("train_minutes", 15.5, 6)):
        marks = _marks(_result(**{key: value}))
        assert marks[index] == "FAIL" and marks.count("FAIL") == 1, key


def test_the_fpd_floor_is_at_least_its_error():
    assert _marks(_result(fpd_floor=0.0, fpd_error_floor=0.001, fpd_generated=0.009))[5] == "PASS"
    assert _marks(_result(fpd_floor=0.0, fpd_error_floor=0.001, fpd_generated=0.011))[5] == "FAIL"
