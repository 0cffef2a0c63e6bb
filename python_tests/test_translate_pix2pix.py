"""sim2real_fast.translate.pix2pix: the U-Net, the conditional discriminator, Pix2Pix's losses, pairs,
files, resume, and a short training on a toy paired energy-scale shift."""

import math

import pytest
import torch

from sim2real_fast import geometry, simulate, translate
from sim2real_fast.translate import networks
from sim2real_fast.translate.pix2pix import (  # importing the module registers "pix2pix"
    ConditionalPatchDiscriminator, LayeredUnetGenerator, Pix2Pix, vanilla_gan_loss,
)
from helpers import one_thread, perturb, random_images  # noqa: F401  (one_thread: an autouse fixture)

TINY = dict(channels=(4, 8, 8), discriminator_channels=(4, 8), code_size=8)


@pytest.fixture(scope="module")
def pairs():
    """The same 128 CaloGAN showers under nominal and stress detector effects (MeV)."""
    paired = simulate.paired_showers(128, seed=0, real_effects="stress")
    return paired.sim.images, paired.real.images


# ---- outputs ---------------------------------------------------------------------------------------
def test_untrained_translator_is_the_identity_and_one_directional(pairs):
    sim, _ = pairs
    model = Pix2Pix("calogan", **TINY)
    assert translate.REGISTRY["pix2pix"] is Pix2Pix and Pix2Pix.paired and not Pix2Pix.invertible
    out = model.translate(sim, batch_size=50)
    assert out.shape == sim.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, sim * (sim >= 1.0), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="pix2pix translates sim to real only"):
        model.translate(sim, reverse=True)


@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_outputs_are_non_negative_zero_suppressed_and_zero_on_padding(name, pairs):
    geom = geometry.get(name)
    thresholds = [5.0 * (i + 1) for i in range(geom.n_layers)]
    model = Pix2Pix(name, **TINY, threshold_mev=thresholds)
    perturb(model)
    images = pairs[0][:32] if name == "calogan" else random_images(geom, 32)
    out = model.translate(images)
    cell_threshold = torch.cat([torch.full((layer.n_cells,), t) for layer, t in zip(geom.layers, thresholds)])
    assert out.shape == images.shape and torch.all(out >= 0)
    assert torch.all((out == 0) | (out >= cell_threshold))
    assert (out > 0).float().mean() > 0.05  # not everything suppressed: the check has cells to bite on
    assert not torch.allclose(out, images * (images >= cell_threshold))  # the perturbed network changes showers
    y = model.generator(model.codec.encode(images))
    z = model.codec.suppress(y)
    assert torch.all(y[:, ~geom.padding_mask()] == 0) and torch.all(z[:, ~geom.padding_mask()] == 0)
    torch.testing.assert_close(model.codec.decode(z), out)


# ---- networks --------------------------------------------------------------------------------------
def test_unet_grids_follow_the_halving_rule():
    net = LayeredUnetGenerator("calogan", channels=(4, 8, 8, 8), code_size=8)
    assert [b.sizes for b in net.branches] == [
        [(3, 96), (3, 48), (3, 24), (3, 12)], [(12, 12), (6, 6), (3, 3), (3, 3)], [(12, 6), (6, 3), (3, 3), (3, 3)]
    ]  # axes of 3 cells are kept
    with pytest.raises(ValueError, match="channels must be 2 or more"):
        LayeredUnetGenerator("calogan", channels=(4,))


def test_unet_skip_carries_fine_detail_to_the_output():
    """Cut the coarse path at the finest decoder step (and its instance norm, which couples the whole
    grid): the output still follows the input, through the full-grid skip alone, and only within the
    5 x 5 neighbourhood of the stem's and the decoder's 3 x 3 convolutions."""
    geom = geometry.get("calogan")
    net = LayeredUnetGenerator(geom, channels=(4, 8, 8), code_size=8)
    perturb(net)
    branch = net.branches[1]  # layer_1, 12 x 12
    captured = {}
    branch.stem.register_forward_hook(lambda m, i, o: captured.__setitem__("stem", o))
    branch.up[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("up_input", i[0]))
    x = (torch.rand(1, *geom.padded_shape, generator=torch.Generator().manual_seed(0)) * geom.padding_mask())
    x.requires_grad_(True)
    net(x)
    skip = captured["stem"] + branch.position
    assert captured["up_input"].shape[1] == 8 + 4
    torch.testing.assert_close(captured["up_input"][:, 8:], skip)  # the encoder's full-grid features, concatenated
    with torch.no_grad():
        branch.up[-1][1].conv.weight[:, :8] = 0  # the upsampled coarse features no longer reach the output
    branch.up[-1][2] = torch.nn.Identity()
    y = net(x)
    (y[0, 1, 5, 6] - x[0, 1, 5, 6]).backward()  # the correction at one cell of layer_1
    grad = x.grad[0, 1, :12, :12].abs()
    assert grad[3:8, 4:9].sum() > 0
    outside = grad.clone()
    outside[3:8, 4:9] = 0
    assert outside.sum() == 0
    assert x.grad[0, [0, 2]].abs().sum() == 0  # other layers reach it only through the bottleneck, now cut


