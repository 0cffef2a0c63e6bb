"""sim2real_fast.translate.simgan: the refiner's layout, the losses against hand computations, the
history buffer against a replay, files, resume, and a short training on a toy energy-scale shift."""

import math

import pytest
import torch

import sim2real_fast.translate.simgan  # noqa: F401  (registers "simgan")
from sim2real_fast import geometry, simulate, translate
from sim2real_fast.translate.simgan import HistoryBuffer, SimGAN, local_adversarial_loss
from helpers import one_thread, perturb, random_images  # noqa: F401  (one_thread: an autouse fixture)

TINY = dict(channels=(4,), n_blocks=1, discriminator_channels=(4, 8), code_size=8)


@pytest.fixture(scope="module")
def showers():
    """Nominal CaloGAN showers (MeV) of every particle and energy."""
    return simulate.showers(256, seed=0, effects="nominal").images


# ---- the refiner -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_untrained_refiner_is_the_identity_without_downsampling(name):
    geom = geometry.get(name)
    model = SimGAN(name, **TINY)
    for branch, group in zip(model.refiner.branches, model.refiner.groups):
        assert len(branch.down) == 0 and branch.sizes == [(group.rows, group.cols)]  # full grid throughout
    images = random_images(geom, 40)
    out = model.translate(images, batch_size=16)
    assert out.shape == images.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, images * (images >= 1.0), rtol=1e-5, atol=1e-4)
    assert model.translate(images[:0]).shape == (0, geom.n_cells)
    assert not SimGAN.invertible
    with pytest.raises(ValueError, match="sim to real only"):
        model.translate(images, reverse=True)
    with pytest.raises(ValueError, match="sim to real only"):
        model.network(reverse=True)


@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_outputs_are_non_negative_zero_suppressed_and_zero_on_padding(name):
    geom = geometry.get(name)
    thresholds = [5.0 * (i + 1) for i in range(geom.n_layers)]
    model = SimGAN(name, **TINY, threshold_mev=thresholds)
    perturb(model)
    images = random_images(geom, 32)
    out = model.translate(images)
    cell_threshold = torch.cat([torch.full((layer.n_cells,), t) for layer, t in zip(geom.layers, thresholds)])
    assert torch.all(out >= 0)
    assert torch.all((out == 0) | (out >= cell_threshold))
    assert (out > 0).float().mean() > 0.05  # not everything suppressed: the check has cells to bite on
    assert not torch.allclose(out, images * (images >= cell_threshold))  # the perturbed refiner changes showers
    z = model.generate(model.refiner, model.codec.encode(images))
    assert torch.all(z[:, ~geom.padding_mask()] == 0)
    threshold_x = torch.log1p(torch.tensor(thresholds))[:, None, None] / 10.0
    assert torch.all((z == 0) | (z >= threshold_x))
    torch.testing.assert_close(model.codec.decode(z), out)


# ---- losses ----------------------------------------------------------------------------------------
def test_local_adversarial_loss_values():
    scores = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    sigmoid = [1 / (1 + math.exp(-s)) for s in (0.5, -1.0, 2.0, 0.0)]
    assert local_adversarial_loss(scores, True).item() == pytest.approx(
        sum(-math.log(p) for p in sigmoid) / 4, rel=1e-6)
    assert local_adversarial_loss(scores, False).item() == pytest.approx(
        sum(-math.log(1 - p) for p in sigmoid) / 4, rel=1e-6)
    assert local_adversarial_loss(scores, True, kind="lsgan").item() == pytest.approx((0.25 + 4 + 1 + 1) / 4)
    assert local_adversarial_loss(scores, False, kind="lsgan").item() == pytest.approx((0.25 + 1 + 4 + 0) / 4)
    with pytest.raises(ValueError, match="kind"):
        local_adversarial_loss(scores, True, kind="wasserstein")


class _Scale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class _SumCritic(torch.nn.Module):
    """Two 'patches': a hundredth of the image sum and its negative half."""

    def forward(self, x):
        total = x.flatten(1).sum(1) / 100
        return torch.stack([total, -0.5 * total], 1)


