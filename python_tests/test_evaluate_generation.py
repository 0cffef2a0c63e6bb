"""evaluate.generation: generated vs reference showers with the floor, checked against direct formulas."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import optimize

import sim2real_fast as s2r
from sim2real_fast.evaluate import evaluate_generation, write_generation_report
from sim2real_fast.evaluate import generation
from sim2real_fast.evaluate.generation import RATIO
from sim2real_fast.geometry import Geometry, Layer

from helpers import one_thread  # noqa: F401

GEOMETRY = Geometry("tiny", (Layer("a", 3, 4, cell_size=(10.0, 10.0)), Layer("b", 2, 2, cell_size=(20.0, 20.0))))


def showers(n, seed, *, response=0.8, width=1.0, labels=True):
    """n toy showers (MeV) on GEOMETRY: a Gaussian blob of response x E_inc (10% resolution), log-normal cell
    noise, ~20% empty cells."""
    g = torch.Generator().manual_seed(seed)
    energy = torch.empty(n, dtype=torch.float64).uniform_(1.0, 50.0, generator=g)
    centres = GEOMETRY.cell_centres(dtype=torch.float64)
    weights = torch.exp(-(centres**2).sum(1) / (2 * (15.0 * width) ** 2)).expand(n, -1)
    weights = weights * torch.exp(0.3 * torch.randn(n, GEOMETRY.n_cells, generator=g, dtype=torch.float64))
    weights = weights * (torch.rand(n, GEOMETRY.n_cells, generator=g, dtype=torch.float64) > 0.2)
    deposited = 1000.0 * response * energy * (1.0 + 0.1 * torch.randn(n, generator=g, dtype=torch.float64))
    images = deposited[:, None] * weights / weights.sum(1, keepdim=True)
    classes = torch.randint(0, 2, (n,), generator=g) if labels else None
    return SimpleNamespace(images=images.float(), labels=classes, energy=energy)


def features(sample):
    """The evaluated features by hand: shower_features' columns and E_total / E_inc."""
    x = s2r.shower_features(sample.images.double(), GEOMETRY).as_tensor().numpy()
    return np.column_stack([x, x[:, 0] / (1000.0 * sample.energy.numpy())])


def separation(reference, other, edges):
    """0.5 sum (h1 - h2)^2 / (h1 + h2) of unit-sum histograms with an underflow and an overflow bin."""
    def unit(x):
        counts = np.r_[(x < edges[0]).sum(), np.histogram(x, bins=edges)[0], (x > edges[-1]).sum()]
        return counts / counts.sum()

    h1, h2 = unit(reference), unit(other)
    filled = h1 + h2 > 0
    return 0.5 * np.sum((h1[filled] - h2[filled]) ** 2 / (h1[filled] + h2[filled]))


def ks(a, b):
    """sup |F_a - F_b| over the pooled points."""
    points = np.concatenate([a, b])
    return np.max(np.abs((a[:, None] <= points).mean(0) - (b[:, None] <= points).mean(0)))


def w1(a, b):
    """integral |F_a - F_b| dx, the step functions integrated between the sorted pooled points."""
    points = np.sort(np.concatenate([a, b]))
    f_a = (a[:, None] <= points[:-1]).mean(0)
    f_b = (b[:, None] <= points[:-1]).mean(0)
    return np.sum(np.abs(f_a - f_b) * np.diff(points))


@pytest.fixture(scope="module")
def pair():
    """Two samples and their evaluation; the classifiers train 5 epochs (their test is below, with the 50)."""
    reference, generated = showers(100, 1), showers(80, 2, response=0.7, width=1.3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation, "_EPOCHS", 5)
        results = evaluate_generation(generated, reference, geometry=GEOMETRY, seed=3, energy_bins=[1.0, 20.0, 50.0])
    return reference, generated, results


