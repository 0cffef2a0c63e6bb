"""sim2real_fast.generate: what every cell generator (ShowerVAE, FlowVAE) shares: one-line sampling errors, the
validation loss, resume after a kill, save/load and the load errors, fitting and sampling CaloChallenge ds1."""

import functools
import math

import pytest
import torch

from sim2real_fast import generate, geometry, simulate
from sim2real_fast.generate import FlowVAE, ShowerVAE
from generate_fixtures import OPTIONS, data, fit_small, fitted_model, one_line  # noqa: F401  (data: a fixture)
from helpers import one_thread  # noqa: F401  (an autouse fixture)

TERMS = {ShowerVAE: ("nll", "total_nll", "kl"), FlowVAE: ("flow_nll", "nll", "kl")}  # besides energy_weight * energy


@pytest.fixture(scope="module", params=[pytest.param(ShowerVAE, id="vae"), pytest.param(FlowVAE, id="flow-vae")])
def model_class(request):
    return request.param


@pytest.fixture(scope="module")
def fitted(model_class):
    return fitted_model(model_class)


# ---- sampling --------------------------------------------------------------------------------------
def _errors_start_with(cases):
    """Each (call, start): ``call()`` raises a one-line ValueError that starts with ``start``."""
    for call, start in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert one_line(error).startswith(start), start


def test_sample_errors_name_the_argument(model_class, data, fitted):
    trained = f"trained range 1-100 GeV of this {model_class.name}"
    for energy in ((0.5, 10.0), (50.0, 120.0), torch.tensor([10.0, 200.0], dtype=torch.float64)):
        n = 2 if isinstance(energy, torch.Tensor) else 5
        with pytest.raises(ValueError) as error:
            fitted.sample(n, energy=energy)
        assert one_line(error).startswith("energy:") and trained in str(error.value)
    _errors_start_with([(lambda: fitted.sample(5, particle="mu-"), "particle: unknown 'mu-'"),
                        (lambda: fitted.sample(2, particle=torch.tensor([0, 3])), "particle: label 3"),
                        (lambda: fitted.sample(-1), "n: expected an int >= 0")])
    with pytest.raises(ValueError, match="not trained"):
        model_class("calogan", **OPTIONS[model_class]).sample(5)
    leptons = data.labels < 2
    images, labels, energy = data.images[leptons][:200], data.labels[leptons][:200], data.energy[leptons][:200]
    no_pions = model_class("calogan", **OPTIONS[model_class]).fit(images, labels, energy, epochs=1)
    assert no_pions.trained == ("e+", "gamma")
    _errors_start_with([(lambda: no_pions.sample(5, particle="pi+"), "particle: 'pi+' was not in the training showers"),
                        (lambda: no_pions.sample(2, particle=torch.tensor([0, 2])),
                         "particle: label 2 is not a trained particle")])
    assert set(no_pions.sample(50).labels.tolist()) == {0, 1}  # the trained particles only
    assert no_pions.energy_range == pytest.approx((float(energy.min()), float(energy.max())))  # None: the data's


# ---- fit: objective, resume ------------------------------------------------------------------------
def test_validation_loss_is_the_objective_at_full_beta(model_class, fitted, data):
    index = torch.arange(200)
    first = fitted.validation_loss((data.images, data.labels, data.energy), index, seed=0, batch_size=64)
    again = fitted.validation_loss((data.images, data.labels, data.energy), index, seed=0, batch_size=64)
    assert first == again and math.isfinite(first)
    torch.manual_seed(0)
    losses = fitted.losses(data.images[:200], data.labels[:200], data.energy[:200].float(), progress=None,
                           generator=torch.Generator().manual_seed(0))
    assert losses["beta"].item() == fitted.beta
    parts = sum(losses[term] for term in TERMS[model_class]) + fitted.energy_weight * losses["energy"]
    assert losses["loss"].item() == pytest.approx(parts.item(), rel=1e-5)


