"""Methods as plug-ins: a new method is one class; the trivial label-free baselines mask_cells and rescale_layers."""

import pytest
import torch

from sim2real_fast import geometry
from sim2real_fast.adapt import METHODS, AdaptConfig, Domain, Method, Stage, fit, parse_method, register
from sim2real_fast.adapt.methods import REGISTRY
from sim2real_fast.adapt.methods.mask_cells import departing_cells
from sim2real_fast.adapt.methods.rescale_layers import layer_scales
from sim2real_fast.models import CaloCNN

TINY = AdaptConfig(epochs=1, batch_size=32)
GEOMETRY = geometry.get("calogan")


def _model():
    torch.manual_seed(0)
    return CaloCNN("calogan", n_classes=3, channels=(4, 8), hidden=16, n_features=8)


def _events(n, seed, scale=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, GEOMETRY.n_cells, generator=g) * 50 * (torch.rand(n, GEOMETRY.n_cells, generator=g) < 0.3)
    return x if scale is None else x * scale


def test_a_new_method_is_one_registered_class():
    seen = {}

    class Mean(Method):
        name, order, aligns = "test_feature_mean", 99, True
        sees = frozenset({"target"})

        def stages(self):
            return (Stage("polish", 40, 1, 1e-3, "polish"),)

        def losses(self, run, step):
            seen.setdefault("stages", set()).add(step.stage.name)
            return {"mean": (0.5, (step.f_labelled.mean(0) - step.f_target.mean(0)).pow(2).sum())}

    register(Mean)
    try:
        assert "test_feature_mean" in REGISTRY and parse_method("test_feature_mean+coral") == ("coral", "test_feature_mean")
        x, labels = _events(64, 1), torch.arange(64) % 3
        result = fit("coral+test_feature_mean", _model(), source=Domain(x, labels), target=Domain(_events(64, 2)),
                     config=TINY)
        assert [h["stage"] for h in result.history] == ["train", "polish"]
        assert seen["stages"] == {"train", "polish"} and "mean" in result.history[0] and "coral" in result.history[0]
        with pytest.raises(ValueError, match="missing or taken"):
            register(Mean)
    finally:
        REGISTRY.pop("test_feature_mean")


def test_every_method_has_a_summary_and_the_baselines_combine():
    assert {"mask_cells", "rescale_layers"} <= set(METHODS)
    assert all(REGISTRY[m].summary for m in METHODS)
    assert parse_method("mmd+mask_cells") == ("mask_cells", "mmd")
    assert parse_method("rescale_layers+mask_cells+dann") == ("mask_cells", "rescale_layers", "dann")


def test_departing_cells_finds_dead_hot_and_scaled_cells_only():
    sim = _events(4000, 3)
    real = _events(4000, 4)
    real[:, 10] = 0.0  # dead
    real[torch.arange(0, 4000, 5), 20] += 300.0  # intermittent hot cell: 20% of events
    real[:, 30] *= 3.0  # badly calibrated
    real[:, 40] *= 1.02  # within the tolerance
    mask = departing_cells(sim, real, occupancy=0.02, energy=0.5, z=5.0)
    assert mask.nonzero().flatten().tolist() == [10, 20, 30]
    assert not departing_cells(sim, _events(4000, 5), occupancy=0.02, energy=0.5, z=5.0).any()
    with pytest.raises(ValueError, match="n_cells"):
        departing_cells(sim, real[:, :10], occupancy=0.02, energy=0.5, z=5.0)


def test_mask_cells_zeroes_the_cells_in_both_domains_through_the_model():
    sim, real = _events(600, 6), _events(600, 7)
    real[:, 5] = 0.0
    labels = torch.arange(600) % 3
    result = fit("mask_cells", _model(), source=Domain(sim, labels), target=Domain(real), config=TINY)
    scale = result.model.input_scale
    assert scale[5] == 0 and int((scale == 0).sum()) == result.history[0]["masked_cells"] >= 1
    bumped = real.clone()
    bumped[:, 5] = 1000.0
    result.model.eval()
    with torch.no_grad():
        assert torch.equal(result.model(real), result.model(bumped))  # the masked cell is never read


def test_rescale_layers_matches_the_layer_means():
    sim = _events(800, 8)
    factors = torch.tensor([0.9, 1.0, 1.2])
    per_cell = torch.repeat_interleave(factors, torch.tensor([layer.n_cells for layer in GEOMETRY.layers]))
    real = _events(800, 9) * per_cell
    scales = layer_scales(sim, real, GEOMETRY)
    torch.testing.assert_close(scales, factors.double(), rtol=0.03, atol=0)
    result = fit("rescale_layers", _model(), source=Domain(sim, torch.arange(800) % 3), target=Domain(real),
                 config=TINY)
    assert result.history[0]["layer_scales"] == pytest.approx(scales.tolist(), abs=1e-6)
    torch.testing.assert_close(result.source_transform(sim), sim * per_cell, rtol=0.03, atol=0)
    assert torch.equal(fit("source_only", _model(), source=Domain(sim, torch.arange(800) % 3),
                           config=TINY).source_transform(sim), sim)


def test_target_oracle_gets_the_source_budget():
    sim, real = _events(320, 10), _events(96, 11)
    labels = torch.arange(320) % 3
    oracle = fit("target_oracle", _model(), source=Domain(sim, labels),
                 target_labelled=Domain(real, torch.arange(96) % 3), config=TINY)
    baseline = fit("source_only", _model(), source=Domain(sim, labels), config=TINY)
    assert oracle.history[0]["steps"] == baseline.history[0]["steps"] == 10
