"""sim2real_fast.generate.FlowVAE: the layer-energy flow, its dequantised empty layers, the per-layer rescaling of
the VAE's hits, training, resume, files and one-line errors."""

import math
import sys

import pytest
import torch

from sim2real_fast import geometry, generate, simulate
from sim2real_fast.generate import FlowVAE, ShowerVAE
from helpers import one_thread  # noqa: F401  (an autouse fixture)

SMALL = dict(latent=8, hidden=(64, 64), flow_hidden=(32, 32), flow_transforms=2)


@pytest.fixture(scope="module")
def data():
    """1,500 nominal CaloGAN showers of every particle, 1-100 GeV."""
    return simulate.showers(1500, effects="nominal", seed=0)


@pytest.fixture(scope="module")
def fitted(data):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = FlowVAE("calogan", **SMALL, kl_warmup=1.0, lr=3e-3)
        return model.fit(data.images, data.labels, data.energy, energy_range=(1.0, 100.0), epochs=4, batch_size=64)
    finally:
        torch.set_num_threads(threads)


def _fit(data, n=300, **kwargs):
    options = dict(energy_range=(1.0, 100.0), epochs=3, batch_size=64, seed=1)
    return FlowVAE("calogan", **SMALL).fit(data.images[:n], data.labels[:n], data.energy[:n], **{**options, **kwargs})


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


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


def test_losses_are_finite_decrease_and_add_up(fitted, data):
    history = fitted.history
    assert len(history) == 4 and all(math.isfinite(h["loss"]) and math.isfinite(h["validation_loss"])
                                      for h in history)
    assert history[-1]["loss"] < history[0]["loss"] - 10
    assert history[-1]["flow_nll"] < history[0]["flow_nll"]
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]
    losses = fitted.losses(data.images[:200], data.labels[:200], data.energy[:200].float(), progress=None,
                           generator=torch.Generator().manual_seed(0))
    assert losses["beta"].item() == fitted.beta
    parts = losses["flow_nll"] + losses["nll"] + losses["kl"] + fitted.energy_weight * losses["energy"]
    assert losses["loss"].item() == pytest.approx(parts.item(), rel=1e-5)
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


def test_sample_errors_name_the_argument(data, fitted):
    for energy in ((0.5, 10.0), (50.0, 120.0), torch.tensor([10.0, 200.0], dtype=torch.float64)):
        n = 2 if isinstance(energy, torch.Tensor) else 5
        with pytest.raises(ValueError) as error:
            fitted.sample(n, energy=energy)
        assert _one_line(error).startswith("energy:") and "trained range 1-100 GeV of this flow-vae" in str(error.value)
    with pytest.raises(ValueError) as error:
        fitted.sample(5, particle="mu-")
    assert _one_line(error).startswith("particle: unknown 'mu-'")
    leptons = data.labels < 2
    no_pions = FlowVAE("calogan", **SMALL).fit(data.images[leptons][:200], data.labels[leptons][:200],
                                               data.energy[leptons][:200], energy_range=(1.0, 100.0), epochs=1)
    assert no_pions.trained == ("e+", "gamma")
    with pytest.raises(ValueError) as error:
        no_pions.sample(5, particle="pi+")
    assert _one_line(error).startswith("particle: 'pi+' was not in the training showers")
    with pytest.raises(ValueError) as error:
        no_pions.sample(2, particle=torch.tensor([0, 2]))
    assert _one_line(error).startswith("particle: label 2 is not a trained particle")
    with pytest.raises(ValueError, match="not trained"):
        FlowVAE("calogan", **SMALL).sample(5)