def test_conditional_discriminator_scores_input_output_pairs():
    def patches(name):  # one score per cell of each group's grid after one stride-2 conv (axes >= 4 cells halve)
        return sum(math.prod((n + 1) // 2 if n >= 4 else n for n in (g.rows, g.cols))
                   for g in networks.layer_groups(name))

    for name in ["calogan", "calochallenge-ds1-photons"]:
        geom = geometry.get(name)
        d = ConditionalPatchDiscriminator(geom, channels=(4, 8), code_size=8)
        a, b = (torch.rand(2, *geom.padded_shape) * geom.padding_mask() for _ in range(2))
        assert d(a, b).shape == (2, patches(name))
    geom = geometry.get("calogan")
    d = ConditionalPatchDiscriminator(geom, channels=(4, 8), code_size=8)
    perturb(d)
    seen = []
    d.branches[1].first.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    g = torch.Generator().manual_seed(2)
    a, b, c = (torch.rand(3, *geom.padded_shape, generator=g) * geom.padding_mask() for _ in range(3))
    scores = d(a, b)
    torch.testing.assert_close(seen[0], torch.cat([a[:, 1:2, :12, :12], b[:, 1:2, :12, :12]], 1))
    assert not torch.allclose(d(c, b), scores)  # the condition matters, not only the image
    assert not torch.allclose(d(a, c), scores)


# ---- losses ----------------------------------------------------------------------------------------
def test_vanilla_gan_loss_is_bce_on_logits():
    logits = torch.tensor([[0.5, -1.5], [2.0, 0.0]])
    sig = [1 / (1 + math.exp(-z)) for z in (0.5, -1.5, 2.0, 0.0)]
    assert vanilla_gan_loss(logits, True).item() == pytest.approx(-sum(math.log(s) for s in sig) / 4, rel=1e-6)
    assert vanilla_gan_loss(logits, False).item() == pytest.approx(-sum(math.log(1 - s) for s in sig) / 4, rel=1e-6)


class _MeanCritic(torch.nn.Module):
    """Two 'patches' per shower: the image's mean and minus half the condition's; records its inputs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, condition, image):
        self.calls.append((condition, image))
        return torch.stack([image.flatten(1).mean(1), -0.5 * condition.flatten(1).mean(1)], 1)


def test_pix2pix_losses_on_fixed_maps_match_hand_computation(pairs):
    model = Pix2Pix("calogan", **TINY, threshold_mev=0.0, energy_tolerance=0.05)
    model.critic = _MeanCritic()
    sim_mev, real_mev = pairs[0][:8], pairs[0][:8] * 1.5
    a, b = model.codec.encode(sim_mev), model.codec.encode(real_mev)
    fake = 2 * a
    losses = model.generator_losses(a, b, fake)

    def bce(scores, target):
        return sum(math.log1p(math.exp(-s)) if target else math.log1p(math.exp(s)) for s in scores) / len(scores)

    def patches(condition, image):
        return [v for c, i in zip(condition.flatten(1).mean(1).tolist(), image.flatten(1).mean(1).tolist())
                for v in (i, -0.5 * c)]

    e_sim = sim_mev.sum(1).double()
    e_doubled = ((1 + sim_mev.double()) ** 2 - 1).sum(1)  # E' = expm1(2 log1p(E))
    hinge = (torch.log1p(e_doubled) - torch.log1p(e_sim)).abs().sub(0.05).clamp_min(0).mean().item()
    expected = {
        "gan": bce(patches(a, fake), True),
        "l1": 100 * (fake - b).abs().sum().item() / (8 * 504),  # mean over the real cells of the log view
        "energy": 10.0 * hinge,
    }
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert model.critic.calls[0][0] is a  # conditioned on the input
    critic = model.critic_losses(a, b, fake)
    assert set(critic) == {"critic"}
    assert critic["critic"].item() == pytest.approx(0.5 * (bce(patches(a, fake), False) + bce(patches(a, b), True)),
                                                    rel=1e-4)
    assert all(condition is a for condition, _ in model.critic.calls[1:])
    assert model.critic.calls[2][1] is b  # the real pair is scored given its own sim shower
    model.energy_weight = 0.0
    assert set(model.generator_losses(a, b, fake)) == {"gan", "l1"}


# ---- pairs, files, resume --------------------------------------------------------------------------
def test_fit_keeps_pairs_aligned_and_refuses_mismatched_lengths(pairs, monkeypatch):
    sim = pairs[0][:70]
    real = sim * 1.2
    model = Pix2Pix("calogan", **TINY)
    ratios = []
    original = Pix2Pix.train_step

    def spy(self, a, b, generator):
        ratios.append(self.codec.total_energy(b) / self.codec.total_energy(a))
        return original(self, a, b, generator)

    monkeypatch.setattr(Pix2Pix, "train_step", spy)
    model.fit(sim, real, epochs=2, batch_size=32, seed=3)
    ratios = torch.cat(ratios)
    assert len(ratios) == 140
    torch.testing.assert_close(ratios, torch.full_like(ratios, 1.2), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="pix2pix trains on pairs; sim has 70 showers, real 69") as error:
        model.fit(sim, real[:69])
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="lambda_l1"):
        Pix2Pix("calogan", lambda_l1=-1.0)


def test_save_load_round_trip_and_method_check(tmp_path, pairs):
    sim, real = pairs
    model = Pix2Pix("calogan", **TINY).fit(sim[:64], real[:64], epochs=1, batch_size=32, seed=1)
    path = model.save(tmp_path / "p2p.pt")
    loaded = translate.load(path, method="pix2pix", geometry="calogan")
    assert isinstance(loaded, Pix2Pix) and loaded.hparams == model.hparams and loaded.history == model.history
    assert torch.equal(loaded.translate(sim), model.translate(sim))
    assert not torch.equal(model.translate(sim), sim * (sim >= 1.0))  # trained: not the identity any more
    expected = r"p2p\.pt: holds a 'pix2pix' translator, expected 'cyclegan'"
    with pytest.raises(translate.TranslatorFileError, match=expected):
        translate.load(path, method="cyclegan")


def test_resume_repeats_an_uninterrupted_run(tmp_path, pairs, monkeypatch):
    sim, real = pairs[0][:96], pairs[1][:96]
    kwargs = dict(epochs=2, batch_size=32, seed=4)
    straight = Pix2Pix("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "a", **kwargs)
    calls = []
    original = Pix2Pix.train_step

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 5:  # second step of epoch 2 (3 steps an epoch)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Pix2Pix, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Pix2Pix("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "b", **kwargs)
    monkeypatch.setattr(Pix2Pix, "train_step", original)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["001_train_e1.pt"]
    resumed = Pix2Pix("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    other = Pix2Pix("calogan", **TINY).fit(sim, real, **{**kwargs, "seed": 5})
    assert not torch.equal(other.translate(sim), straight.translate(sim))
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history) and len(straight.history) == 2
    assert set(straight.history[0]) == {"epoch", "lr", "seconds", "gan", "l1", "energy", "critic"}


# ---- training --------------------------------------------------------------------------------------
def test_training_on_a_toy_paired_shift_moves_energies_toward_real():
    """real = sim x 1.2 shower by shower. Without the energy term, the L1 to the pairs teaches the
    full factor; with it, a translation stops near the tolerance's edge exp(0.1) = 1.105."""
    beam = dict(effects="nominal", energy_range=(20.0, 20.0), particles="e+")
    sim = simulate.showers(256, seed=10, **beam).images
    test = simulate.showers(200, seed=12, **beam).images
    ratios = {}
    for weight in (0.0, 10.0):
        model = Pix2Pix("calogan", **TINY, lr=1e-3, energy_weight=weight)
        before = model.translate(test).sum(1) / test.sum(1)
        assert (before - 1).abs().median() < 1e-4
        model.fit(sim, sim * 1.2, epochs=4, batch_size=32, seed=0)
        ratios[weight] = (model.translate(test).sum(1) / test.sum(1)).median().item()
    assert ratios[0.0] == pytest.approx(1.2, abs=0.03)
    assert 1.05 < ratios[10.0] < math.exp(0.1) + 0.02
