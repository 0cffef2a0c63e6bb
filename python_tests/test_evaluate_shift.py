"""evaluate.shift: ~0 for one distribution, large for separated ones, determinism, subsampling, errors."""

import math

import numpy as np
import pytest
import torch

import sim2real_fast as s2r
from sim2real_fast.evaluate import feature_mmd, gap_recovered, proxy_a_distance, two_sample_auc


@pytest.fixture(scope="module")
def sets():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(600, 6))
    same = rng.normal(size=(500, 6))
    shifted = rng.normal(size=(500, 6)) + np.r_[3.0, np.zeros(5)]  # separated along one axis
    return source, same, shifted


def test_proxy_a_distance_is_about_0_for_one_distribution_and_about_2_for_separated_ones(sets):
    source, same, shifted = sets
    assert proxy_a_distance(source, same) < 0.3
    assert proxy_a_distance(source, shifted) > 1.7
    assert 0.0 <= proxy_a_distance(source, same, seed=3) <= 2.0


def test_feature_mmd_is_about_0_for_one_distribution_and_positive_otherwise(sets):
    source, same, shifted = sets
    near = feature_mmd(source, same)
    far = feature_mmd(source, shifted)
    assert abs(near) < 0.01 and far > 0.1


def test_two_sample_auc_is_about_half_for_one_distribution_and_about_1_for_separated_ones(sets):
    source, same, shifted = sets
    assert abs(two_sample_auc(source, same, max_samples=300) - 0.5) < 0.1
    assert two_sample_auc(source, shifted, max_samples=300) > 0.95


def test_seeded_deterministic_and_subsampled_without_replacement(sets):
    source, same, shifted = sets
    assert proxy_a_distance(source, shifted, seed=1, max_samples=200) == proxy_a_distance(source, shifted, seed=1, max_samples=200)
    # (the compiled MMD sums in parallel: the last bits may differ between calls)
    a = feature_mmd(source, same, seed=1, max_samples=100)
    assert a == pytest.approx(feature_mmd(source, same, seed=1, max_samples=100), rel=1e-12)
    assert a != pytest.approx(feature_mmd(source, same, seed=2, max_samples=100), rel=1e-6)
    # max_samples >= N draws every row once (a draw with replacement would repeat rows and change
    # the unbiased estimate): the value is the MMD^2 of the full sets.
    expected = s2r.mmd(torch.from_numpy(same), torch.from_numpy(shifted), estimator="unbiased", bandwidth="mean")
    assert feature_mmd(same, shifted, max_samples=500, seed=5) == pytest.approx(float(expected), rel=1e-9)
    # Tensors and float32 are accepted.
    assert feature_mmd(torch.from_numpy(source).float(), torch.from_numpy(shifted).float()) == pytest.approx(
        feature_mmd(source, shifted), rel=1e-5
    )


def test_gap_recovered():
    assert gap_recovered(0.80, 0.60, 0.90) == pytest.approx(2 / 3)
    assert gap_recovered(0.90, 0.60, 0.90) == pytest.approx(1.0)
    assert gap_recovered(0.55, 0.60, 0.90) == pytest.approx(-1 / 6)
    assert math.isnan(gap_recovered(0.8, 0.9, 0.9)) and math.isnan(gap_recovered(0.8, math.nan, 0.9))


@pytest.mark.parametrize("measure", [proxy_a_distance, feature_mmd, two_sample_auc])
def test_bad_inputs_are_refused(measure):
    x = np.zeros((10, 3))
    with pytest.raises(ValueError, match="same feature size"):
        measure(x, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="target must be 2-D"):
        measure(x, np.zeros(10))
    with pytest.raises(ValueError, match="at least"):
        measure(x, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        measure(x, np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match="max_samples"):
        measure(x, x, max_samples=1)
