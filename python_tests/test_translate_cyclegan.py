"""sim2real_fast.translate: the energy codec, the layered networks, CycleGAN's losses, pool and
schedule, files, resume, and a short training on a toy energy-scale shift."""

import math

import pytest
import torch
import torch.nn.functional as F

from sim2real_fast import geometry, simulate, translate
from sim2real_fast.translate import networks
from sim2real_fast.translate.base import ImagePool, linear_decay
from helpers import one_thread, perturb, random_images  # noqa: F401  (one_thread: an autouse fixture)

TINY = dict(channels=(4, 8), n_blocks=1, discriminator_channels=(4, 8), code_size=8)


@pytest.fixture(scope="module")
def showers():
    """Nominal CaloGAN showers (MeV) of every particle and energy."""
    return simulate.showers(256, seed=0, effects="nominal").images


# ---- codec and layout ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_codec_round_trip_and_layout(name):
    geom = geometry.get(name)
    codec = networks.ShowerCodec(geom, log_scale=10.0, threshold_mev=1.0)
    images = random_images(geom, 6)
    images[0, :3] = -5.0  # noise: counts as 0
    x = codec.encode(images)
    assert x.shape == (6, *geom.padded_shape)
    torch.testing.assert_close(x, geom.to_padded(torch.log1p(images.clamp_min(0)) / 10.0))
    assert torch.all(x[:, ~geom.padding_mask()] == 0)
    for i, layer in enumerate(geom.split_layers(images.clamp_min(0))):
        rows, cols = layer.shape[-2:]
        torch.testing.assert_close(x[:, i, :rows, :cols], torch.log1p(layer) / 10.0)
    decoded = codec.decode(x)
    expected = images.clamp_min(0) * (images >= 1.0)
    torch.testing.assert_close(decoded, expected, rtol=1e-5, atol=1e-4)
    assert torch.equal(decoded > 0, expected > 0)  # below 1 MeV reads exactly 0
    torch.testing.assert_close(codec.total_energy(x), images.clamp_min(0).sum(1), rtol=1e-5, atol=1e-3)


def test_layer_groups_follow_shapes_and_kind():
    assert networks.layer_groups("calogan") == (
        networks.LayerGroup((0,), 3, 96, False), networks.LayerGroup((1,), 12, 12, False),
        networks.LayerGroup((2,), 12, 6, False),
    )
    groups = networks.layer_groups("calochallenge-ds1-photons")
    assert [(g.layers, g.rows, g.cols, g.cylindrical) for g in groups] == [
        ((0,), 1, 8, True), ((1,), 10, 16, True), ((2,), 10, 19, True), ((3, 4), 1, 5, True)
    ]


def test_helpers_match_torch_references():
    x = torch.randn(2, 3, 5, 7)
    torch.testing.assert_close(networks.instance_norm(3, (5, 7))(x), F.instance_norm(x), rtol=1e-5, atol=1e-5)
    for size in [(9, 13), (5, 13), (9, 7)]:  # 2n - 1 fine cells: coarse cell j on fine cell 2j, linear between
        expected = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        torch.testing.assert_close(networks.upsample_to(x, size), expected)
    up = networks.upsample_to(x, (10, 14))  # 2n fine cells: the same, and the last cell copies its neighbour
    torch.testing.assert_close(up[..., :9, :13], F.interpolate(x, size=(9, 13), mode="bilinear", align_corners=True))
    assert torch.equal(up[..., 9, :], up[..., 8, :]) and torch.equal(up[..., :, 13], up[..., :, 12])



@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_untrained_translator_is_the_identity_on_kept_cells(name):
    geom = geometry.get(name)
    model = translate.CycleGAN(name, **TINY)
    images = random_images(geom, 40)
    expected = images * (images >= 1.0)
    for reverse in (False, True):
        out = model.translate(images, batch_size=16, reverse=reverse)
        assert out.shape == images.shape and out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    assert model.translate(images[:0]).shape == (0, geom.n_cells)


