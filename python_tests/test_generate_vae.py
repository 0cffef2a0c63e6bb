"""sim2real_fast.generate: ShowerVAE's likelihood, KL schedule, conditioning and sampling, the generator
base class' validation split, early stopping and input checks (what FlowVAE shares: test_generate_common.py)."""

import functools
import math
import time

import pytest
import torch

from sim2real_fast import generate
from sim2real_fast.generate import ShowerVAE
from generate_fixtures import OPTIONS, data, fit_small, fitted_fixture  # noqa: F401  (data: a fixture)
from helpers import one_thread  # noqa: F401  (an autouse fixture)

SMALL = OPTIONS[ShowerVAE]
_fit = functools.partial(fit_small, ShowerVAE)
fitted = fitted_fixture(ShowerVAE)


# ---- likelihood, schedule, preprocessing -----------------------------------------------------------
def test_zero_inflated_nll_matches_a_hand_computation():
    hit = torch.tensor([[True, False, True]])
    y = torch.tensor([[0.3, 0.0, -0.2]])
    logits = torch.tensor([[0.5, -1.0, 2.0]])
    mu = torch.tensor([[0.1, 0.0, 0.4]])
    sigma = torch.tensor([[0.8, 1.0, 0.5]])
    lower = torch.tensor([[-1.0, 0.0, -0.5]])

    def phi(x):  # standard normal CDF
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    def log_sigmoid(x):
        return -math.log1p(math.exp(-x))

    expected = 0.0
    for i in range(3):
        l, m, s, y_i, a = (float(t[0, i]) for t in (logits, mu, sigma, y, lower))
        if hit[0, i]:
            density = math.exp(-0.5 * ((y_i - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) / phi((m - a) / s)
            expected -= log_sigmoid(l) + math.log(density)
        else:
            expected -= math.log1p(-1 / (1 + math.exp(-l)))
    got = generate.zero_inflated_nll(hit, y, logits, mu, sigma, lower)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_expected_energy_matches_the_truncated_log_normal_mean():
    g = torch.Generator().manual_seed(0)
    mu, sigma, lower = torch.tensor([0.2, -1.0]), torch.tensor([0.7, 0.9]), torch.tensor([-0.3, -0.5])
    mean, std, log_incident = torch.tensor([-4.0, -6.0]), torch.tensor([1.5, 0.5]), math.log(5e4)
    logits = torch.zeros(2)
    got = generate.log_expected_energy(logits.double(), mu.double(), sigma.double(), lower.double(),
                                       mean.double(), std.double(), log_incident)
    for i in range(2):
        draws = mu[i] + sigma[i] * torch.randn(4_000_000, generator=g, dtype=torch.float64)
        draws = draws[draws >= lower[i]]  # truncation by rejection
        monte_carlo = 0.5 * torch.exp(log_incident + mean[i] + std[i] * draws).mean()  # p = sigmoid(0)
        assert got[i].exp().item() == pytest.approx(monte_carlo.item(), rel=5e-3)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean, logvar, prior_mean, prior_logvar = torch.randn(4, 3, 5, generator=g, dtype=torch.float64).unbind(0)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(prior_mean, (0.5 * prior_logvar).exp())
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    torch.testing.assert_close(generate.gaussian_kl(mean, logvar, prior_mean, prior_logvar), expected)
    assert torch.all(generate.gaussian_kl(mean, logvar, mean, logvar) == 0)


def test_mixture_log_density_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    z, means, logvar = torch.randn(5, 3, generator=g), *torch.randn(2, 5, 4, 3, generator=g)
    log_weights = torch.log_softmax(torch.randn(5, 4, generator=g), 1)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=log_weights),
        torch.distributions.Independent(torch.distributions.Normal(means, (0.5 * logvar).exp()), 1))
    torch.testing.assert_close(generate.mixture_log_density(z, log_weights, means, logvar), mixture.log_prob(z))


def test_kl_estimate_of_a_mixture_prior_is_unbiased(data):
    """Two identical components are one normal: the one-sample estimate ln q - ln p averages to the closed form."""
    model = _fit(data, epochs=1)
    with torch.no_grad():
        bias = model.prior[-1].bias.view(-1)[8:].view(8, 2, 8)
        bias[:] = bias[0]
    one = data.images[:1].repeat(20_000, 1), data.labels[:1].repeat(20_000), data.energy[:1].repeat(20_000).float()
    with torch.no_grad():
        estimate = model.losses(*one, progress=None, generator=torch.Generator().manual_seed(0))["kl"]
        c = model.condition(one[1][:1], one[2][:1])
        x = (torch.log1p(one[0][:1]) - model.input_mean) / model.input_std
        z_mean, z_logvar = model.encoder(torch.cat([x, c], 1)).chunk(2, 1)
        _, prior_mean, prior_logvar = model.prior_parameters(c)
        exact = generate.gaussian_kl(z_mean, z_logvar.clamp(-12.0, 8.0), prior_mean[:, 0], prior_logvar[:, 0])
    assert estimate.item() == pytest.approx(exact.item(), abs=0.02 + 0.01 * exact.item())
    single = ShowerVAE("calogan", **SMALL, prior_components=1)
    single.fit(data.images[:300], data.labels[:300], data.energy[:300], epochs=1)
    assert single.prior[-1].out_features == 1 + 2 * 8 and single.sample(20, seed=0).images.shape == (20, 504)


