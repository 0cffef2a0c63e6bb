"""evaluate.physics: separation power, W1 / KS, FPD / KPD, classifier AUC, label preservation, energy response."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

import sim2real_fast as s2r
from sim2real_fast.evaluate import (
    classifier_auc,
    compare_features,
    energy_response,
    fpd,
    kpd,
    ks_statistic,
    label_preservation,
    separation_power,
    wasserstein1,
)


def calochallenge_separation(reference, other, bins):
    """CaloChallenge's recipe: density histograms on the reference's edges, times the bin widths."""
    h1, edges = np.histogram(reference, bins=bins, density=True)
    h2, _ = np.histogram(other, bins=edges, density=True)
    h1, h2 = h1 * np.diff(edges), h2 * np.diff(edges)
    return 0.5 * np.sum((h1 - h2) ** 2 / (h1 + h2 + 1e-16))


def test_separation_power_is_0_for_identical_1_for_disjoint_and_matches_a_hand_computed_case():
    x = np.array([0.1, 0.2, 0.6, 0.7, 0.8])
    assert separation_power(x, x.copy(), bins=[0.0, 0.5, 1.0]) == 0.0
    assert separation_power(x, x + 10.0, bins=4) == pytest.approx(1.0)  # b lies wholly in the overflow bin
    assert separation_power(x, x - 10.0, bins=[0.0, 1.0, 11.0]) == pytest.approx(1.0)
    # a: (2/5, 3/5), b: (3/4, 1/4) over [0, 0.5, 1]: 0.5 [(0.35)^2 / 1.15 + (0.35)^2 / 0.85]
    b = np.array([0.1, 0.2, 0.3, 0.9])
    expected = 0.5 * (0.35**2 / 1.15 + 0.35**2 / 0.85)
    assert separation_power(x, b, bins=[0.0, 0.5, 1.0]) == pytest.approx(expected, rel=1e-12)
    # empty bins (h1 + h2 = 0) contribute 0, and the result does not depend on them
    assert separation_power(x, b, bins=[0.0, 0.5, 1.0, 2.0, 3.0]) == pytest.approx(expected, rel=1e-12)


def test_separation_power_matches_calochallenge_per_feature_and_counts_overflow():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 2))
    b = rng.normal(size=(2000, 2)) * np.r_[1.0, 1.3] + np.r_[0.2, 0.0]
    got = separation_power(a, b, bins=40, overflow=False)
    expected = [calochallenge_separation(a[:, j], b[:, j], 40) for j in range(2)]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert got.shape == (2,) and got[0] > 0.005 and got[1] > 0.005
    # b's tails outside a's range: dropped by CaloChallenge, counted by default
    assert (separation_power(a, b, bins=40) > got).all()
    from_tensors = separation_power(torch.as_tensor(a), torch.as_tensor(b), bins=40, overflow=False)
    np.testing.assert_array_equal(from_tensors, got)


def test_wasserstein1_and_ks_statistic_match_scipy_on_a_known_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 3))
    b = rng.normal(size=(3000, 3)) + np.r_[0.0, 0.5, 2.0]
    w1, ks = wasserstein1(a, b), ks_statistic(a, b)
    for j in range(3):
        assert w1[j] == pytest.approx(stats.wasserstein_distance(a[:, j], b[:, j]), rel=1e-12)
        assert ks[j] == pytest.approx(stats.ks_2samp(a[:, j], b[:, j]).statistic, rel=1e-12)
    # W1 of a pure shift is the shift; KS of N(0, 1) vs N(d, 1) is 2 Phi(d / 2) - 1
    np.testing.assert_allclose(w1, [0.0, 0.5, 2.0], atol=0.06)
    np.testing.assert_allclose(ks, 2 * stats.norm.cdf(np.r_[0.0, 0.5, 2.0] / 2) - 1, atol=0.04)
    assert isinstance(wasserstein1(a[:, 1], b[:, 1]), float) and isinstance(ks_statistic(a[:, 1], b[:, 1]), float)


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(2000, 3))
    same = rng.normal(size=(2000, 3))
    shifted = rng.normal(size=(2000, 3)) * np.r_[1.0, 2.0, 1.0] + np.r_[0.6, 0.0, 0.8]
    return real, same, shifted


def test_fpd_is_0_within_its_error_for_one_distribution_and_the_closed_form_for_two_gaussians(gaussians):
    real, same, shifted = gaussians
    value, error = fpd(real, same)
    assert 0.0 <= value <= 3 * error + 1e-6 and error < 0.01
    # ||mu_1 - mu_2||^2 + sum (sqrt(var_1) - sqrt(var_2))^2 = 0.36 + 0.64 + (1 - 2)^2
    value, error = fpd(real, shifted, scale=None)
    assert value == pytest.approx(2.0, abs=0.15) and 0 < error < 0.1
    # standardised with real's mean and std (~ 0 and 1) the same Gaussians give about the same number
    assert fpd(real, shifted)[0] == pytest.approx(value, abs=0.15)
    # jetnet draws with replacement: that adds the samples' own finite-size term, ~ tr C (1/N + 1/M) = 0.02 here
    assert fpd(real[:300], same[:300], replace=True)[0] > 0.015 > fpd(real[:300], same[:300])[0]
    assert fpd(real, shifted, seed=5) != fpd(real, shifted, seed=6) and fpd(real, shifted) == fpd(real, shifted)


def test_kpd_is_0_for_one_distribution_positive_for_shifted_and_degree_1_gives_the_mean_shift(gaussians):
    real, same, shifted = gaussians
    value, error = kpd(real, same)
    assert abs(value) < 2 * error and error < 0.02
    value, error = kpd(real, shifted)
    assert value > 5 * error > 0
    # with k(x, y) = x . y / F + 1, MMD^2 = ||mu_1 - mu_2||^2 / F = (0.36 + 0.64) / 3, estimated by
    # mean_{i != j} x_i . x_j + mean_{i != j} y_i . y_j - 2 mean x_i . y_j (over F)
    value, error = kpd(real, shifted, degree=1, scale=None, batch_size=2000, num_batches=1)
    n = 2000
    within = lambda u: (n**2 * u.mean(0) @ u.mean(0) - (u**2).sum()) / (n * (n - 1))  # noqa: E731
    expected = (within(real) + within(shifted) - 2 * real.mean(0) @ shifted.mean(0)) / 3
    assert value == pytest.approx(expected, rel=1e-9) and error == 0.0
    assert value == pytest.approx(1.0 / 3, abs=0.03)
    # one batch holding every event of both samples: the unbiased estimate over the full kernel matrices
    x, y = real[:200], shifted[:200]
    kxx, kyy, kxy = ((u @ v.T / 3 + 1) ** 4 for u, v in ((x, x), (y, y), (x, y)))
    expected = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (200 * 199) - 2 * kxy.mean()
    assert kpd(x, y, batch_size=200, num_batches=1, scale=None)[0] == pytest.approx(expected, rel=1e-9)


def test_classifier_auc_is_about_half_for_one_distribution_and_near_1_for_separated_ones():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(600, 5)), rng.normal(size=(600, 5))
    auc, spread = classifier_auc(a, b, repeats=3, max_samples=400)
    assert abs(auc - 0.5) < 0.08 and 0 < spread < 0.1
    assert classifier_auc(a, b + np.r_[3.0, 0, 0, 0, 0], repeats=2, max_samples=400)[0] > 0.9
    cells = rng.exponential(20.0, size=(400, 30))  # MeV
    assert abs(classifier_auc(cells, rng.exponential(20.0, size=(400, 30)), on="cells", repeats=2)[0] - 0.5) < 0.1
    assert classifier_auc(cells, rng.exponential(40.0, size=(400, 30)), on="cells", repeats=2)[0] > 0.9


def test_label_preservation_with_a_fixed_linear_classifier():
    model = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))  # class = larger of cells 0, 1
    labels = torch.arange(40) % 2
    sim = torch.zeros(40, 4, dtype=torch.float64)
    sim[torch.arange(40), labels] = 100.0
    translated = sim.clone()
    translated[:10] = sim[:10, [1, 0, 2, 3]]  # cells 0 and 1 swapped: the first 10 events change class
    model.train()
    result = label_preservation(model, sim, translated.numpy(), labels)
    assert result == {"accuracy_sim": 1.0, "accuracy_translated": 0.75, "difference_points": -25.0, "n": 40}
    assert model.training
    assert label_preservation(lambda x: x[:, :2], sim, sim, labels, batch_size=7)["accuracy_translated"] == 1.0


def test_energy_response_is_the_known_factor_per_particle_and_energy_bin():
    rng = np.random.default_rng(4)
    n = 600
    labels = rng.integers(0, 3, n)
    energy = rng.uniform(1.0, 100.0, n)  # GeV
    sim = rng.exponential(50.0, size=(n, 12))
    factor = 1.0 + 0.05 * labels + 0.001 * energy + rng.normal(0.0, 0.01, n)
    translated = sim * factor[:, None]
    bins = [1.0, 10.0, 50.0, 90.0]
    result = energy_response(sim, translated, labels, energy, class_names=["e+", "gamma", "pi+"], bins=bins)
    json.dumps(result)
    assert result["bins"] == bins and list(result["classes"]) == ["e+", "gamma", "pi+"]
    for c, name in enumerate(["e+", "gamma", "pi+"]):
        for k in range(3):
            chosen = (labels == c) & (energy >= bins[k]) & (energy < bins[k + 1])
            entry = result["classes"][name]
            assert entry["n"][k] == chosen.sum()
            assert entry["mean"][k] == pytest.approx(factor[chosen].mean(), rel=1e-12)
            assert entry["error"][k] == pytest.approx(factor[chosen].std(ddof=1) / math.sqrt(chosen.sum()), rel=1e-9)
    # a pure scale: every mean is the scale; events with no simulated energy are left out
    sim[0] = 0.0
    flat = energy_response(sim, 0.9 * sim, labels, energy, class_names=["e+", "gamma", "pi+"], bins=[0.0, 200.0])
    assert all(v["mean"][0] == pytest.approx(0.9, rel=1e-12) for v in flat["classes"].values())
    assert sum(v["n"][0] for v in flat["classes"].values()) == n - 1


def test_compare_features_gives_floor_candidates_and_json_ready_floats():
    rng = np.random.default_rng(5)
    geometry = s2r.geometry.get("calogan")

    def features(scale_mev, n):  # exponential cells, 40% of them hit
        cells = rng.exponential(scale_mev, size=(n, geometry.n_cells)) * (rng.random((n, geometry.n_cells)) < 0.4)
        return s2r.shower_features(torch.from_numpy(cells), geometry)

    real, sim = features(10.0, 600), features(12.0, 500)
    result = compare_features(real, {"real_again": features(10.0, 500), "sim": sim})
    json.loads(json.dumps(result, allow_nan=False))
    names = real.names()
    assert result["names"] == names and result["n_reference"] == 600
    assert set(result["candidates"]) == {"real_again", "sim"}
    entry = result["candidates"]["sim"]
    ref, cand = real.as_tensor().numpy(), sim.as_tensor().numpy()
    j = names.index("energy_layer_1")
    assert entry["features"]["energy_layer_1"]["w1"] == pytest.approx(stats.wasserstein_distance(ref[:, j], cand[:, j]))
    j = names.index("sparsity_layer_2")  # CaloChallenge: 20 bins over [0, 1]
    edges = np.linspace(0, 1, 21)
    assert entry["features"]["sparsity_layer_2"]["separation_power"] == pytest.approx(
        calochallenge_separation(ref[:, j], cand[:, j], edges)
    )
    floor, same = result["floor"], result["candidates"]["real_again"]
    assert floor["n"] == 300 and "halves" in result["floor_note"]
    assert entry["fpd"]["value"] > 10 * max(floor["fpd"]["value"], same["fpd"]["value"], entry["fpd"]["error"])
    assert entry["kpd"]["value"] > 5 * max(floor["kpd"]["value"], same["kpd"]["value"])
    assert entry["auc"]["value"] > 0.9
    assert abs(floor["auc"]["value"] - 0.5) < 0.1 and abs(same["auc"]["value"] - 0.5) < 0.1
    ks = entry["features"]["energy_total"]["ks"]
    assert ks > 0.3 and floor["features"]["energy_total"]["ks"] < 0.15
    assert all(type(v) is float for f in entry["features"].values() for v in f.values())
    no_floor = compare_features(ref[:, :2], {"sim": cand[:, :2]}, names=["a", "b"], bins={"a": 10}, floor=False)
    assert "floor" not in no_floor
    expected = separation_power(ref[:, 0], cand[:, 0], bins=np.histogram_bin_edges(ref[:, 0], 10))
    assert no_floor["candidates"]["sim"]["features"]["a"]["separation_power"] == pytest.approx(expected)


def test_bad_inputs_raise_one_line_value_errors_naming_the_argument():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 2))
    bad = a.copy()
    bad[3, 1] = np.nan
    cases = [
        (lambda: separation_power(a, b), "b must have the same number of features as a"),
        (lambda: wasserstein1(a, b[:, 0]), "b must have the same number of features"),
        (lambda: ks_statistic(bad, a), "a holds NaN"),
        (lambda: fpd(a, bad), "gen holds NaN"),
        (lambda: fpd(a[:2], a), "real needs at least 3 samples"),
        (lambda: fpd(a, a, max_samples=80), "max_samples must be <= the smaller sample"),
        (lambda: kpd(a, a[:, :2]), "gen must have the same number of features as real"),
        (lambda: kpd(a, a, scale="minmax"), "scale must be one of"),
        (lambda: classifier_auc(a, a, repeats=1), "repeats must be an integer >= 2"),
        (lambda: classifier_auc(a, a, on="pixels"), "on must be 'features' or 'cells'"),
        (lambda: separation_power(a, a, bins=[1.0, 0.0]), "bins must be at least 2 finite, increasing edges"),
        (lambda: separation_power(a, a + 100, bins=[0.0, 1.0], overflow=False), "b has no entries inside"),
        (lambda: compare_features(a, {"sim": b}, names=["x", "y", "z"]), "candidates['sim'] must have 3 features"),
        (lambda: compare_features(a, {"sim": a}), "names is required"),
        (lambda: compare_features(a, {"sim": a}, names=["x", "y"]), "names must be 3 distinct names"),
        (lambda: compare_features(a, {"sim": a}, names=["x", "y", "z"], bins={"w": 3}), "bins names features"),
        (lambda: label_preservation(torch.nn.Identity(), a, a[:10], np.zeros(50, dtype=int)), "translated_images must"),
        (lambda: energy_response(a, a, np.zeros(50, dtype=int), np.ones(49), class_names=["e+"], bins=[0, 2]),
         "incident_energy must have 50"),
        (lambda: energy_response(a, a, np.full(50, 3), np.ones(50), class_names=["e+"], bins=[0, 2]), "labels must be"),
        (lambda: compare_features(a, {"sim": a}, names=["x", "y", "z"], bins=[0, 1]), "bins must be None"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        text = str(error.value)
        assert message in text and "\n" not in text, text
