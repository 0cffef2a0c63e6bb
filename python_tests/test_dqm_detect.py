"""dqm.detect: network inputs of every normalisation, z-scores by hand, the detectors, map and channel scores."""

import math

import pytest
import torch
from helpers import one_thread  # noqa: F401

from sim2real_fast import dqm, simulate
from sim2real_fast.dqm import detect

N_CELLS = 7 * 72 * 84

try:
    import timm  # noqa: F401

    HAS_TIMM = True
except Exception:  # a torchvision built for another torch raises RuntimeError, not ImportError
    HAS_TIMM = False

#: the detectors, the ViT skipped where timm cannot be imported (a CPU-only torch without torchvision)
DETECTORS = [pytest.param(name, marks=pytest.mark.skipif(name == "vit" and not HAS_TIMM, reason="timm is not importable"))
             for name in detect.MODELS]


@pytest.fixture(scope="module")
def run():
    """Six good simulated LS, their reference (from the first four) and event counts."""
    maps = simulate.dqm_maps(6, faults=None, seed=3)
    return maps.maps, maps.events, dqm.build_reference(maps.maps[:4], maps.events[:4])


@pytest.fixture(scope="module")
def models():
    return {name: detect.build_model(name, n_classes=6, seed=1) for name in detect.MODELS if name != "vit" or HAS_TIMM}


@pytest.fixture(scope="module")
def cnn(models):
    return models["cnn"]


@pytest.mark.parametrize("how", dqm.NORMALISATIONS)
def test_model_inputs_of_every_normalisation(run, how):
    maps, events, reference = run
    x = detect.model_inputs(maps, how, reference=reference, events=events)
    assert x.shape == (6, N_CELLS) and x.dtype == torch.float32 and torch.isfinite(x).all()
    normalised = dqm.normalise(maps, how, reference=reference, events=events).double()
    expected = {
        "raw": torch.log1p(normalised) / math.log1p(2000.0),
        "events": normalised,
        "median": torch.log1p(normalised),
        "reference": torch.log10(normalised.clamp(1e-3, 1e3)),
        "zscore": torch.asinh(normalised),
    }[how]
    torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-6)
    if how == "events":
        assert (x >= 0).all() and (x <= 1).all()
    if how == "raw":
        assert x.max() < 1.05  # counts stay below ~2000 per LS


def test_a_map_at_the_reference_mean_reads_zero(run):
    _, _, reference = run
    events = torch.tensor([1500.0, 2000.0])
    maps = reference.mean[None] * events[:, None]
    for how in ("zscore", "reference"):
        x = detect.model_inputs(maps, how, reference=reference, events=events)
        assert x.abs().max() < 1e-4, how


def test_zscore_inputs_compress_monotonically():
    reference = dqm.build_reference(torch.tensor([[100.0, 1000.0], [120.0, 1000.0], [80.0, 1000.0]]))
    counts = torch.arange(0.0, 1001.0, 25.0)
    maps = torch.stack([counts, torch.full_like(counts, 1000.0)], 1)
    z = dqm.zscores(maps, reference)[:, 0]
    x = detect.model_inputs(maps, "zscore", reference=reference)[:, 0]
    assert (x.diff() > 0).all()
    assert x[counts == 100].item() == pytest.approx(0.0, abs=1e-5)  # the reference mean
    assert (x.abs() < z.abs() + 1e-6).all() and x.abs().max() < 0.25 * z.abs().max()  # logarithmic far out
    far = z.abs() > 10
    torch.testing.assert_close(x[far].abs(), torch.log(2 * z[far].abs()), rtol=0, atol=0.01)


@pytest.mark.parametrize("how", ["reference", "zscore"])
def test_reference_normalisations_need_a_reference(run, how):
    maps, events, _ = run
    with pytest.raises(ValueError, match="reference"):
        detect.model_inputs(maps, how, events=events)


def test_model_inputs_reject_an_unknown_normalisation(run):
    with pytest.raises(ValueError, match="how"):
        detect.model_inputs(run[0], "log")


