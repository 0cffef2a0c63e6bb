"""sim2real_fast.generate.FlowVAE: the layer-energy flow, its dequantised empty layers, the per-layer rescaling of
the VAE's hits, training and options (what ShowerVAE shares: test_generate_common.py)."""

import math
import sys

import pytest
import torch

from sim2real_fast import generate
from sim2real_fast.generate import FlowVAE
from generate_fixtures import OPTIONS, data, fitted_fixture  # noqa: F401  (data: a fixture)
from helpers import one_thread  # noqa: F401  (an autouse fixture)

SMALL = OPTIONS[FlowVAE]
fitted = fitted_fixture(FlowVAE)


# ---- preprocessing and objective ---------------------------------------------------------------------
def test_registered_and_built_from_the_registry():
    assert generate.REGISTRY["flow-vae"] is FlowVAE
    model = generate.REGISTRY["flow-vae"]("calogan", **SMALL)
    assert model.hparams["flow_hidden"] == [32, 32] and model.hparams["flow_transforms"] == 2
    assert model.hparams["particles"] == ["e+", "gamma", "pi+"]
    assert model.encoder[0].in_features == 504 + 4 + 3  # cells, condition, three layer energies
    assert model.decoder[-1].out_features == 3 * 504  # no total head


def test_layer_variable_dequantises_empty_layers_below_the_floor(fitted, data):
    images, energy = data.images[:500], data.energy[:500].float()
    layers = fitted.layer_sums(images)
    hits = torch.where(images >= fitted.floor, images, 0)
    expected = torch.stack([part.flatten(1).sum(1) for part in fitted.geometry.split_layers(hits)], 1)
    torch.testing.assert_close(layers, expected)
    empty = layers == 0
    assert 0 < int(empty.sum()) < empty.numel() // 10  # CaloGAN's last layer is sometimes empty
    delta = fitted.layer_floor()
    assert torch.equal(delta, fitted.floor[[0, 288, 432]]) and bool((delta >= 20).all())
    u = torch.rand(layers.shape, generator=torch.Generator().manual_seed(0))
    y = fitted.standardised(layers, energy, u)
    back = 1000 * energy[:, None] * torch.exp(fitted.layer_mean + fitted.layer_std * y)
    torch.testing.assert_close(back[~empty], layers[~empty], rtol=1e-4, atol=0)
    box = (back / delta)[empty]
    assert bool((box >= 0.5 - 1e-4).all() and (box < 1).all())  # [delta / 2, delta): below any non-empty layer
    assert bool((layers[~empty] >= delta.expand_as(layers)[~empty]).all())
    low, high = fitted.layer_range
    assert bool((low < high).all()) and abs(float(fitted.standardised(layers, energy, 0.5).mean())) < 0.5


def test_losses_are_finite_decrease_and_the_flow_nll_is_the_flows(fitted, data):
    history = fitted.history
    assert len(history) == 4 and all(math.isfinite(h["loss"]) and math.isfinite(h["validation_loss"])
                                      for h in history)
    assert history[-1]["loss"] < history[0]["loss"] - 10
    assert history[-1]["flow_nll"] < history[0]["flow_nll"]
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    losses = fitted.losses(data.images[:200], data.labels[:200], data.energy[:200].float(), progress=None,
                           generator=torch.Generator().manual_seed(0))
    u = torch.rand(200, 3, generator=torch.Generator().manual_seed(0))  # the objective's first draw
    c = fitted.condition(data.labels[:200], data.energy[:200].float())
    y = fitted.standardised(fitted.layer_sums(data.images[:200]), data.energy[:200].float(), u)
    assert losses["flow_nll"].item() == pytest.approx(-fitted.flow(c).log_prob(y).mean().item(), rel=1e-5)


def test_stages_share_no_parameter(fitted, data):
    """The flow's gradients come from its NLL alone; the NLL reaches no other parameter."""
    images, labels, energy = data.images[:64], data.labels[:64], data.energy[:64].float()
    fitted.zero_grad()
    fitted.losses(images, labels, energy, progress=None, generator=torch.Generator().manual_seed(0))["loss"].backward()
    full = {name: p.grad.clone() for name, p in fitted.named_parameters() if name.startswith("flow.")}
    assert full and any(bool(g.abs().sum() > 0) for g in full.values())
    fitted.zero_grad()
    u = torch.rand(64, 3, generator=torch.Generator().manual_seed(0))
    y = fitted.standardised(fitted.layer_sums(images), energy, u)
    (-fitted.flow(fitted.condition(labels, energy)).log_prob(y).mean()).backward()
    for name, p in fitted.named_parameters():
        if name.startswith("flow."):
            torch.testing.assert_close(p.grad, full[name], rtol=1e-5, atol=1e-7)
        else:
            assert p.grad is None, name
    fitted.zero_grad()