def test_resume_after_a_kill_repeats_an_uninterrupted_run(model_class, tmp_path, data, monkeypatch):
    fit = functools.partial(fit_small, model_class, data)
    straight = fit(checkpoint_dir=tmp_path / "a")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["003_train_e3.pt"]  # only the latest is kept

    original = generate.Generator._checkpoint

    def killed(self, folder, run, epoch, *args):
        original(self, folder, run, epoch, *args)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(generate.Generator, "_checkpoint", killed)
    torch.manual_seed(123)  # another global state: fit seeds every draw itself
    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint_dir=tmp_path / "b")
    monkeypatch.setattr(generate.Generator, "_checkpoint", original)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["001_train_e1.pt"]
    resumed = fit(checkpoint_dir=tmp_path / "b", resume=True)
    if model_class is FlowVAE:
        assert any(key.startswith("flow.") for key in straight.state_dict())
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history) and len(straight.history) == 3
    assert resumed.best_epoch == straight.best_epoch
    finished = fit(checkpoint_dir=tmp_path / "a", resume=True)
    assert torch.equal(finished.sample(50).images, straight.sample(50).images)
    from_checkpoint = generate.load(tmp_path / "a" / "003_train_e3.pt")
    assert isinstance(from_checkpoint, model_class)
    assert torch.equal(from_checkpoint.sample(50).images, straight.sample(50).images)
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(checkpoint_dir=tmp_path / "a")
    with pytest.raises(ValueError, match="another run"):
        fit(checkpoint_dir=tmp_path / "a", resume=True, seed=2)
    with pytest.raises(ValueError, match="^resume: "):
        fit(resume=True)


# ---- files -----------------------------------------------------------------------------------------
def test_save_load_round_trip_gives_identical_samples(model_class, tmp_path, fitted):
    path = fitted.save(tmp_path / "generator.pt")
    loaded = generate.load(path, method=model_class.name, geometry="calogan")
    assert isinstance(loaded, model_class) and not loaded.training and loaded.source == path
    assert loaded.hparams == fitted.hparams and loaded.history == fitted.history
    assert loaded.best_epoch == fitted.best_epoch and loaded.energy_range == (1.0, 100.0)
    a, b = fitted.sample(300, seed=9), loaded.sample(300, seed=9)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.energy, b.energy)
    with pytest.raises(ValueError) as error:
        loaded.sample(3, energy=(0.1, 1.0))
    assert f"(file {path})" in one_line(error)


def test_load_errors_name_the_file_and_the_methods(model_class, tmp_path, fitted):
    path = fitted.save(tmp_path / "generator.pt")
    with pytest.raises(generate.GeneratorFileError) as error:
        generate.load(path, geometry="calochallenge-ds1-photons")
    assert one_line(error).startswith(f"{path}: a generator for geometry 'calogan'")
    for method in {"vae", "flow-vae", "flow"} - {model_class.name}:
        with pytest.raises(generate.GeneratorFileError) as error:
            generate.load(path, method=method)
        assert one_line(error).startswith(f"{path}: holds a '{model_class.name}' generator, expected '{method}'")


def test_load_rejects_files_that_are_not_generators(tmp_path):
    foreign, text = tmp_path / "foreign.pt", tmp_path / "notes.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    text.write_text("not a model\nsecond line\n")
    for file in (foreign, text):
        with pytest.raises(generate.GeneratorFileError) as error:
            generate.load(file)
        assert one_line(error).startswith(f"{file}: not a generator file")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        generate.load(tmp_path / "missing.pt")


# ---- other geometries --------------------------------------------------------------------------------
@pytest.mark.parametrize("name, particle, n_cells, n_layers", [("calochallenge-ds1-photons", "gamma", 368, 5),
                                                              ("calochallenge-ds1-pions", "pi+", 533, 7)])
def test_calochallenge_ds1_fit_and_sample(model_class, name, particle, n_cells, n_layers):
    data = simulate.showers(400, geometry=name, effects="nominal", seed=0,
                            particles=particle, energy_range=(1.0, 100.0))
    model = model_class(name, **OPTIONS[model_class], particles=(particle,))
    model.fit(data.images, data.labels * 0, data.energy, epochs=2)
    images, labels, energy = model.sample(300, seed=0)
    geom = geometry.get(name)
    assert images.shape == (300, n_cells) and geom.n_cells == n_cells and geom.n_layers == n_layers
    assert bool((images >= 0).all()) and torch.all(labels == 0) and model.trained == (particle,)
    assert [tuple(part.shape[1:]) for part in geom.split_layers(images)] == list(geom.layer_shapes)
    if model_class is FlowVAE:
        assert model.layer_mean.shape == (n_layers,)
    assert torch.all(geom.to_padded(images)[:, ~geom.padding_mask()] == 0)
    assert (images > 0).any(1).float().mean() > 0.9
