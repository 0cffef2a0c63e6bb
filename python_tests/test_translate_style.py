"""sim2real_fast.translate.style: the Gram matrix and losses against hand computations, the loss network's
feature maps against CaloCNN's own, its training and freezing, sim_labels checks, files, resume, and a
short training on nominal vs stress showers."""

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from sim2real_fast import geometry, simulate, translate
from sim2real_fast.translate.style import FEATURE_LAYERS, StyleTransfer, gram_matrix
from helpers import one_thread, perturb, random_images  # noqa: F401  (one_thread: an autouse fixture)

TINY = dict(channels=(4, 8), n_blocks=1, code_size=8, feature_channels=(4, 8))


@pytest.fixture(scope="module")
def domains():
    """256 nominal (sim, with labels) and 256 + 256 stress ("real") CaloGAN showers in MeV."""
    sim = simulate.showers(256, seed=0, effects="nominal")
    real = simulate.showers(256, seed=1, effects="stress").images
    held_out = simulate.showers(256, seed=2, effects="stress").images
    return sim.images, sim.labels, real, held_out


@pytest.fixture(scope="module")
def trained(domains):
    """A style transfer fitted on nominal vs stress (6 epochs, batch 32)."""
    sim, labels, real, _ = domains
    torch.set_num_threads(1)
    model = StyleTransfer("calogan", **TINY, feature_epochs=8, style_weight=1e6, lr=3e-3)
    return model.fit(sim, real, sim_labels=labels, epochs=6, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory, domains):
    """A 2-epoch fit with checkpoints (batch 64: 4 steps an epoch); returns (model, folder)."""
    sim, labels, real, _ = domains
    folder = tmp_path_factory.mktemp("style") / "a"
    torch.set_num_threads(1)
    model = StyleTransfer("calogan", **TINY, feature_epochs=2)
    model.fit(sim, real, sim_labels=labels, epochs=2, batch_size=64, seed=3, checkpoint_dir=folder)
    return model, folder


def _reset(model, seed):
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


# ---- losses ----------------------------------------------------------------------------------------
def test_gram_matrix_matches_hand_computation():
    features = torch.tensor([[[[1.0, 2.0, 0.0]], [[0.5, -1.0, 3.0]]],
                             [[[0.0, 1.0, 1.0]], [[2.0, 0.0, -2.0]]]])  # (2 showers, 2 channels, 1 x 3)
    expected = torch.zeros(2, 2, 2)
    for n in range(2):
        for i in range(2):
            for j in range(2):
                expected[n, i, j] = sum(features[n, i, 0, k] * features[n, j, 0, k] for k in range(3)) / 6
    torch.testing.assert_close(gram_matrix(features), expected)
    assert gram_matrix(features)[0, 0, 1].item() == pytest.approx((0.5 - 2.0 + 0.0) / 6)
    x = torch.randn(3, 4, 5, 6)
    flat = x.flatten(2)
    torch.testing.assert_close(gram_matrix(x), torch.einsum("nck,ndk->ncd", flat, flat) / (4 * 5 * 6))


@pytest.mark.parametrize("name", ["calogan", "calochallenge-ds1-photons"])
def test_feature_maps_are_the_calocnn_branch_activations(name):
    geom = geometry.get(name)
    model = _reset(StyleTransfer(name, **TINY), 0)
    images = random_images(geom, 12)
    hooked = {layer: [] for layer in FEATURE_LAYERS}
    handles = [module.register_forward_hook(lambda m, i, out, key=key: hooked[key].append(out))
               for branch in model.feature_network.branches
               for key, module in (("conv1", branch[1]), ("conv2", branch[3]))]
    model.feature_network.features(images)
    for handle in handles:
        handle.remove()
    maps = model.feature_maps(model.codec.encode(images))
    assert set(maps) == set(FEATURE_LAYERS)
    for layer in FEATURE_LAYERS:
        assert len(maps[layer]) == len(model.feature_network.groups) == len(hooked[layer])
        for ours, theirs in zip(maps[layer], hooked[layer]):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert maps["conv2"][0].shape[1] == 8 and maps["conv1"][0].shape[1] == 4


