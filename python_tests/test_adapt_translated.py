"""The translation methods cyclegan and simgan: the classifier trains on translated simulation."""

import pytest
import torch

from sim2real_fast import simulate, translate
from sim2real_fast import geometry as s2r_geometry
from sim2real_fast.adapt import METHODS, AdaptConfig, Domain, fit, parse_method, register
from sim2real_fast.adapt import checkpoint as checkpoint_module
from sim2real_fast.adapt.methods import REGISTRY
from sim2real_fast.adapt.methods.translated import TranslatedSource
from sim2real_fast.translate import zero_suppression
from sim2real_fast.models import CaloCNN
from helpers import one_thread  # noqa: F401  (an autouse fixture)

CONFIG = AdaptConfig(epochs=2, batch_size=64, translate_epochs=1, translate_events=128)


@pytest.fixture(scope="module")
def data():
    sim = simulate.showers(300, seed=0, effects="nominal")
    real = simulate.showers(300, seed=1, effects="stress")
    return {"source": Domain(sim.images, sim.labels, name="sim"), "target": Domain(real.images, name="real")}


def _model():
    torch.manual_seed(0)
    return CaloCNN("calogan", n_classes=3, channels=(4, 8), hidden=16, n_features=8)


def _fit(method, data, config=CONFIG, **kwargs):
    return fit(method, _model(), config=config, **data, **kwargs)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


def _translator(name, data, seed=0, n=128):
    """The translator the method trains: n showers of each domain drawn with ``seed``, one epoch."""
    g = torch.Generator().manual_seed(seed)
    sim = data["source"].inputs[torch.randperm(300, generator=g)[:n]]
    real = data["target"].inputs[torch.randperm(300, generator=g)[:n]]
    threshold = zero_suppression(data["target"].inputs, s2r_geometry.get("calogan"))
    return translate.REGISTRY[name]("calogan", threshold_mev=threshold).fit(sim, real, epochs=1, seed=seed)


@pytest.fixture(scope="module")
def cyclegan(data):
    torch.set_num_threads(1)
    return _fit("cyclegan", data)


def test_names_order_and_what_they_see():
    assert {"cyclegan", "simgan", "style"} <= set(METHODS)
    assert parse_method("mmd+cyclegan") == ("cyclegan", "mmd")
    assert parse_method("dann+rescale_layers+simgan") == ("simgan", "rescale_layers", "dann")
    for name in ("cyclegan", "simgan", "style"):
        cls = REGISTRY[name]
        assert issubclass(cls, TranslatedSource) and cls.translator_name == name and not cls.standalone
        assert cls.sees == {"target"} and not cls.aligns and cls.summary


def test_cyclegan_trains_the_classifier_on_translated_sim(data, cyclegan):
    sim = data["source"].inputs
    translated = cyclegan.source_transform(sim)
    assert torch.equal(translated, _translator("cyclegan", data).translate(sim))
    assert translated.shape == sim.shape and translated.min() >= 0
    assert (translated - sim).abs().mean() > 0.1
    baseline = _fit("source_only", {"source": Domain(translated, data["source"].labels)})
    assert _same_weights(cyclegan.model, baseline.model)
    assert not _same_weights(cyclegan.model, _fit("source_only", {"source": data["source"]}).model)
    record = cyclegan.history[0]["translator"]
    assert record["epochs"] == 1 and {"cycle_sim", "critic_real", "energy"} <= record.keys()
    assert "translator" not in cyclegan.history[1]


def test_translations_keep_the_real_zero_suppression(data, cyclegan):
    geometry = s2r_geometry.get("calogan")
    thresholds = zero_suppression(data["target"].inputs, geometry)
    sigma = 2 * torch.tensor(simulate.PRESETS["stress"].noise_mev)  # zero suppression at 2 nominal sigma
    assert all(s <= t < 1.2 * s for s, t in zip(sigma.tolist(), thresholds))
    for layer, threshold in zip(geometry.split_layers(cyclegan.source_transform(data["source"].inputs)), thresholds):
        kept = layer[layer > 0]
        assert kept.numel() > 0 and kept.min() >= threshold
    empty = torch.zeros(4, geometry.n_cells)
    assert zero_suppression(empty, geometry, floor_mev=2.0) == [2.0, 2.0, 2.0]


def test_the_same_seed_gives_the_same_fit(data, cyclegan):
    again = _fit("cyclegan", data)
    assert _same_weights(again.model, cyclegan.model)
    assert _without_seconds(again.history) == _without_seconds(cyclegan.history)
    other = _fit("cyclegan", data, CONFIG.replace(seed=1, epochs=1))
    sim = data["source"].inputs[:50]
    assert not torch.equal(other.source_transform(sim), cyclegan.source_transform(sim))