@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_outputs_are_non_negative_zero_suppressed_and_zero_on_padding(name):
    geom = geometry.get(name)
    thresholds = [5.0 * (i + 1) for i in range(geom.n_layers)]
    model = translate.CycleGAN(name, **TINY, threshold_mev=thresholds)
    perturb(model)
    images = random_images(geom, 32)
    out = model.translate(images)
    cell_threshold = torch.cat([torch.full((layer.n_cells,), t) for layer, t in zip(geom.layers, thresholds)])
    assert torch.all(out >= 0)
    assert torch.all((out == 0) | (out >= cell_threshold))
    assert (out > 0).float().mean() > 0.05  # not everything suppressed: the check has cells to bite on
    assert not torch.allclose(out, images * (images >= cell_threshold))  # the perturbed network changes showers
    x = model.codec.encode(images)
    y = model.sim_to_real(x)
    z = model.codec.suppress(y)
    assert torch.all(y[:, ~geom.padding_mask()] == 0) and torch.all(z[:, ~geom.padding_mask()] == 0)
    threshold_x = torch.log1p(torch.tensor(thresholds))[:, None, None] / 10.0
    assert torch.all((z == 0) | (z >= threshold_x))
    torch.testing.assert_close(model.codec.decode(z), out)


def test_suppress_is_straight_through_on_cells_and_blocks_padding():
    codec = networks.ShowerCodec("calogan", threshold_mev=10.0)
    y = torch.randn(3, *codec.mask.shape, requires_grad=True)
    z = codec.suppress(y)
    expected = torch.where((y >= math.log1p(10.0) / 10.0) & codec.mask.bool(), y, torch.zeros(()))
    torch.testing.assert_close(z, expected)
    z.sum().backward()
    torch.testing.assert_close(y.grad, codec.mask.expand_as(y))