def test_losses_match_hand_computation(domains):
    sim_mev, _, real_mev, _ = domains
    model = _reset(StyleTransfer("calogan", **TINY, threshold_mev=0.0, energy_tolerance=0.05, content_weight=2.0,
                                 style_weight=30.0), 1)
    sim, real = model.codec.encode(sim_mev[:16]), model.codec.encode(real_mev[:24])
    perturb(model.transform_network, std=0.05)
    losses, translated = model.transfer_losses(sim, real)
    assert set(losses) == {"content", "style", "energy"}
    maps_t, maps_s, maps_r = model.feature_maps(translated), model.feature_maps(sim), model.feature_maps(real)
    style = sum(((gram_matrix(t).mean(0) - gram_matrix(r).mean(0)) ** 2).mean()
                for layer in ("conv1", "conv2") for t, r in zip(maps_t[layer], maps_r[layer]))
    content = sum(((t - s) ** 2).mean() for t, s in zip(maps_t["conv2"], maps_s["conv2"]))
    e_t, e_s = model.codec.total_energy(translated).double(), sim_mev[:16].sum(1).double()
    hinge = ((torch.log1p(e_t) - torch.log1p(e_s)).abs() - 0.05).clamp_min(0).mean()
    assert losses["style"].item() == pytest.approx(30.0 * style.item(), rel=1e-4)
    assert losses["content"].item() == pytest.approx(2.0 * content.item(), rel=1e-4)
    assert losses["energy"].item() == pytest.approx(10.0 * hinge.item(), rel=1e-3, abs=1e-6)
    assert all(math.isfinite(v.item()) and v.item() > 0 for v in losses.values())
    identity = _reset(StyleTransfer("calogan", **TINY, threshold_mev=0.0, style_layers=("conv2",)), 1)
    same, _ = identity.transfer_losses(sim, real)
    assert same["content"].item() == 0 and same["energy"].item() == 0 and same["style"].item() > 0
    assert identity.style_loss(real, identity.style_targets(real)).item() == pytest.approx(0, abs=1e-12)
    off = StyleTransfer("calogan", **TINY, energy_weight=0.0, content_layers=())
    losses, _ = off.transfer_losses(sim, real)
    assert set(losses) == {"content", "style"} and losses["content"].item() == 0


# ---- outputs ---------------------------------------------------------------------------------------
def test_untrained_transform_is_the_identity_and_sim_to_real_only():
    geom = geometry.get("calogan")
    model = StyleTransfer("calogan", **TINY)
    images = random_images(geom, 20)
    torch.testing.assert_close(model.translate(images, batch_size=8), images * (images >= 1.0), rtol=1e-5, atol=1e-4)
    assert not StyleTransfer.invertible and StyleTransfer.needs_sim_labels
    assert not getattr(translate.Translator, "needs_sim_labels", False)
    with pytest.raises(ValueError, match="sim to real only"):
        model.translate(images, reverse=True)


def test_outputs_are_non_negative_and_zero_suppressed():
    geom = geometry.get("calogan")
    thresholds = [5.0, 10.0, 15.0]
    model = StyleTransfer("calogan", **TINY, threshold_mev=thresholds)
    perturb(model.transform_network)
    images = random_images(geom, 32)
    out = model.translate(images)
    cell_threshold = torch.cat([torch.full((layer.n_cells,), t) for layer, t in zip(geom.layers, thresholds)])
    assert torch.all(out >= 0) and torch.all((out == 0) | (out >= cell_threshold))
    assert (out > 0).float().mean() > 0.05
    assert not torch.allclose(out, images * (images >= cell_threshold))