# ---- fit: resume ---------------------------------------------------------------------------------------
def test_resume_after_a_kill_repeats_an_uninterrupted_run(tmp_path, data, monkeypatch):
    straight = _fit(data, checkpoint_dir=tmp_path / "a")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["003_train_e3.pt"]
    original = generate.Generator._checkpoint

    def killed(self, folder, run, epoch, *args):
        original(self, folder, run, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(generate.Generator, "_checkpoint", killed)
    torch.manual_seed(123)  # another global state: fit seeds every draw itself
    with pytest.raises(KeyboardInterrupt):
        _fit(data, checkpoint_dir=tmp_path / "b")
    monkeypatch.setattr(generate.Generator, "_checkpoint", original)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["001_train_e1.pt"]
    resumed = _fit(data, checkpoint_dir=tmp_path / "b", resume=True)
    assert any(key.startswith("flow.") for key in straight.state_dict())
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history) and resumed.best_epoch == straight.best_epoch
    from_checkpoint = generate.load(tmp_path / "a" / "003_train_e3.pt")
    assert isinstance(from_checkpoint, FlowVAE)
    assert torch.equal(from_checkpoint.sample(50).images, straight.sample(50).images)
    with pytest.raises(ValueError, match="another run"):
        _fit(data, checkpoint_dir=tmp_path / "a", resume=True, seed=2)


# ---- files and options -------------------------------------------------------------------------------
def test_save_load_round_trip_and_foreign_methods(tmp_path, fitted, data):
    path = fitted.save(tmp_path / "flow.pt")
    loaded = generate.load(path, method="flow-vae", geometry="calogan")
    assert isinstance(loaded, FlowVAE) and not loaded.training and loaded.source == path
    assert loaded.hparams == fitted.hparams and loaded.history == fitted.history
    assert loaded.best_epoch == fitted.best_epoch and loaded.energy_range == (1.0, 100.0)
    a, b = fitted.sample(300, seed=9), loaded.sample(300, seed=9)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.energy, b.energy)
    with pytest.raises(generate.GeneratorFileError) as error:
        generate.load(path, method="vae")
    assert _one_line(error).startswith(f"{path}: holds a 'flow-vae' generator, expected 'vae'")
    vae = ShowerVAE("calogan", latent=4, hidden=(16,)).fit(data.images[:100], data.labels[:100],
                                                           data.energy[:100], epochs=1)
    vae_path = vae.save(tmp_path / "vae.pt")
    with pytest.raises(generate.GeneratorFileError) as error:
        generate.load(vae_path, method="flow-vae")
    assert _one_line(error).startswith(f"{vae_path}: holds a 'vae' generator, expected 'flow-vae'")
    with pytest.raises(ValueError) as error:
        loaded.sample(3, energy=(0.1, 1.0))
    assert f"(file {path})" in _one_line(error)


def test_options_are_checked_and_zuko_is_optional(monkeypatch):
    for kwargs, name in ((dict(flow_transforms=0), "flow_transforms"), (dict(flow_bins=1.5), "flow_bins"),
                         (dict(flow_hidden=()), "flow_hidden"), (dict(latent=0), "latent")):
        with pytest.raises(ValueError, match=f"^FlowVAE: {name}"):
            FlowVAE("calogan", **{**SMALL, **kwargs})
    monkeypatch.setitem(sys.modules, "zuko", None)  # import zuko now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "sim2real_fast\[generate\]"'):
        FlowVAE("calogan")
    assert generate.REGISTRY["flow-vae"] is FlowVAE


@pytest.mark.parametrize("name, particle, n_cells, n_layers", [("calochallenge-ds1-photons", "gamma", 368, 5),
                                                              ("calochallenge-ds1-pions", "pi+", 533, 7)])
def test_calochallenge_ds1_fit_and_sample(name, particle, n_cells, n_layers):
    data = simulate.showers(400, geometry=name, effects="nominal", seed=0,
                            particles=particle, energy_range=(1.0, 100.0))
    model = FlowVAE(name, **SMALL, particles=(particle,))
    model.fit(data.images, data.labels * 0, data.energy, epochs=2)
    images, labels, energy = model.sample(300, seed=0)
    geom = geometry.get(name)
    assert images.shape == (300, n_cells) and geom.n_layers == n_layers and model.layer_mean.shape == (n_layers,)
    assert bool((images >= 0).all()) and torch.all(labels == 0)
    assert torch.all(geom.to_padded(images)[:, ~geom.padding_mask()] == 0)
    assert (images > 0).any(1).float().mean() > 0.9