def test_discriminator_patches_follow_the_halving_rule():
    def patches(name):  # one score per cell of each group's grid after one stride-2 conv (axes >= 4 cells halve)
        return sum(math.prod((n + 1) // 2 if n >= 4 else n for n in (g.rows, g.cols))
                   for g in networks.layer_groups(name))

    for name in ["calogan", "calochallenge-ds1-photons", "calochallenge-ds2"]:
        geom = geometry.get(name)
        d = networks.LayeredPatchDiscriminator(geom, channels=(4, 8), code_size=8)
        assert d(torch.rand(2, *geom.padded_shape) * geom.padding_mask()).shape == (2, patches(name))
    assert patches("calogan") == 3 * 48 + 6 * 6 + 6 * 3


# ---- losses ----------------------------------------------------------------------------------------
def test_energy_loss_hinge_values_and_gradient():
    energy = torch.tensor([100.0, 200.0, 50.0, 105.0], requires_grad=True)
    reference = torch.tensor([100.0, 100.0, 100.0, 100.0])
    loss = networks.energy_loss(energy, reference, tolerance=0.1)
    distances = [abs(math.log(e + 1) - math.log(101)) for e in (100, 200, 50, 105)]
    assert loss.item() == pytest.approx(sum(max(0.0, d - 0.1) for d in distances) / 4, rel=1e-6)
    loss.backward()
    # inside the tolerance (0 and +5%): no gradient; above: pushes down, below: pushes up, as d/dE log1p(E) / 4
    torch.testing.assert_close(energy.grad, torch.tensor([0.0, 1 / 201 / 4, -1 / 51 / 4, 0.0]))
    assert networks.energy_loss(energy, reference, tolerance=0.0).item() == pytest.approx(sum(distances) / 4, rel=1e-6)


def test_lsgan_loss_values():
    prediction = torch.tensor([[0.5, 1.5], [1.0, 0.0]])
    assert networks.lsgan_loss(prediction, True).item() == pytest.approx((0.25 + 0.25 + 0 + 1) / 4)
    assert networks.lsgan_loss(prediction, False).item() == pytest.approx((0.25 + 2.25 + 1 + 0) / 4)


class _Scale(torch.nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class _SumCritic(torch.nn.Module):
    """Two 'patches': the image sum and its negative half."""

    def forward(self, x):
        total = x.flatten(1).sum(1)
        return torch.stack([total, -0.5 * total], 1)


def test_cyclegan_losses_on_fixed_maps_match_hand_computation(showers):
    model = translate.CycleGAN("calogan", **TINY, threshold_mev=0.0, energy_tolerance=0.05)
    model.sim_to_real, model.real_to_sim = _Scale(2.0), _Scale(1.0)
    model.real_critic, model.sim_critic = _SumCritic(), _SumCritic()
    sim_mev, real_mev = showers[:8], showers[8:16] * 1.5
    a, b = model.codec.encode(sim_mev), model.codec.encode(real_mev)
    losses, fake_real, fake_sim = model.generator_losses(a, b)
    n_cells = 504

    def mean_cell(x):  # mean over the 504 cells of the 8 showers (x is 0 on the padding)
        return x.sum().item() / (8 * n_cells)

    def lsgan(scores, target):
        return sum((s - target) ** 2 for s in scores) / len(scores)

    def patches(x):
        return [v for t in x.flatten(1).sum(1).tolist() for v in (t, -0.5 * t)]

    expected = {
        "gan_sim_to_real": lsgan(patches(2 * a), 1.0),
        "gan_real_to_sim": lsgan(patches(b), 1.0),
        "cycle_sim": 10 * mean_cell((2 * a - a).abs()),  # real_to_sim(sim_to_real(a)) = 2a
        "cycle_real": 10 * mean_cell((2 * b - b).abs()),  # sim_to_real(real_to_sim(b)) = 2b
        "identity_real": 5 * mean_cell((2 * b - b).abs()),  # sim_to_real(b) = 2b
        "identity_sim": 0.0,  # real_to_sim(a) = a
    }
    # energies in MeV: E' = expm1(2 log1p(E)) = (1 + E)^2 - 1 for the doubled showers
    e_sim = sim_mev.sum(1).double()
    e_doubled = ((1 + sim_mev.double()) ** 2 - 1).sum(1)
    hinge = (torch.log1p(e_doubled) - torch.log1p(e_sim)).abs().sub(0.05).clamp_min(0).mean().item()
    expected["energy"] = 10.0 * hinge  # fake_sim = b keeps its energy: its term is 0
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4, abs=1e-6), key
    critics = model.critic_losses(a, b, fake_real, fake_sim)
    assert critics["critic_real"].item() == pytest.approx(
        0.5 * (lsgan(patches(b), 1.0) + lsgan(patches(2 * a), 0.0)), rel=1e-4)
    assert critics["critic_sim"].item() == pytest.approx(
        0.5 * (lsgan(patches(a), 1.0) + lsgan(patches(b), 0.0)), rel=1e-4)


def test_identity_and_energy_terms_can_be_switched_off(showers):
    model = translate.CycleGAN("calogan", **TINY, lambda_identity=0.0, energy_weight=0.0)
    a = model.codec.encode(showers[:4])
    losses, _, _ = model.generator_losses(a, a)
    assert set(losses) == {"gan_sim_to_real", "gan_real_to_sim", "cycle_sim", "cycle_real"}


# ---- pool and schedule -----------------------------------------------------------------------------
def _pool_by_hand(size, batches, seed):
    """The ImagePool rules, replayed on Python lists with the same draws."""
    g = torch.Generator().manual_seed(seed)
    stored, outputs = [], []
    for batch in batches:
        swap = (torch.rand(len(batch), generator=g) > 0.5).tolist()
        slots = torch.randint(size, (len(batch),), generator=g).tolist()
        out = []
        for image, s, slot in zip(batch, swap, slots):
            if len(stored) < size:
                stored.append(image)
                out.append(image)
            elif s:
                out.append(stored[slot])
                stored[slot] = image
            else:
                out.append(image)
        outputs.append(out)
    return outputs, stored


def test_image_pool_semantics():
    size, batch = 5, 4
    batches = [list(range(i * batch, (i + 1) * batch)) for i in range(60)]  # image k is the value k
    expected, stored = _pool_by_hand(size, batches, seed=3)
    pool, g = ImagePool(size), torch.Generator().manual_seed(3)
    returned = []
    for values in batches:
        images = torch.tensor(values, dtype=torch.float32)[:, None, None].expand(-1, 2, 3).contiguous()
        out = pool.query(images, g)
        assert out.shape == images.shape
        returned.append(out[:, 0, 0].long().tolist())
    assert returned == expected
    assert returned[0] == batches[0] and returned[1][0] == 4  # filling: returned as given
    assert sorted(pool.images[:, 0, 0].long().tolist()) == sorted(stored)
    later = [v for out, given in zip(returned[2:], batches[2:]) for v, w in zip(out, given)]
    swapped = sum(v != w for v, w in zip(later, [w for given in batches[2:] for w in given]))
    assert 0.35 < swapped / len(later) < 0.65  # half the images come from the pool (a slot's own image is rare)
    assert all(v < w for out, given in zip(returned[2:], batches[2:]) for v, w in zip(out, given) if v != w)


def test_image_pool_size_zero_and_state_round_trip():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 2)
    assert ImagePool(0).query(images, g) is images
    pool = ImagePool(4)
    for _ in range(3):
        pool.query(torch.rand(3, 2, generator=g), g)
    copy = ImagePool(4)
    copy.load_state_dict(pool.state_dict())
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    batch = torch.rand(5, 2)
    assert torch.equal(pool.query(batch, g1), copy.query(batch, g2))
    with pytest.raises(ValueError, match="size"):
        ImagePool(3).load_state_dict(pool.state_dict())


