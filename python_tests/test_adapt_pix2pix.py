"""The pix2pix method: its translator trains on paired showers (the same events through both detectors)."""

from __future__ import annotations

import pytest
import torch

from sim2real_fast import cli, io, simulate, translate, workflow
from sim2real_fast import geometry as s2r_geometry
from sim2real_fast.adapt import AdaptConfig, Domain, fit
from sim2real_fast.adapt.methods import REGISTRY
from sim2real_fast.adapt.methods.translated import TranslatedSource
from sim2real_fast.models import CaloCNN
from sim2real_fast.translate import zero_suppression
from sim2real_fast.workflow import RunConfig
from helpers import one_thread  # noqa: F401  (an autouse fixture)

CONFIG = AdaptConfig(epochs=1, batch_size=64, translate_epochs=1, translate_events=96)


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    sim = simulate.showers(200, seed=0, effects="nominal")
    real = simulate.showers(200, seed=1, effects="stress")
    pairs = simulate.paired_showers(150, real_effects="stress", seed=2)
    paired = (Domain(pairs.sim.images, pairs.sim.labels, name="pair_sim"), Domain(pairs.real.images, name="pair_real"))
    return {"source": Domain(sim.images, sim.labels, name="sim"), "target": Domain(real.images, name="real"),
            "paired": paired}


def _model():
    torch.manual_seed(0)
    return CaloCNN("calogan", n_classes=3, channels=(4, 8), hidden=16, n_features=8)


def test_pix2pix_is_a_translation_that_sees_pairs():
    cls = REGISTRY["pix2pix"]
    assert issubclass(cls, TranslatedSource) and cls.translator_name == "pix2pix"
    assert cls.sees == {"target", "paired"} and cls.summary


def test_the_translator_learns_from_the_pairs_row_by_row(data):
    fitted = fit("pix2pix", _model(), config=CONFIG, **data)
    sim_pairs, real_pairs = data["paired"]
    index = torch.randperm(150, generator=torch.Generator().manual_seed(0))[:96]  # one draw for both members
    threshold = zero_suppression(data["target"].inputs, s2r_geometry.get("calogan"))
    expected = translate.Pix2Pix("calogan", threshold_mev=threshold).fit(
        sim_pairs.inputs[index], real_pairs.inputs[index], epochs=1, seed=0)
    sim = data["source"].inputs
    translated = fitted.source_transform(sim)
    assert torch.equal(translated, expected.translate(sim))
    assert translated.min() >= 0 and not torch.equal(translated, sim)
    shuffled = (sim_pairs, Domain(real_pairs.inputs.flip(0), name="shuffled"))
    other = fit("pix2pix", _model(), config=CONFIG, **{**data, "paired": shuffled})
    assert not torch.equal(other.source_transform(sim[:20]), translated[:20])
    assert fitted.history[0]["translator"]["epochs"] == 1


def test_pairs_are_required_and_checked(data):
    without = {k: v for k, v in data.items() if k != "paired"}
    with pytest.raises(ValueError, match="needs paired"):
        fit("pix2pix", _model(), config=CONFIG, **without)
    sim_pairs, real_pairs = data["paired"]
    with pytest.raises(ValueError, match="same events, got 150 and 149"):
        fit("pix2pix", _model(), config=CONFIG, **{**data, "paired": (sim_pairs, real_pairs.subset(torch.arange(149)))})
    with pytest.raises(ValueError, match="combines with no other translation"):
        fit("cyclegan+pix2pix", _model(), config=CONFIG, **data)
    fit("source_only", _model(), config=CONFIG, source=data["source"], paired=("not", "checked"))


def test_a_simulated_run_makes_its_pairs_from_the_real_detector(tmp_path):
    config = RunConfig.from_dict({"events": 100, "real_events": 100, "methods": ["pix2pix"], "preset": "stress",
                                  "detector_seeds": [1], "out": str(tmp_path / "run"),
                                  "adapt": {"translate_events": 60}})
    data = workflow.load_data(config, detector_seed=1, progress=False)
    sim, real = data.paired
    assert len(sim) == len(real) == 60
    expected = simulate.paired_showers(60, sim_effects="nominal", real_effects=simulate.real_effects("stress", 1),
                                       seed=3 + 1000)
    torch.testing.assert_close(sim.inputs, expected.sim.images)
    torch.testing.assert_close(real.inputs, expected.real.images)
    assert torch.equal(sim.labels, real.labels)
    assert (tmp_path / "run" / "data" / "pairs-stress-d1" / "trainB" / "pairs.root").exists()
    assert workflow.load_data(config.replace(methods=("source_only",)), progress=False).paired is None


def test_files_need_a_pairs_folder(tmp_path, capsys):
    sim = simulate.showers(60, seed=1, effects="nominal")
    real = simulate.showers(60, seed=2, effects="stress")
    io.write_showers_root(tmp_path / "sim.root", sim.images, sim.labels, sim.energy)
    io.write_showers_root(tmp_path / "real.root", real.images, real.labels, real.energy)
    config = RunConfig(sim=str(tmp_path / "sim.root"), real=str(tmp_path / "real.root"), methods=("pix2pix",),
                       out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="give --pairs DIR"):
        workflow.load_data(config, progress=False)
    with pytest.raises(FileNotFoundError, match="pairs folder not found: .*nowhere"):
        workflow.load_data(config.replace(pairs=str(tmp_path / "nowhere")), progress=False)
    with pytest.raises(ValueError, match="pairs goes with sim and real files"):
        RunConfig(pairs=str(tmp_path))
    pairs = simulate.paired_showers(40, real_effects="stress", seed=5)
    translate.write_layout(tmp_path / "pairs", pairs.sim, pairs.real, geometry="calogan")
    sim_pairs, real_pairs = workflow.load_data(config.replace(pairs=str(tmp_path / "pairs")), progress=False).paired
    torch.testing.assert_close(real_pairs.inputs, pairs.real.images)
    arguments = ["adapt", "--sim", str(tmp_path / "sim.root"), "--real", str(tmp_path / "real.root"), "--method",
                 "pix2pix", "--out", str(tmp_path / "adapt"), "--epochs", "1"]
    with pytest.raises(SystemExit):
        cli.main(arguments)
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("sim2real adapt: error: ") and "--pairs DIR" in error