def test_kl_beta_ramps_linearly_then_holds():
    values = [generate.kl_beta(p, beta=0.5, warmup=4) for p in (0, 1, 2, 3.5, 4, 10)]
    assert values == pytest.approx([0.0, 0.125, 0.25, 0.4375, 0.5, 0.5])
    assert generate.kl_beta(0, beta=0.5, warmup=0) == 0.5


def test_history_records_the_annealed_beta_and_decaying_lr(data):
    model = _fit(data, n=200, epochs=2, batch_size=50)  # 180 training showers: 4 steps an epoch
    assert model.hparams["kl_warmup"] == 5.0
    assert [record["lr"] for record in model.history] == pytest.approx([1e-3, 0.95e-3])
    first, second = (record["beta"] for record in model.history)
    # steps at progress 0, 0.25, 0.5, 0.75 (and 1.x); the last batch has 30 showers, the others 50
    expected = [sum(w * (e + s / 4) / 5 for w, s in zip((50, 50, 50, 30), range(4))) / 180 for e in (0, 1)]
    assert (first, second) == pytest.approx(expected, rel=1e-5)


def test_prepare_sets_floors_and_statistics_from_the_training_split(data):
    model = ShowerVAE("calogan", **SMALL, threshold_mev=(1.0, 100.0, 1.0))
    images, labels, energy = data.images[:500], data.labels[:500], data.energy[:500]
    model.trained_energy.copy_(torch.tensor([1.0, 100.0]))  # as fit does before prepare
    model.prepare(images, labels, energy)
    floors = [float(model.floor[start]) for start in model.geometry.layer_offsets[:-1]]
    smallest = [float(part[part > 0].min()) for part in model.geometry.split_layers(images)]
    assert floors == pytest.approx([smallest[0], 100.0, smallest[2]])  # the larger of threshold and smallest hit
    cell = 366  # layer_1's cell at row 6, col 6, next to the beam axis
    hits = images[:, cell] >= 100.0
    fractions = torch.log(images[hits, cell] / (1000 * energy[hits].float()))
    assert model.fraction_mean[cell].item() == pytest.approx(fractions.mean().item(), rel=1e-4)
    assert model.fraction_std[cell].item() == pytest.approx(fractions.std().item(), rel=1e-4)
    n = model.geometry.n_cells
    rate = (images[:, cell] >= 100.0).float().mean()
    assert torch.sigmoid(model.decoder[-1].bias[cell]).item() == pytest.approx(rate.item(), rel=1e-4)
    assert model.decoder[-1].bias[n + cell].item() == 0.0
    c = model.condition(torch.tensor([0, 2]), torch.tensor([3.0, 70.0]))
    log_weights, means, logvar = model.prior_parameters(c)
    assert log_weights.shape == (2, 8) and means.shape == logvar.shape == (2, 8, 8)
    torch.testing.assert_close(log_weights, torch.full((2, 8), -math.log(8)))  # equal weights, unit variances,
    assert torch.all(logvar == 0) and torch.equal(means[0], means[1])  # the same for every condition
    assert 0.3 < means.std().item() < 0.7 and len(set(means[0, :, 0].tolist())) == 8  # distinct means
    totals = torch.log(torch.where(images >= model.floor, images, 0).sum(1) / (1000 * energy))
    top_bin = energy >= 10 ** (14 / 8)  # the last of 8 bins of log energy over 1-100 GeV: 56-100 GeV
    for p in range(3):  # per particle and energy bin
        selected = totals[(labels == p) & top_bin]
        assert model.total_table[p, 7].tolist() == pytest.approx([selected.mean().item(), selected.std().item()],
                                                                  rel=1e-4)
    mean, std = model.total_moments(torch.tensor([1, 1, 1, 1]), torch.tensor([0.625, 0.875, 1.0, 0.75]))
    table = model.total_table[1]
    torch.testing.assert_close(mean[:3], table[[6, 7, 7], 0])  # at the centres of bins 6 and 7, and beyond
    torch.testing.assert_close(mean[3], table[6:, 0].mean())  # half way
    torch.testing.assert_close(std[3], table[6:, 1].mean())
    above = energy > 10.0  # no shower in the first 4 bins: they take their particle's moments
    model.prepare(images[above], labels[above], energy[above])
    electrons = totals[above & (labels == 0)]
    assert model.total_table[0, 0].tolist() == pytest.approx([electrons.mean().item(), electrons.std().item()],
                                                              rel=1e-4)


