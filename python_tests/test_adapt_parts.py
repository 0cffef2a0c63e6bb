"""The pieces of the adaptation trainer: method parsing, config, augmentations, NT-Xent, pseudo-labels, k-shot draws."""

import math

import pytest
import torch

from sim2real_fast import geometry
from sim2real_fast.adapt import METHODS, AdaptConfig, CaloAugment, parse_method
from sim2real_fast.adapt.methods import stages
from sim2real_fast.adapt.methods.few_shot import k_shot_indices
from sim2real_fast.adapt.methods.pseudo_label import select_pseudo_labels
from sim2real_fast.adapt.methods.simclr import ProjectionHead, nt_xent


# ---- parse_method ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("dann", ("dann",)),
        ("pseudo_label+dann", ("dann", "pseudo_label")),
        (" mmd + coral ", ("coral", "mmd")),
        ("domain_randomization+simclr+few_shot", ("few_shot", "simclr", "domain_randomization")),
    ],
)
def test_parse_method_canonical_order(spec, expected):
    assert parse_method(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("danm", "unknown name.*'danm'.*source_only"),
        ("dann+dann", "more than once"),
        ("source_only+dann", "source_only is a reference"),
        ("few_shot+target_oracle", "target_oracle is a reference"),
        ("", "unknown name"),
    ],
)
def test_parse_method_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_method(spec)


def test_every_method_parses_and_stage_order():
    assert all(parse_method(m) == (m,) for m in METHODS)
    assert stages(parse_method("pseudo_label+few_shot+simclr")) == ("pretrain", "train", "few_shot", "pseudo_label")
    assert stages(("source_only",)) == ("train",)


# ---- AdaptConfig -------------------------------------------------------------------------------
def test_config_round_trip_and_digest():
    config = AdaptConfig(mmd_on=["features", "logits"], lr=1e-3)
    assert config.mmd_on == ("features", "logits")
    assert AdaptConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["mmd_on"] == ["features", "logits"]
    assert config.digest() == AdaptConfig.from_dict(config.to_dict()).digest() != AdaptConfig().digest()
    assert AdaptConfig(epochs=3).replace(epochs=4) == AdaptConfig()


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs: expected an int >= 1"),
        ({"lr": 0.0}, ValueError, "lr: expected a finite number > 0"),
        ({"dann_weight": -1.0}, ValueError, "dann_weight"),
        ({"mmd_on": ("pixels",)}, ValueError, "mmd_on"),
        ({"mmd_on": "features"}, TypeError, "mmd_on"),
        ({"pseudo_threshold": 1.5}, ValueError, "pseudo_threshold"),
        ({"pseudo_class_balance": 1}, TypeError, "pseudo_class_balance"),
        ({"epoch": 3}, ValueError, "unknown option.*'epoch'"),
    ],
)
def test_config_errors(values, error, match):
    with pytest.raises(error, match=match):
        AdaptConfig.from_dict(values)


# ---- CaloAugment -------------------------------------------------------------------------------
def _layer_sums(g, images):
    return torch.stack([layer.sum((-2, -1)) for layer in g.split_layers(images)], -1)


def test_augment_shape_device_and_determinism():
    g = geometry.get("calogan")
    images = torch.rand(16, g.n_cells) * 100
    augment = CaloAugment(g)
    a = augment(images, torch.Generator().manual_seed(1))
    b = augment(images, torch.Generator().manual_seed(1))
    assert a.shape == images.shape and a.dtype == images.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(images, torch.Generator().manual_seed(2)))


def test_augment_shift_keeps_energy_in_its_layer():
    g = geometry.get("calogan")
    shift = CaloAugment(g, scale=0, cell_scale=0, noise_mev=0, dropout=0, shift=1.0)
    for layer in range(g.n_layers):
        images = torch.zeros(64, g.n_cells)
        start, stop = g.layer_offsets[layer], g.layer_offsets[layer + 1]
        images[:, start:stop] = torch.rand(64, stop - start)
        out = shift(images, torch.Generator().manual_seed(layer))
        others = torch.ones(g.n_cells, dtype=torch.bool)
        others[start:stop] = False
        assert torch.equal(out[:, others], torch.zeros_like(out[:, others]))  # nothing leaks into other layers
        assert bool((_layer_sums(g, out)[:, layer] <= _layer_sums(g, images)[:, layer] + 1e-4).all())
        assert not torch.equal(out, images)