def test_per_feature_distances_sparsity_and_response_match_direct_formulas(pair):
    reference, generated, results = pair
    names = results["feature_names"]
    assert names[-1] == RATIO and names[0] == "energy_total" and len(names) == 1 + 6 * 2 + 1 + 1
    ref, gen = features(reference), features(generated)
    assert np.allclose(ref[:, 0], reference.images.double().sum(1).numpy())
    for j, name in enumerate(names):
        bins = 40 if name.startswith("energy_") else 20 if name.startswith("sparsity_") else 100
        low, high = (0.0, 1.0) if name.startswith("sparsity_") else (ref[:, j].min(), ref[:, j].max())
        edges = np.linspace(low, high, bins + 1)
        entry = results["features"]["generated"][name]
        assert entry["separation_power"] == pytest.approx(separation(ref[:, j], gen[:, j], edges), abs=1e-12), name
        assert entry["ks"] == pytest.approx(ks(ref[:, j], gen[:, j]), abs=1e-12), name
        assert entry["w1"] == pytest.approx(w1(ref[:, j], gen[:, j]), rel=1e-9, abs=1e-9), name
    assert results["features"]["generated"][RATIO]["separation_power"] > 0.5  # response 0.7 vs 0.8: well apart

    sparsity = results["sparsity"]["generated"]
    for k, (start, stop) in enumerate([(0, 12), (12, 16)]):
        fraction = (generated.images[:, start:stop] != 0).double().mean(1).numpy()
        assert sparsity["sample"]["mean"][k] == pytest.approx(fraction.mean(), rel=1e-12)
        assert sparsity["sample"]["error"][k] == pytest.approx(fraction.std(ddof=1) / math.sqrt(80), rel=1e-9)

    ratio = gen[:, -1]
    energy = generated.energy.numpy()
    labels = generated.labels.numpy()
    for particle, chosen in (("all", np.ones(80, bool)), ("e+", labels == 0), ("gamma", labels == 1)):
        table = results["energy"]["particles"][particle]["generated"]["sample"]
        for k, (lo, hi) in enumerate([(1.0, 20.0), (20.0, 50.0)]):
            r = ratio[chosen & (energy >= lo) & ((energy < hi) if k == 0 else (energy <= hi))]
            assert table[k]["n"] == len(r)
            assert table[k]["response"] == pytest.approx(r.mean(), rel=1e-12)
            assert table[k]["resolution"] == pytest.approx(r.std(ddof=1) / r.mean(), rel=1e-9)
    assert set(results["energy"]["particles"]) == {"all", "e+", "gamma"} and results["particles"] == ["e+", "gamma"]


def test_fpd_and_kpd_match_the_jetnet_formulas_on_standardised_features(pair):
    reference, generated, results = pair
    ref, gen = features(reference), features(generated)
    mean, std = ref.mean(0), ref.std(0)
    std[std == 0] = 1.0
    x, y = (ref - mean) / std, (gen - mean) / std

    # FPD: Frechet distance of random batches (20 per size) at 10 sizes evenly spaced in 1/b from 0.4 n to n,
    # extrapolated to 1/b = 0 by a straight line with intercept and slope >= 0
    rng = np.random.default_rng(3)
    n = min(len(x), len(y))
    sizes = np.unique((1.0 / np.linspace(1.0 / round(0.4 * n), 1.0 / n, 10)).astype(int))

    def frechet(a, b):
        c_a, c_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        root = scipy.linalg.sqrtm(c_a @ c_b).real
        return np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(c_a + c_b - 2 * root)

    means = []
    for b in sizes:
        draws = []
        for _ in range(20):
            a = x[rng.choice(len(x), size=b, replace=False)]
            draws.append(frechet(a, y[rng.choice(len(y), size=b, replace=False)]))
        means.append(np.mean(draws))
    fit = optimize.lsq_linear(np.column_stack([np.ones(len(sizes)), 1.0 / sizes]), means, bounds=(0, np.inf))
    assert results["fpd"]["generated"]["value"] == pytest.approx(fit.x[0], rel=1e-4, abs=1e-6)
    assert results["fpd"]["generated"]["value"] > 10 * results["fpd"]["generated"]["error"] > 0

    # KPD: median over 10 batches of n // 2 events of the unbiased MMD^2 with k(u, v) = (u . v / F + 1)^4
    rng = np.random.default_rng(3)
    half = n // 2

    def mmd2(a, b):
        k = lambda u, v: (u @ v.T / u.shape[1] + 1.0) ** 4  # noqa: E731
        k_aa, k_bb = k(a, a), k(b, b)
        within = lambda m: (m.sum() - np.trace(m)) / (len(m) * (len(m) - 1))  # noqa: E731
        return within(k_aa) + within(k_bb) - 2 * k(a, b).mean()

    values = []
    for _ in range(10):
        a = x[rng.choice(len(x), size=half, replace=False)]
        values.append(mmd2(a, y[rng.choice(len(y), size=half, replace=False)]))
    low, high = np.percentile(values, [16.275, 83.725])
    assert results["kpd"]["generated"]["value"] == pytest.approx(np.median(values), rel=1e-9)
    assert results["kpd"]["generated"]["error"] == pytest.approx((high - low) / 2, rel=1e-9)