def test_condition_scales_log_energy_over_the_trained_range_and_one_hots_the_particle(fitted):
    c = fitted.condition(torch.tensor([0, 2, 1]), torch.tensor([1.0, 100.0, 10.0]))
    expected = torch.tensor([[-1.0, 1, 0, 0], [1.0, 0, 0, 1], [0.0, 0, 1, 0]])
    torch.testing.assert_close(c, expected, atol=1e-6, rtol=0)


# ---- sampling ---------------------------------------------------------------------------------------
def test_samples_are_physical_showers(fitted):
    images, labels, energy = fitted.sample(600, energy=(10.0, 50.0), particle="gamma", seed=3, batch_size=256)
    assert images.shape == (600, 504) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and torch.all(labels == 1)
    assert energy.dtype == torch.float64 and energy.min() >= 10.0 and energy.max() <= 50.0
    assert torch.isfinite(images).all() and (images >= 0).all()
    lit = images > 0
    assert torch.all(images[lit] >= fitted.threshold.expand_as(images)[lit])
    assert torch.all(images[lit] >= fitted.floor.expand_as(images)[lit])  # hits keep their floor when scaled
    padded = fitted.geometry.to_padded(images)
    assert torch.all(padded[:, ~fitted.geometry.padding_mask()] == 0)
    assert lit.float().mean() > 0.02  # not empty
    assert 0.7 < (images.sum(1) / (1000 * energy)).median() < 1.3  # photons deposit about E_inc
    again = fitted.sample(600, energy=(10.0, 50.0), particle="gamma", seed=3, batch_size=256)
    other = fitted.sample(600, energy=(10.0, 50.0), particle="gamma", seed=4, batch_size=256)
    assert torch.equal(again.images, images) and not torch.equal(other.images, images)
    assert fitted.sample(0).images.shape == (0, 504)


def test_threshold_zeroes_cells_below_it(data):
    model = ShowerVAE("calogan", **SMALL, threshold_mev=(1.0, 150.0, 1.0))
    model.fit(data.images[:300], data.labels[:300], data.energy[:300], energy_range=(1.0, 100.0), epochs=1)
    layer_1 = model.geometry.split_layers(model.sample(500, seed=0).images)[1]
    assert (layer_1 > 0).any() and torch.all((layer_1 == 0) | (layer_1 >= 150.0))


def test_sparsity_follows_the_hit_probabilities(data):
    """With the decoder's weights zeroed the outputs are the training split's marginals: each cell is hit
    at its training rate, so every layer's generated occupancy matches the data's."""
    model = ShowerVAE("calogan", **SMALL).fit(data.images, data.labels, data.energy, energy_range=(1.0, 100.0),
                                              epochs=1)
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        n = model.geometry.n_cells
        model.decoder[-1].bias[:n] = torch.logit((data.images >= model.floor).float().mean(0).clamp(1e-4, 1 - 1e-4))
    images = model.sample(4000, seed=0).images
    for generated, simulated in zip(model.geometry.split_layers(images), model.geometry.split_layers(data.images)):
        occupancy = (generated > 0).float().mean().item()
        assert occupancy == pytest.approx((simulated > 0).float().mean().item(), abs=0.003)


def test_sampled_totals_follow_the_total_head(data):
    """The hits are scaled so that a shower's total is E_inc exp(M_p(E) + S_p(E) t), t ~ N(mu_t, sigma_t): with the
    head's weights zeroed, mu_t = 0.1 and sigma_t at its 1e-3 minimum, every total is E_inc exp(M + 0.1 S)."""
    model = _fit(data, epochs=1)
    with torch.no_grad():
        head = model.decoder[-1]
        head.weight[-2:] = 0.0
        head.bias[-2:] = torch.tensor([0.1, -40.0])
    labels = torch.tensor([0, 1] * 250)  # e+ and gamma at 20-50 GeV: no scaled hit falls below 1 MeV
    images, labels, energy = model.sample(500, energy=(20.0, 50.0), particle=labels, seed=0)
    mean, std = model.total_moments(labels, model.condition(labels, energy.float())[:, 0])
    mean, std = mean.double(), std.double()
    expected = 1000 * energy * torch.exp(mean + 0.1 * std)
    torch.testing.assert_close(images.double().sum(1), expected, rtol=5e-3 * std.max().item(), atol=0)