def test_augment_shift_moves_by_one_cell_and_not_along_short_axes():
    g = geometry.get("calogan")  # layer_1 is 12 x 12; layer_0 has only 3 rows (not shifted along rows)
    shift = CaloAugment(g, scale=0, cell_scale=0, noise_mev=0, dropout=0, shift=1.0)
    images = torch.zeros(200, g.n_cells)
    images[:, g.position_to_cell(torch.tensor(1), torch.tensor(5), torch.tensor(5))] = 1.0
    images[:, g.position_to_cell(torch.tensor(0), torch.tensor(1), torch.tensor(40))] = 1.0
    out = shift(images, torch.Generator().manual_seed(0))
    layer_0, layer_1, _ = g.split_layers(out)
    rows, cols = torch.nonzero(layer_1 > 0.5)[:, 1:].T
    assert len(rows) == 200 and bool(((rows - 5).abs() <= 1).all() and ((cols - 5).abs() <= 1).all())
    assert bool(((rows != 5) | (cols != 5)).all())  # every event moved
    strip_rows = torch.nonzero(layer_0 > 0.5)[:, 1]
    assert bool((strip_rows == 1).all())


def test_augment_rotates_cylindrical_layers_conserving_energy():
    g = geometry.get("calochallenge-ds1-photons")
    shift = CaloAugment(g, scale=0, cell_scale=0, noise_mev=0, dropout=0, shift=1.0)
    images = torch.rand(8, g.n_cells)
    out = shift(images, torch.Generator().manual_seed(0))
    torch.testing.assert_close(_layer_sums(g, out), _layer_sums(g, images))


def test_augment_scales_noise_dropout():
    g = geometry.get("calogan")
    images = torch.full((400, g.n_cells), 100.0)
    scaled = CaloAugment(g, scale=0.05, cell_scale=0, noise_mev=0, dropout=0, shift=0)(images, torch.Generator())
    factor = scaled[:, 0] / 100
    assert torch.allclose(scaled, factor[:, None] * 100) and 0.95 <= float(factor.min()) < float(factor.max()) <= 1.05
    noisy = CaloAugment(g, scale=0, cell_scale=0, noise_mev=5.0, dropout=0.1, shift=0)(images, torch.Generator())
    dead = noisy == 0
    assert abs(float(dead.float().mean()) - 0.1) < 0.01
    assert abs(float((noisy[~dead] - 100).std()) - 5.0) < 0.1


def test_augment_errors():
    with pytest.raises(ValueError, match="dropout"):
        CaloAugment("calogan", dropout=1.5)
    with pytest.raises(ValueError, match=r"expected images \(N, 504\)"):
        CaloAugment("calogan")(torch.zeros(2, 10), torch.Generator())


# ---- NT-Xent, pseudo-labels, k-shot ------------------------------------------------------------
def test_nt_xent_against_a_direct_formula():
    torch.manual_seed(0)
    z1, z2 = torch.randn(5, 4), torch.randn(5, 4)
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / 0.5
    losses = []
    for i in range(10):
        positive = (i + 5) % 10
        others = [j for j in range(10) if j != i]
        losses.append(-sim[i, positive] + torch.logsumexp(sim[i, others], 0))
    torch.testing.assert_close(nt_xent(z1, z2, temperature=0.5), torch.stack(losses).mean())
    assert float(nt_xent(z1, z1 + 0, temperature=0.1)) < float(nt_xent(z1, z2, temperature=0.1))
    assert ProjectionHead(8, 3)(torch.zeros(2, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="two"):
        nt_xent(z1, z2[:4])


def test_select_pseudo_labels_threshold_and_balance():
    probs = torch.tensor([[0.95, 0.05, 0.0], [0.99, 0.01, 0.0], [0.2, 0.8, 0.0], [0.0, 0.92, 0.08],
                          [0.91, 0.09, 0.0], [0.05, 0.0, 0.95]])
    index, labels = select_pseudo_labels(probs, threshold=0.9, class_balance=False)
    assert index.tolist() == [0, 1, 3, 4, 5] and labels.tolist() == [0, 0, 1, 0, 2]
    index, labels = select_pseudo_labels(probs, threshold=0.9)  # one per class: the most confident
    assert index.tolist() == [1, 3, 5] and labels.tolist() == [0, 1, 2]
    index, labels = select_pseudo_labels(probs, threshold=0.999)
    assert index.numel() == 0 and labels.dtype == torch.int64


def test_k_shot_indices():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 3)
    index = k_shot_indices(labels, 5, generator=torch.Generator().manual_seed(0))
    assert torch.bincount(labels[index]).tolist() == [5, 5, 3] and len(set(index.tolist())) == 13
    again = k_shot_indices(labels, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(index, again)
    assert math.isclose(len(k_shot_indices(labels, 1, generator=torch.Generator())), 3)