def test_linear_decay_values_and_cyclegan_learning_rates():
    assert [linear_decay(e, epochs=10, decay_epochs=5) for e in range(1, 11)] == pytest.approx(
        [1, 1, 1, 1, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert linear_decay(100, epochs=200, decay_epochs=100) == 1.0  # the reference's 100 + 100 epochs
    assert linear_decay(101, epochs=200, decay_epochs=100) == pytest.approx(1 - 1 / 101)
    assert linear_decay(200, epochs=200, decay_epochs=100) == pytest.approx(1 / 101)
    assert [linear_decay(e, epochs=3, decay_epochs=0) for e in (1, 2, 3)] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="decay_epochs"):
        linear_decay(1, epochs=3, decay_epochs=4)
    model = translate.CycleGAN("calogan", **TINY)
    model.start_fit(epochs=5)  # decay_fraction 0.5: floor(2.5) = 2 decaying epochs
    rates = []
    for epoch in range(1, 6):
        model.begin_epoch(epoch, epochs=5)
        rates.append([group["lr"] for opt in model._optimizers.values() for group in opt.param_groups])
    for rate, factor in zip(rates, [1, 1, 1, 2 / 3, 1 / 3]):
        assert rate == pytest.approx([2e-4 * factor] * 2)
    betas = {group["betas"] for opt in model._optimizers.values() for group in opt.param_groups}
    assert betas == {(0.5, 0.999)}


# ---- files -----------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, showers):
    model = translate.CycleGAN("calogan", **TINY, threshold_mev=(2.0, 3.0, 4.0))
    perturb(model)
    model.history = [{"epoch": 1, "loss": 0.5}]
    path = model.save(tmp_path / "cyclegan.pt")
    loaded = translate.load(path, method="cyclegan", geometry="calogan")
    assert type(loaded) is translate.CycleGAN and loaded.source == path and not loaded.training
    assert loaded.hparams == model.hparams and loaded.history == model.history
    assert loaded.geometry.to_dict() == model.geometry.to_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.equal(loaded.translate(showers), model.translate(showers))
    assert torch.equal(loaded.translate(showers, reverse=True), model.translate(showers, reverse=True))


def test_load_errors_name_the_file(tmp_path):
    model = translate.CycleGAN("calogan", **TINY)
    path = model.save(tmp_path / "model.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file at all" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}, "epoch": 3}, foreign)
    cases = [
        (garbage, {}, "not a translator file"),
        (foreign, {}, "not a translator file"),
        (path, {"method": "simgan"}, "holds a 'cyclegan' translator, expected 'simgan'"),
        (path, {"geometry": "calochallenge-ds1-photons"}, "expected 'calochallenge-ds1-photons'"),
    ]
    payload = torch.load(path, weights_only=True)
    changes = {"unknown": {"method": "nope"}, "version": {"version": 99},
               "rebuild": {"hparams": {**payload["hparams"], "channels": [3, 5]}}}
    for name, change in changes.items():
        torch.save({**payload, **change}, tmp_path / f"{name}.pt")
    cases += [
        (tmp_path / "unknown.pt", {}, "unknown translator method 'nope'; known: .*cyclegan"),
        (tmp_path / "rebuild.pt", {}, "does not rebuild a cyclegan translator"),
        (tmp_path / "version.pt", {}, "version 99"),
    ]
    for file, kwargs, message in cases:
        with pytest.raises(translate.TranslatorFileError, match=message) as error:
            translate.load(file, **kwargs)
        assert str(file) in str(error.value) and "\n" not in str(error.value), file
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        translate.load(tmp_path / "missing.pt")
    loaded = translate.load(path)
    expected = rf"\(N, 504\) cell energies of geometry 'calogan' \(model {path}\), got \(2, 368\)"
    with pytest.raises(ValueError, match=expected):
        loaded.translate(torch.zeros(2, 368))
    with pytest.raises(TypeError, match="floating"):
        loaded.translate(torch.zeros(2, 504, dtype=torch.long))