def test_conditioning_on_energy_and_particle(fitted):
    def response(particle, energy):
        images, _, incident = fitted.sample(1000, particle=particle, energy=energy, seed=5)
        return images.sum(1) / (1000 * incident)

    high, low = (fitted.sample(1000, energy=e, particle="e+", seed=6) for e in ((80.0, 100.0), (1.0, 10.0)))
    assert high.images.sum(1).mean() > 5 * low.images.sum(1).mean()
    electron, pion = response("e+", (20.0, 60.0)), response("pi+", (20.0, 60.0))
    assert electron.mean() > pion.mean() + 0.2  # simulator: about 1.0 and 0.35
    labels = torch.tensor([0, 2] * 50)
    images, got, _ = fitted.sample(100, particle=labels, energy=torch.full((100,), 30.0, dtype=torch.float64))
    assert torch.equal(got, labels)


def test_sampling_rate_is_measured(fitted, record_property):
    start = time.perf_counter()
    images = fitted.sample(20_000, seed=0).images
    record_property("showers_per_second_1_thread", 20_000 / (time.perf_counter() - start))
    assert images.shape == (20_000, 504)


# ---- fit: split, early stopping ----------------------------------------------------------------------
def test_validation_split_is_disjoint_and_fixed_by_seed(data, monkeypatch):
    train, validation = generate.validation_split(100, fraction=0.2, seed=3)
    assert len(train) == 80 and len(validation) == 20
    assert torch.equal(torch.cat([train, validation]).sort().values, torch.arange(100))
    again = generate.validation_split(100, fraction=0.2, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], validation)
    assert not torch.equal(generate.validation_split(100, fraction=0.2, seed=4)[1], validation)
    with pytest.raises(ValueError, match="validation_fraction"):
        generate.validation_split(100, fraction=1.0, seed=0)

    seen = {"train": [], "validation": []}
    original = ShowerVAE.losses

    def spy(self, images, labels, energy, *, progress, generator):
        seen["validation" if progress is None else "train"].append(energy)
        return original(self, images, labels, energy, progress=progress, generator=generator)

    monkeypatch.setattr(ShowerVAE, "losses", spy)
    _fit(data, n=200, epochs=2, seed=7, validation_fraction=0.25)
    train, validation = generate.validation_split(200, fraction=0.25, seed=7)
    energy = data.energy[:200].float()
    trained_on = torch.cat(seen["train"])
    assert len(trained_on) == 2 * 150
    assert torch.equal(trained_on.sort().values, energy[train].repeat(2).sort().values)
    assert torch.equal(torch.cat(seen["validation"]).sort().values, energy[validation].repeat(2).sort().values)


def test_early_stopping_keeps_the_best_validation_epoch(data, monkeypatch):
    scores = iter([3.0, 1.0, 2.0, 4.0, 5.0, 6.0])
    monkeypatch.setattr(generate.Generator, "validation_loss", lambda self, *args, **kwargs: next(scores))
    stopped = _fit(data, epochs=6, patience=2)
    assert [r["epoch"] for r in stopped.history] == [1, 2, 3, 4]  # epochs 3 and 4 without improvement
    assert [r["best_epoch"] for r in stopped.history] == [1, 2, 2, 2] and stopped.best_epoch == 2
    scores = iter([2.0, 1.0])
    two = _fit(data, epochs=2, patience=2)
    assert two.best_epoch == 2
    for key, value in two.state_dict().items():
        assert torch.equal(stopped.state_dict()[key], value), key
    scores = iter([2.0, 1.0, 0.5])
    three = _fit(data, epochs=3, patience=2)  # validation loss 0.5 at epoch 3: its weights, not epoch 2's
    assert three.best_epoch == 3 and not torch.equal(three.decoder[0].weight, two.decoder[0].weight)


def test_fit_checks_its_inputs(data):
    model = ShowerVAE("calogan", **SMALL)
    images, labels, energy = data.images[:20], data.labels[:20], data.energy[:20]
    with pytest.raises(ValueError, match=r"^images: expected floating \(N, 504\)"):
        model.fit(images[:, :368], labels, energy)
    with pytest.raises(ValueError, match=r"^labels: expected values in \[0, 3\)"):
        model.fit(images, labels + 1, energy)
    with pytest.raises(ValueError, match="^energy: expected finite"):
        model.fit(images, labels, -energy)
    with pytest.raises(ValueError, match="^energy_range: the showers' energies"):
        model.fit(images, labels, energy, energy_range=(10.0, 20.0))
    with pytest.raises(ValueError, match="^patience: expected an int >= 1"):
        model.fit(images, labels, energy, patience=0)
    bad = ((dict(latent=0), "latent"), (dict(beta=-1.0), "beta"), (dict(hidden=()), "hidden"),
           (dict(threshold_mev=(1.0, 2.0)), "threshold_mev"), (dict(particles=("e+", "e+")), "particles"))
    for kwargs, name in bad:
        with pytest.raises(ValueError, match=name):
            ShowerVAE("calogan", **{**SMALL, **kwargs})