# ---- training --------------------------------------------------------------------------------------
def test_training_lowers_the_style_loss_and_keeps_the_energy(trained, domains):
    sim, _, real, held_out = domains
    codec = trained.codec
    features = [h for h in trained.history if h.get("stage") == "features"]
    assert [h["epoch"] for h in features] == list(range(1, 9)) and len(trained.history) == 8 + 6
    assert features[-1]["feature_loss"] < features[0]["feature_loss"]
    assert features[-1]["feature_accuracy"] > 0.45  # three classes: chance is 1/3
    for record in trained.history[8:]:
        assert all(math.isfinite(record[k]) for k in ("content", "style", "energy"))
    out = trained.translate(sim)
    with torch.no_grad():
        target = trained.style_targets(codec.encode(real))
        before, after, floor = (trained.style_loss(codec.encode(x), target).item() for x in (sim, out, held_out))
    assert floor < before / 10  # the trained loss network's style separates the domains ...
    assert after < 0.5 * before  # ... and the transform network moves sim toward real
    assert torch.all(out >= 0) and torch.all((out == 0) | (out >= 1.0))
    log_ratio = (out.sum(1) / sim.sum(1)).log()
    assert log_ratio.abs().mean() < trained.energy_tolerance
    assert not torch.allclose(out, sim * (sim >= 1.0), atol=1.0)


def test_loss_network_is_trained_then_frozen(run, domains):
    model, folder = run
    initial = _reset(StyleTransfer("calogan", **TINY, feature_epochs=2), 3).feature_network.state_dict()
    files = sorted(folder.iterdir())
    assert [p.name for p in files] == ["001_train_e1.pt", "002_train_e2.pt"]
    states = [translate.load(p).state_dict() for p in files]
    feature_keys = [k for k in states[0] if k.startswith("feature_network.")]
    transform_keys = [k for k in states[0] if k.startswith("transform_network.") and "energy_" not in k]
    assert feature_keys and transform_keys
    assert any(not torch.equal(states[0][k], initial[k.removeprefix("feature_network.")]) for k in feature_keys)
    for k in feature_keys:
        assert torch.equal(states[0][k], states[1][k]) and torch.equal(states[1][k], model.state_dict()[k]), k
    assert any(not torch.equal(states[0][k], states[1][k]) for k in transform_keys)
    assert not any(p.requires_grad for p in model.feature_network.parameters())
    model.train()
    assert model.transform_network.training and not model.feature_network.training
    model.eval()


def test_loss_network_stays_in_eval_mode_without_gradients_during_training(domains, monkeypatch):
    sim, labels, real, _ = domains
    seen = []
    original = StyleTransfer.train_step

    def spy(self, *args):
        seen.append((self.feature_network.training, any(p.requires_grad for p in self.feature_network.parameters()),
                     self.transform_network.training))
        return original(self, *args)

    monkeypatch.setattr(StyleTransfer, "train_step", spy)
    StyleTransfer("calogan", **TINY, feature_epochs=1).fit(sim[:64], real[:64], sim_labels=labels[:64], epochs=2,
                                                           batch_size=32)
    assert seen == [(False, False, True)] * 4


def test_resume_repeats_an_uninterrupted_run(run, domains, tmp_path):
    model, folder = run
    sim, labels, real, _ = domains
    (tmp_path / "b").mkdir()
    shutil.copy(folder / "001_train_e1.pt", tmp_path / "b")
    kwargs = dict(epochs=2, batch_size=64, seed=3, checkpoint_dir=tmp_path / "b", resume=True)
    resumed = StyleTransfer("calogan", **TINY, feature_epochs=2).fit(sim, real, sim_labels=labels, **kwargs)
    for key, value in model.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(model.history) and len(model.history) == 2 + 2
    again = StyleTransfer("calogan", **TINY, feature_epochs=2).fit(sim, real, sim_labels=labels, epochs=2,
                                                                   batch_size=64, seed=3)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    other = StyleTransfer("calogan", **TINY, feature_epochs=2).fit(sim, real, sim_labels=labels, epochs=2,
                                                                   batch_size=64, seed=4)
    assert not torch.equal(other.feature_network.head.weight, model.feature_network.head.weight)
    (tmp_path / "c").mkdir()
    shutil.copy(folder / "001_train_e1.pt", tmp_path / "c")
    with pytest.raises(ValueError, match="other sim_labels"):
        StyleTransfer("calogan", **TINY, feature_epochs=2).fit(
            sim, real, sim_labels=labels.roll(1), **{**kwargs, "checkpoint_dir": tmp_path / "c"})