@pytest.mark.parametrize("adversarial", ["cross_entropy", "lsgan"])
def test_simgan_losses_on_fixed_maps_match_hand_computation(showers, adversarial):
    model = SimGAN("calogan", **TINY, threshold_mev=0.0, energy_tolerance=0.05, lambda_reg=3.0,
                   adversarial=adversarial)
    model.refiner, model.critic = _Scale(2.0), _SumCritic()
    sim_mev, real_mev = showers[:8], showers[8:16] * 1.5
    a, b = model.codec.encode(sim_mev), model.codec.encode(real_mev)
    losses, refined = model.refiner_losses(a)
    torch.testing.assert_close(refined, 2 * a)

    def patches(x):
        return [v for t in x.flatten(1).sum(1).tolist() for v in (t / 100, -0.5 * t / 100)]

    def adv(scores, real):
        if adversarial == "lsgan":
            return sum((s - (1.0 if real else 0.0)) ** 2 for s in scores) / len(scores)
        return sum(math.log1p(math.exp(-s if real else s)) for s in scores) / len(scores)

    e_sim = sim_mev.sum(1).double()
    e_refined = ((1 + sim_mev.double()) ** 2 - 1).sum(1)  # expm1(2 log1p(E)) cell by cell
    hinge = (torch.log1p(e_refined) - torch.log1p(e_sim)).abs().sub(0.05).clamp_min(0).mean().item()
    expected = {
        "adversarial": adv(patches(2 * a), True),
        "self_regularisation": 3.0 * a.sum().item() / (8 * 504),  # mean |2a - a| over the 504 cells
        "energy": 10.0 * hinge,
    }
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key
    critic = model.critic_losses(b, refined)
    assert set(critic) == {"critic"}
    assert critic["critic"].item() == pytest.approx(adv(patches(b), True) + adv(patches(2 * a), False), rel=1e-4)
    off = SimGAN("calogan", **TINY, energy_weight=0.0)
    assert set(off.refiner_losses(a)[0]) == {"adversarial", "self_regularisation"}


def test_train_step_makes_k_g_refiner_and_k_d_critic_updates(showers):
    model = SimGAN("calogan", **TINY, refiner_steps=2, critic_steps=3, history_size=8)
    model.start_fit(epochs=1)
    model.begin_epoch(1, epochs=1)
    a, b = model.codec.encode(showers[:6]), model.codec.encode(showers[6:12])
    losses = model.train_step(a, b, torch.Generator().manual_seed(0))
    assert set(losses) == {"adversarial", "self_regularisation", "energy", "critic"}
    steps = {k: {int(s["step"]) for s in o.state_dict()["state"].values()} for k, o in model._optimizers.items()}
    assert steps == {"refiner": {2}, "critic": {3}}
    assert model._history.count == 3  # the batch's first b - b // 2 refined showers


# ---- history buffer --------------------------------------------------------------------------------
def _history_by_hand(size, batches, seed):
    """The paper's buffer on Python lists with the same draws: b/2 shown from it, b/2 stored."""
    g = torch.Generator().manual_seed(seed)
    stored, outputs = [], []
    for batch in batches:
        half = len(batch) // 2
        fresh = batch[: len(batch) - half]
        out = list(batch)
        if half and len(stored) >= half:
            picks = torch.randperm(len(stored), generator=g)[:half].tolist()
            out = fresh + [stored[p] for p in picks]
        new = fresh[:size]
        free = min(size - len(stored), len(new))
        stored += new[:free]
        if new[free:]:
            for slot, value in zip(torch.randperm(size, generator=g).tolist(), new[free:]):
                stored[slot] = value
        outputs.append(out)
    return outputs, stored