def test_zscores_by_hand():
    reference_maps = torch.tensor([[10.0, 0.0, 50.0, 100.0], [20.0, 0.0, 50.0, 100.0], [30.0, 0.0, 50.0, 100.0]])
    reference = dqm.build_reference(reference_maps, torch.tensor([100.0, 100.0, 100.0]))
    floor = 1 / 300
    assert reference.floor == pytest.approx(floor)
    maps, n = torch.tensor([[30.0, 3.0, 50.0, 100.0]]), 200.0
    z = dqm.zscores(maps, reference, torch.tensor([n]))
    binomial = lambda p: math.sqrt(p * (1 - p) / n)  # noqa: E731
    expected = [
        (0.15 - 0.2) / max(0.1, binomial(0.2)),  # the reference LS's spread (std 0.1) dominates
        (0.015 - 0.0) / binomial(floor),  # never fired in the reference: the floor's binomial std
        (0.25 - 0.5) / binomial(0.5),
        (0.5 - 1.0) / binomial(1 - floor),  # fires in every reference event
    ]
    assert z[0].tolist() == pytest.approx(expected, rel=1e-5)
    # without events: each map's largest count (100) is its event count
    z = dqm.zscores(maps, reference)
    assert z[0, 2].item() == pytest.approx(0.0, abs=1e-6)
    assert z[0, 0].item() == pytest.approx((0.3 - 0.2) / max(0.1, math.sqrt(0.2 * 0.8 / 100)), rel=1e-5)


def test_zscore_scores_are_the_absolute_zscores(run):
    maps, events, reference = run
    faulted = dqm.inject_faults(maps, fault_fraction=1.0, seed=2, events=events)
    z = dqm.zscores(faulted.maps, reference, events)
    scores = dqm.zscore_scores(faulted.maps, reference, events=events)
    assert torch.equal(scores.channels, z.abs())
    assert torch.equal(scores.maps, z.abs().amax(1))
    assert (z < -3).any() and (z > 3).any()  # signed: dead cells below the reference, hot ones above


def test_zscores_reject_a_reference_of_other_cells(run):
    maps, events, _ = run
    with pytest.raises(ValueError, match="reference"):
        dqm.zscores(maps, dqm.build_reference(torch.ones(2, 10)), events)


@pytest.mark.parametrize("name", DETECTORS)
def test_build_model_gives_six_logits_and_is_seeded(name):
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    model = detect.build_model(name, n_classes=6, seed=4)
    assert torch.equal(torch.rand(3), expected_draw)  # the global generator is left alone
    x = torch.randn(3, N_CELLS)
    logits = model(x)
    assert logits.shape == (3, 6) and torch.isfinite(logits).all()
    assert model.features(x).shape == (3, model.n_features) and model.n_classes == 6
    same, other = (detect.build_model(name, n_classes=6, seed=s).state_dict() for s in (4, 5))
    weights = model.state_dict()
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    assert any(not torch.equal(weights[k], other[k]) for k in weights)


def test_build_model_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="model"):
        detect.build_model("resnet")


def test_map_scores_are_the_log_odds_of_a_fault(cnn):
    x = torch.randn(5, N_CELLS, generator=torch.Generator().manual_seed(0))
    cnn.train()
    scores, probs = detect.map_scores(cnn, x, batch_size=2)
    assert cnn.training  # mode restored
    with torch.no_grad():
        logits = cnn.eval()(x).double()
    cnn.train()
    assert scores.shape == (5,) and probs.shape == (5, 6)
    torch.testing.assert_close(scores.double(), torch.logsumexp(logits[:, 1:], 1) - logits[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(probs.double(), torch.softmax(logits, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    # log-odds agree with the probabilities: log((1 - p_good) / p_good)
    torch.testing.assert_close(scores.double(), torch.log((1 - probs[:, 0].double()) / probs[:, 0].double()),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", DETECTORS)
def test_channel_scores_are_input_times_gradient(models, name):
    model = models[name]
    x = torch.randn(3, N_CELLS, generator=torch.Generator().manual_seed(1))
    x[1] = 0.0
    model.train()
    scores = detect.channel_scores(model, x, batch_size=2)
    assert model.training and scores.shape == (3, N_CELLS)
    assert all(p.grad is None for p in model.parameters())
    model.eval()
    expected = []
    for row in x:
        row = row[None].clone().requires_grad_(True)
        logits = model(row)
        (grad,) = torch.autograd.grad((torch.logsumexp(logits[:, 1:], 1) - logits[:, 0]).sum(), row)
        expected.append((row * grad).abs()[0].detach())
    model.train()
    torch.testing.assert_close(scores, torch.stack(expected), rtol=1e-4, atol=1e-7)
    assert (scores[1] == 0).all()  # an all-zero map has no attribution
    assert (scores[0] > 0).sum() > N_CELLS // 2


def test_channel_scores_of_no_maps_and_bad_batch(cnn):
    out = detect.channel_scores(cnn, torch.zeros(0, N_CELLS))
    assert out.shape == (0, N_CELLS)
    scores, probs = detect.map_scores(cnn, torch.zeros(0, N_CELLS))
    assert scores.shape == (0,) and probs.shape == (0, 6)
    with pytest.raises(ValueError, match="batch_size"):
        detect.channel_scores(cnn, torch.zeros(2, N_CELLS), batch_size=0)