@pytest.mark.parametrize("labels, message", [
    (None, "needs sim_labels"),
    ("int32", r"sim_labels must be a \(64,\) int64 tensor.*got torch.int32 \(64,\)"),
    ("short", r"sim_labels must be .*got torch.int64 \(63,\)"),
    ("range", r"sim_labels must be .*class indices in \[0, 3\)"),
    ("list", r"sim_labels must be .*got list"),
])
def test_missing_or_wrong_sim_labels_raise_one_line(domains, labels, message):
    sim, good, real, _ = domains
    given = {None: None, "int32": good[:64].int(), "short": good[:63], "range": good[:64] + 3,
             "list": good[:64].tolist()}[labels]
    model = StyleTransfer("calogan", **TINY)
    with pytest.raises(ValueError, match=message) as error:
        model.fit(sim[:64], real[:64], sim_labels=given, epochs=1)
    assert "\n" not in str(error.value) and "sim_labels" in str(error.value)
    with pytest.raises(ValueError, match="needs sim_labels"):
        model.fit(sim[:64], real[:64], epochs=1)
    with pytest.raises(RuntimeError, match="sim_labels"):
        model.start_fit(epochs=1)


# ---- files -----------------------------------------------------------------------------------------
def test_save_load_round_trip_and_method_check(tmp_path, trained, domains):
    sim = domains[0]
    path = trained.save(tmp_path / "style.pt")
    assert translate.REGISTRY["style"] is StyleTransfer
    loaded = translate.load(path, method="style", geometry="calogan")
    assert type(loaded) is StyleTransfer and loaded.source == path and not loaded.training
    assert loaded.hparams == trained.hparams and loaded.history == trained.history
    assert loaded.style_weight == 1e6 and loaded.feature_epochs == 8
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not any(p.requires_grad for p in loaded.feature_network.parameters())
    out = loaded.translate(sim)
    assert torch.equal(out, trained.translate(sim)) and not torch.equal(out, sim)
    with pytest.raises(translate.TranslatorFileError, match="holds a 'style' translator, expected 'cyclegan'") as error:
        translate.load(path, method="cyclegan")
    assert "\n" not in str(error.value)


def test_constructor_checks_its_options():
    for kwargs, message in [
        ({"content_weight": -1.0}, "content_weight"), ({"style_weight": float("nan")}, "style_weight"),
        ({"content_layers": ("conv3",)}, "content_layers"), ({"style_layers": ("conv1", "conv1")}, "style_layers"),
        ({"feature_epochs": -1}, "feature_epochs"), ({"feature_batch_size": 0}, "feature_batch_size"),
        ({"feature_lr": 0.0}, "feature_lr"), ({"n_classes": 1}, "n_classes"),
        ({"feature_channels": (4,)}, "feature_channels"), ({"lr": 0.0}, "lr"), ({"beta1": 1.0}, "beta1"),
        ({"decay_fraction": 2.0}, "decay_fraction"), ({"threshold_mev": (1.0, 2.0)}, "threshold_mev"),
        ({"channels": ()}, "channels"),
    ]:
        with pytest.raises(ValueError, match=message):
            StyleTransfer("calogan", **{**TINY, **kwargs})