def test_the_floor_is_two_halves_of_the_reference_when_not_given(pair):
    _, _, results = pair
    assert results["floor_source"] == "halves" and "half" in results["floor_note"]
    assert results["n"] == {"generated": 80, "reference": 100, "floor": 50, "floor_reference": 50}
    split = results["classifier"]["cells"]["floor"]
    assert (split["n_train"], split["n_validation"], split["n_test"]) == (60, 20, 20)
    floor, generated = results["features"]["floor"][RATIO], results["features"]["generated"][RATIO]
    assert 0 < floor["separation_power"] < generated["separation_power"] and 0 < floor["ks"] < generated["ks"]


def test_identical_samples_give_0_and_an_auc_of_one_half_and_different_ones_a_large_auc():
    reference = showers(300, 4)
    different = showers(300, 5, response=0.5, width=2.0)
    results = evaluate_generation(different, reference, geometry=GEOMETRY, floor=reference, seed=0)
    assert results["floor_source"] == "sample" and results["n"]["floor_reference"] == 300
    for entry in results["features"]["floor"].values():
        assert entry == {"separation_power": 0.0, "ks": 0.0, "w1": 0.0}
    for level in ("cells", "features"):
        same, apart = results["classifier"][level]["floor"], results["classifier"][level]["generated"]
        assert abs(same["auc"] - 0.5) < 0.15 and abs(same["jsd"]) < 0.2, (level, same)
        assert apart["auc"] > 0.95 and apart["jsd"] > 0.6, (level, apart)
        assert (apart["n_train"], apart["n_validation"], apart["n_test"]) == (360, 120, 120)
    assert results["fpd"]["generated"]["value"] > 100 * max(results["fpd"]["floor"]["value"], 1e-3)


def test_max_events_takes_a_random_subset_and_labels_of_minus_1_mean_none(monkeypatch):
    monkeypatch.setattr(generation, "_EPOCHS", 5)
    reference, generated = showers(60, 6), showers(60, 7, labels=False)
    reference.labels = torch.full((60,), -1)
    results = evaluate_generation(generated, reference, geometry=GEOMETRY, max_events=40)
    assert results["n"] == {"generated": 40, "reference": 40, "floor": 20, "floor_reference": 20}
    assert results["particles"] == [] and list(results["energy"]["particles"]) == ["all"]


@pytest.mark.parametrize(
    "case, match",
    [
        ("cells", r"^generated\.images: expected \(N, 16\)"),
        ("empty", r"^reference: the sample is empty"),
        ("nan", r"^floor\.images: expected finite"),
        ("energy", r"^generated\.energy: expected"),
        ("few", r"^generated: expected at least 20 showers"),
        ("labels", r"^reference\.labels: expected class indices >= 0"),
    ],
)
def test_bad_input_raises_a_one_line_value_error_naming_the_argument(case, match):
    reference, generated, floor = showers(40, 1), showers(40, 2), showers(40, 3)
    if case == "cells":
        generated.images = generated.images[:, :15]
    elif case == "empty":
        reference.images, reference.labels, reference.energy = reference.images[:0], None, reference.energy[:0]
    elif case == "nan":
        floor.images[3, 2] = math.nan
    elif case == "energy":
        generated.energy[0] = math.nan
    elif case == "few":
        generated = showers(10, 2)
    else:
        reference.labels[0] = -1
    with pytest.raises(ValueError, match=match) as error:
        evaluate_generation(generated, reference, geometry=GEOMETRY, floor=floor)
    assert "\n" not in str(error.value)


def test_the_report_writes_every_file_and_results_json_round_trips(pair, tmp_path):
    reference, generated, results = pair
    report = write_generation_report(results, tmp_path / "out", generated=generated, reference=reference,
                                     geometry=GEOMETRY)
    folder = tmp_path / "out"
    assert report == folder / "report.md"
    for file in ("results.json", "report.md", "average_shower.png", "features.png", "features_eplus.png",
                 "features_gamma.png"):
        assert (folder / file).stat().st_size > 0, file
    assert not list(folder.glob(".*.tmp"))
    loaded = json.loads((folder / "results.json").read_text())
    assert set(loaded) == set(results) | {"figures"}
    for key in set(results) - {"average_shower"}:
        assert loaded[key] == json.loads(json.dumps(results[key])), key
    for key in ("generated", "reference"):
        for saved, array in zip(loaded["average_shower"][key], results["average_shower"][key]):
            np.testing.assert_allclose(np.array(saved), array, rtol=1e-15)
    assert np.allclose(results["average_shower"]["generated"][1], generated.images[:, 12:].double().mean(0).view(2, 2))
    text = report.read_text()
    auc = results["classifier"]["cells"]
    row = next(line for line in text.splitlines() if line.startswith("| classifier AUC, cells |"))
    assert f"{auc['generated']['auc']:.3f}" in row and f"{auc['floor']['auc']:.3f}" in row
    assert "(features_eplus.png)" in text and "two random halves" in text