# ---- sampling ----------------------------------------------------------------------------------------
def test_samples_are_non_negative_and_zero_suppressed(fitted):
    images, labels, energy = fitted.sample(2000, seed=0)
    assert images.shape == (2000, 504) and images.dtype == torch.float32 and labels.shape == energy.shape == (2000,)
    assert bool((images >= 0).all()) and bool(torch.isfinite(images).all())
    on = images > 0
    assert bool((images[on] >= fitted.floor.expand_as(images)[on]).all())  # no hit below its layer's floor
    assert 0.02 < on.float().mean() < 0.5
    again = fitted.sample(2000, seed=0)
    assert torch.equal(again.images, images) and not torch.equal(fitted.sample(2000, seed=1).images, images)


def test_layer_energies_of_samples_are_the_flows_draws(fitted):
    n, seed = 3000, 4
    labels = torch.arange(n) % 3
    energy = torch.linspace(1.0, 100.0, n, dtype=torch.float64)
    images = fitted.sample(n, energy=energy, particle=labels, seed=seed).images
    _, drawn = fitted.draw_layers(labels, energy.float(), torch.Generator().manual_seed(seed))
    got = fitted.layer_sums(images)
    assert torch.equal(got == 0, drawn == 0)  # the flow decides which layers are empty
    torch.testing.assert_close(got, drawn, rtol=1e-4, atol=1e-3)
    response = drawn.sum(1) / (1000 * energy.float())
    assert response[labels == 0].mean() > response[labels == 2].mean() + 0.2  # simulator: about 1.0 and 0.35


def test_a_layer_with_too_many_hits_keeps_its_strongest():
    group = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    above = torch.tensor([1.0, 3.0, 2.0, 5.0, 4.0, 7.0, 2.0, 2.0])
    capacity = torch.tensor([2.0, 0.0, 1.0, 1.0])  # floor(E'_l / delta_l) of each group
    keep = FlowVAE._strongest(group, above, capacity)
    assert keep.tolist() == [False, True, True, False, False, True, True, False]


def test_rescaling_follows_fixed_layer_energies(fitted, monkeypatch):
    """Layer 0 drawn empty loses its hits; layer 1 gets its drawn energy; layer 2, where the decoder draws no hit,
    gets its drawn energy in its most probable cell."""
    n = 400
    targets = torch.tensor([0.0, 40_000.0, 3_000.0])
    original = FlowVAE.draw_layers

    def fixed(self, labels, energy, generator):
        y, _ = original(self, labels, energy, generator)
        return y, targets.expand(len(labels), 3).clone()

    monkeypatch.setattr(FlowVAE, "draw_layers", fixed)
    head = fitted.decoder[-1]
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    with torch.no_grad():
        head.weight[432:504] = 0.0
        head.bias[432:504] = -40.0  # layer 2's logits: no hit is drawn
        head.bias[432 + 17] = -30.0  # its most probable cell
    try:
        images = fitted.sample(n, energy=(80.0, 100.0), particle="e+", seed=2).images
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0]), head.bias.copy_(saved[1])
    layer0, layer1, layer2 = fitted.geometry.split_layers(images)
    assert bool((layer0 == 0).all())
    torch.testing.assert_close(layer1.flatten(1).sum(1), torch.full((n,), 40_000.0), rtol=1e-4, atol=0)
    assert bool(((layer2.flatten(1) > 0).sum(1) == 1).all())
    assert bool((layer2.flatten(1)[:, 17] == 3_000.0).all())


# ---- options -------------------------------------------------------------------------------------------
def test_options_are_checked_and_zuko_is_optional(monkeypatch):
    for kwargs, name in ((dict(flow_transforms=0), "flow_transforms"), (dict(flow_bins=1.5), "flow_bins"),
                         (dict(flow_hidden=()), "flow_hidden"), (dict(latent=0), "latent")):
        with pytest.raises(ValueError, match=f"^FlowVAE: {name}"):
            FlowVAE("calogan", **{**SMALL, **kwargs})
    monkeypatch.setitem(sys.modules, "zuko", None)  # import zuko now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "sim2real_fast\[generate\]"'):
        FlowVAE("calogan")
    assert generate.REGISTRY["flow-vae"] is FlowVAE