def test_resume_retrains_the_translator_and_reports_it_once(data, cyclegan, tmp_path, monkeypatch):
    original = checkpoint_module.write_checkpoint

    def write_then_stop(path, payload):
        original(path, payload)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint_module, "write_checkpoint", write_then_stop)
        with pytest.raises(KeyboardInterrupt):
            _fit("cyclegan", data, checkpoint_dir=tmp_path)
    assert len(checkpoint_module.checkpoint_files(tmp_path)) == 1
    resumed = _fit("cyclegan", data, checkpoint_dir=tmp_path, resume=True)
    assert _same_weights(resumed.model, cyclegan.model)
    assert _without_seconds(resumed.history) == _without_seconds(cyclegan.history)


def test_simgan_combines_with_an_alignment(data):
    result = _fit("simgan+mmd", data, CONFIG.replace(epochs=1))
    sim = data["source"].inputs
    translated = result.source_transform(sim)
    assert torch.equal(translated, _translator("simgan", data).translate(sim))
    assert translated.min() >= 0 and (translated - sim).abs().mean() > 0.01
    assert result.history[0]["mmd"] > 0 and result.history[0]["translator"]["epochs"] == 1


def test_the_other_methods_see_the_translated_simulation(data):
    from sim2real_fast.adapt.methods.rescale_layers import layer_scales

    result = _fit("simgan+rescale_layers", data, CONFIG.replace(epochs=1))
    sim = data["source"].inputs
    translated = _translator("simgan", data).translate(sim)
    scales = layer_scales(translated, data["target"].inputs, s2r_geometry.get("calogan"))
    assert result.history[0]["layer_scales"] == [round(float(s), 6) for s in scales]
    untranslated = layer_scales(sim, data["target"].inputs, s2r_geometry.get("calogan"))
    assert not torch.allclose(scales, untranslated, rtol=1e-3)
    cells = torch.repeat_interleave(scales, torch.tensor([layer.n_cells for layer in s2r_geometry.get("calogan").layers]))
    torch.testing.assert_close(result.source_transform(sim), translated * cells.float())


def test_two_translations_do_not_combine(data):
    with pytest.raises(ValueError, match=r"simgan\+cyclegan.*combines with no other translation"):
        _fit("simgan+cyclegan", data)


def test_a_translator_that_needs_sim_labels_gets_those_of_its_showers(data):
    seen = {}

    class Labelled:
        name, needs_sim_labels, history = "test_labelled", True, [{"epoch": 1, "loss": 0.5}]

        def __init__(self, geometry, *, threshold_mev):
            self.geometry = geometry
            seen["threshold_mev"] = threshold_mev

        def fit(self, sim, real, *, epochs, seed, sim_labels):
            seen.update(sim=sim, real=real, labels=sim_labels, epochs=epochs, seed=seed)

        def translate(self, images):
            return images * 2

    @register
    class Method(TranslatedSource):
        name = translator_name = "test_labelled"

    translate.REGISTRY["test_labelled"] = Labelled
    try:
        result = _fit("test_labelled", data, CONFIG.replace(translate_events=100, translate_epochs=None, seed=3))
    finally:
        translate.REGISTRY.pop("test_labelled")
        REGISTRY.pop("test_labelled")
    g = torch.Generator().manual_seed(3)
    index = torch.randperm(300, generator=g)[:100]
    assert torch.equal(seen["sim"], data["source"].inputs[index])
    assert torch.equal(seen["labels"], data["source"].labels[index])
    assert torch.equal(seen["real"], data["target"].inputs[torch.randperm(300, generator=g)[:100]])
    assert seen["epochs"] is None and seen["seed"] == 3
    assert seen["threshold_mev"] == zero_suppression(data["target"].inputs, s2r_geometry.get("calogan"))
    assert torch.equal(result.source_transform(data["source"].inputs), data["source"].inputs * 2)
    assert result.history[0]["translator"] == {"epochs": 1, "loss": 0.5}


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"translate_epochs": 0}, r"^AdaptConfig.translate_epochs: expected None or an int >= 1, got 0$"),
        ({"translate_epochs": True}, "translate_epochs"),
        ({"translate_epochs": 2.0}, "translate_epochs"),
        ({"translate_events": 0}, r"^AdaptConfig.translate_events: expected an int >= 1, got 0$"),
    ],
)
def test_config_errors(values, match):
    with pytest.raises(ValueError, match=match):
        AdaptConfig.from_dict(values)


def test_config_round_trip():
    config = AdaptConfig(translate_epochs=3, translate_events=500)
    assert AdaptConfig.from_dict(config.to_dict()) == config
    assert AdaptConfig().translate_epochs is None and AdaptConfig().translate_events == 20_000
    assert config.digest() != AdaptConfig().digest() != AdaptConfig(translate_epochs=6).digest()


def test_style_trains_its_feature_network_on_the_labelled_simulation(data):
    result = _fit("style", data, CONFIG.replace(translate_events=96))
    sim = data["source"].inputs
    translated = result.source_transform(sim)
    assert translated.shape == sim.shape and translated.min() >= 0 and not torch.equal(translated, sim)
    feature_epochs = translate.StyleTransfer.__init__.__kwdefaults__["feature_epochs"]
    assert result.history[0]["translator"]["epochs"] == feature_epochs + 1  # feature epochs, then one transfer epoch