# ---- training --------------------------------------------------------------------------------------
def test_resume_repeats_an_uninterrupted_run(tmp_path, showers, monkeypatch):
    sim, real = showers[:96], showers[96:192] * 1.1
    kwargs = dict(epochs=2, batch_size=32, seed=4)
    straight = translate.CycleGAN("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "a", **kwargs)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["001_train_e1.pt", "002_train_e2.pt"]

    calls = []
    original = translate.CycleGAN.train_step

    def interrupted(self, *args):
        calls.append(1)
        if len(calls) == 5:  # second step of epoch 2 (3 steps an epoch)
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(translate.CycleGAN, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        translate.CycleGAN("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "b", **kwargs)
    monkeypatch.setattr(translate.CycleGAN, "train_step", original)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["001_train_e1.pt"]
    resumed = translate.CycleGAN("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "b", resume=True,
                                                        **kwargs)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    again = translate.CycleGAN("calogan", **TINY).fit(sim, real, **kwargs)
    other = translate.CycleGAN("calogan", **TINY).fit(sim, real, **{**kwargs, "seed": 5})
    assert torch.equal(again.translate(showers), straight.translate(showers))
    assert not torch.equal(other.translate(showers), straight.translate(showers))
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history) and len(straight.history) == 2
    assert torch.equal(resumed.translate(showers), straight.translate(showers))
    finished = translate.CycleGAN("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "a", resume=True,
                                                         **kwargs)
    assert torch.equal(finished.translate(showers), straight.translate(showers))
    assert translate.load(tmp_path / "a" / "002_train_e2.pt").translate(showers).equal(straight.translate(showers))
    with pytest.raises(FileExistsError, match="resume=True"):
        translate.CycleGAN("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "a", **kwargs)
    with pytest.raises(ValueError, match="another run"):
        translate.CycleGAN("calogan", **TINY).fit(sim, real, checkpoint_dir=tmp_path / "a", resume=True,
                                                  epochs=2, batch_size=32, seed=5)


def test_fit_checks_its_inputs(showers):
    model = translate.CycleGAN("calogan", **TINY)
    with pytest.raises(ValueError, match="real: expected \\(N, 504\\)"):
        model.fit(showers, torch.zeros(4, 368))
    with pytest.raises(ValueError, match="checkpoint_dir"):
        model.fit(showers, showers, resume=True)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        model.fit(showers, showers, epochs=0)
    with pytest.raises(ValueError, match="lambda_cycle"):
        translate.CycleGAN("calogan", lambda_cycle=-1.0)
    with pytest.raises(ValueError, match="threshold_mev"):
        translate.CycleGAN("calogan", threshold_mev=(1.0, 2.0))


def test_training_on_a_toy_shift_moves_energies_toward_real_within_tolerance():
    """sim vs sim x 1.2 at a fixed beam energy: the 20% scale is visible shower by shower. The energy
    term lets a translation change a total energy by exp(+-0.1) freely: the translator should move
    to about that edge, no further."""
    beam = dict(effects="nominal", energy_range=(20.0, 20.0), particles="e+")
    sim = simulate.showers(384, seed=10, **beam).images
    real = simulate.showers(384, seed=11, **beam).images * 1.2
    test = simulate.showers(300, seed=12, **beam).images
    model = translate.CycleGAN("calogan", **TINY, lr=1e-3)
    before = model.translate(test).sum(1) / test.sum(1)
    model.fit(sim, real, epochs=6, batch_size=32, seed=0)
    ratio = model.translate(test).sum(1) / test.sum(1)
    assert (before - 1).abs().median() < 1e-4
    assert ratio.median() > 1.05  # moved toward 1.2 ...
    assert (ratio - 1).abs().median() < math.exp(0.1) - 1 + 0.03  # ... and stays within the tolerance