def test_history_buffer_semantics():
    size = 7
    sizes = [4, 4, 5, 1] + [6] * 40 + [20]  # odd, single and larger-than-buffer batches too
    batches, first = [], 0
    for n in sizes:
        batches.append(list(range(first, first + n)))  # image k is the value k
        first += n
    expected, stored = _history_by_hand(size, batches, seed=3)
    buffer, g = HistoryBuffer(size), torch.Generator().manual_seed(3)
    returned = []
    for values in batches:
        images = torch.tensor(values, dtype=torch.float32)[:, None, None].expand(-1, 2, 3).contiguous()
        out = buffer.query(images, g)
        assert out.shape == images.shape
        returned.append(out[:, 0, 0].long().tolist())
    assert returned == expected
    assert sorted(buffer.images[:, 0, 0].long().tolist()) == sorted(stored) and buffer.count == size
    assert returned[0] == batches[0]  # empty buffer: the batch as given
    assert returned[1][:2] == [4, 5] and sorted(returned[1][2:]) == [0, 1]  # the only stored images
    assert returned[-1] == batches[-1]  # b // 2 = 10 > 7 stored: no history
    for out, given in zip(returned[1:-1], batches[1:-1]):
        half = len(given) // 2
        assert out[: len(given) - half] == given[: len(given) - half]  # the newest refined half first ...
        old = out[len(given) - half:]
        assert len(set(old)) == len(old) and all(v < given[0] for v in old)  # ... then distinct earlier ones
    fresh = {v for given in batches for v in given[: len(given) - len(given) // 2]}
    assert set(stored) <= fresh and len(set(stored)) == size  # only the shown-fresh halves are stored


def test_history_buffer_size_zero_and_state_round_trip():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(4, 2)
    zero = HistoryBuffer(0)
    assert zero.query(images, g) is images and zero.count == 0
    buffer = HistoryBuffer(5)
    for _ in range(3):
        buffer.query(torch.rand(4, 2, generator=g), g)
    copy = HistoryBuffer(5)
    copy.load_state_dict(buffer.state_dict())
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    batch = torch.rand(6, 2)
    out = buffer.query(batch, g1)
    assert torch.equal(out, copy.query(batch, g2)) and not torch.equal(out, batch)
    with pytest.raises(ValueError, match="size"):
        HistoryBuffer(3).load_state_dict(buffer.state_dict())


# ---- files -----------------------------------------------------------------------------------------
def test_save_load_round_trip_and_method_check(tmp_path, showers):
    model = SimGAN("calogan", **TINY, threshold_mev=(2.0, 3.0, 4.0), lambda_reg=0.5, adversarial="lsgan")
    perturb(model)
    model.history = [{"epoch": 1, "critic": 0.5}]
    path = model.save(tmp_path / "simgan.pt")
    assert "simgan" in translate.REGISTRY
    loaded = translate.load(path, method="simgan", geometry="calogan")
    assert type(loaded) is SimGAN and loaded.source == path and not loaded.training
    assert loaded.hparams == model.hparams and loaded.history == model.history
    assert loaded.lambda_reg == 0.5 and loaded.adversarial == "lsgan"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    out = loaded.translate(showers)
    assert torch.equal(out, model.translate(showers)) and not torch.equal(out, showers)
    with pytest.raises(translate.TranslatorFileError, match="holds a 'simgan' translator, expected 'cyclegan'"):
        translate.load(path, method="cyclegan")


def test_constructor_checks_its_options():
    for kwargs, message in [
        ({"lambda_reg": -1.0}, "lambda_reg"), ({"adversarial": "hinge"}, "adversarial"),
        ({"history_size": -1}, "history_size"), ({"refiner_steps": 0}, "refiner_steps"),
        ({"critic_steps": 1.5}, "critic_steps"), ({"lr": 0.0}, "lr"), ({"beta1": 1.0}, "beta1"),
        ({"decay_fraction": 2.0}, "decay_fraction"), ({"threshold_mev": (1.0, 2.0)}, "threshold_mev"),
        ({"channels": ()}, "channels"),
    ]:
        with pytest.raises(ValueError, match=message):
            SimGAN("calogan", **{**TINY, **kwargs})


# ---- training --------------------------------------------------------------------------------------
def test_resume_repeats_an_uninterrupted_run(tmp_path, showers, monkeypatch):
    sim, real = showers[:96], showers[96:192] * 1.1
    kwargs = dict(epochs=2, batch_size=32, seed=4)
    straight = SimGAN("calogan", **TINY, history_size=40).fit(sim, real, checkpoint_dir=tmp_path / "a", **kwargs)
    calls = []
    original = SimGAN.train_step

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 5:  # second step of epoch 2 (3 steps an epoch)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(SimGAN, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        SimGAN("calogan", **TINY, history_size=40).fit(sim, real, checkpoint_dir=tmp_path / "b", **kwargs)
    monkeypatch.setattr(SimGAN, "train_step", original)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["001_train_e1.pt"]
    resumed = SimGAN("calogan", **TINY, history_size=40).fit(sim, real, checkpoint_dir=tmp_path / "b",
                                                             resume=True, **kwargs)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history) and len(straight.history) == 2
    other = SimGAN("calogan", **TINY, history_size=40).fit(sim, real, **{**kwargs, "seed": 5})
    assert not torch.equal(other.translate(showers), straight.translate(showers))
    assert translate.load(tmp_path / "a" / "002_train_e2.pt").translate(showers).equal(straight.translate(showers))


@pytest.mark.parametrize("scale", [1.2, 0.8])
def test_training_on_a_toy_shift_moves_energies_toward_real_within_tolerance(scale):
    """sim vs sim x ``scale`` at a fixed beam energy: the refiner should move total energies toward
    ``scale``, up to about the energy term's free band exp(+-0.1), no further."""
    beam = dict(effects="nominal", energy_range=(20.0, 20.0), particles="e+")
    sim = simulate.showers(384, seed=10, **beam).images
    real = simulate.showers(384, seed=11, **beam).images * scale
    test = simulate.showers(300, seed=12, **beam).images
    model = SimGAN("calogan", **TINY, lr=1e-3)
    before = model.translate(test).sum(1) / test.sum(1)
    model.fit(sim, real, epochs=6, batch_size=32, seed=0)
    ratio = model.translate(test).sum(1) / test.sum(1)
    assert (before - 1).abs().median() < 1e-4
    assert (ratio.median() - 1) * math.copysign(1, scale - 1) > 0.05  # moved toward the real scale ...
    assert (ratio - 1).abs().median() < math.exp(0.1) - 1 + 0.03  # ... and stays within the tolerance
