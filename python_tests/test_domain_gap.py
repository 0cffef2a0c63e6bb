"""CaloCNN, domain_gap and `sim2real gap`: shapes, learning, the result's structure, JSON, bad arguments."""

import json

import pytest
import torch

from sim2real_fast import cli, simulate
from sim2real_fast.evaluate import TRAININGS, domain_gap, randomized_effects
from sim2real_fast.models import CaloCNN
from sim2real_fast.simulate import PRIOR

TINY = dict(events=240, test_events=150, epochs=1, presets=("realistic", "stress"))


@pytest.fixture(scope="module")
def showers():
    return simulate.showers(64, seed=5)


def test_calo_cnn_shapes_on_calogan_and_on_a_geometry_with_many_layers(showers):
    model = CaloCNN("calogan", n_classes=5, n_features=32)
    assert len(model.branches) == 3  # three layer shapes, one branch each
    assert model.features(showers.images).shape == (64, 32)
    assert model(showers.images).shape == (64, 5)
    ds1 = CaloCNN("calochallenge-ds1-photons")
    images = torch.rand(4, ds1.geometry.n_cells) * 100
    assert len(ds1.branches) < ds1.geometry.n_layers  # same-shape layers share a branch
    assert ds1(images).shape == (4, 3) and bool((ds1.features(images) >= 0).all())


def test_calo_cnn_refuses_bad_inputs(showers):
    with pytest.raises(ValueError, match=r"expected images \(N, 504\)"):
        CaloCNN()(showers.images[:, :100])
    with pytest.raises(ValueError, match="n_classes"):
        CaloCNN(n_classes=0)


def test_calo_cnn_overfits_a_tiny_batch(showers):
    torch.manual_seed(0)
    model = CaloCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = showers.images[:32], showers.labels[:32]
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert bool((model(x).argmax(1) == y).all())


def test_randomized_training_draws_from_the_prior():
    assert randomized_effects() is PRIOR and PRIOR.randomized


def test_domain_gap_returns_the_documented_structure_and_is_deterministic():
    result = domain_gap(seeds=(0, 1), **TINY)
    assert result["config"]["presets"] == ["realistic", "stress"] and result["config"]["seeds"] == [0, 1]
    assert result["config"]["sim_preset"] == "nominal"
    assert set(result["results"]) == set(TRAININGS)
    for entry in result["results"].values():
        assert [run["seed"] for run in entry["per_seed"]] == [0, 1]
        for run in entry["per_seed"]:
            assert 0 <= run["sim_accuracy"] <= 100 and set(run["real_accuracy"]) == {"realistic", "stress"}
            assert 0 <= run["sim_auc"] <= 1
            for preset in ("realistic", "stress"):
                assert run["drop"][preset] == pytest.approx(run["sim_accuracy"] - run["real_accuracy"][preset])
                assert run["auc_drop"][preset] == pytest.approx(run["sim_auc"] - run["real_auc"][preset])
        summary = entry["summary"]
        drops = [run["drop"]["stress"] for run in entry["per_seed"]]
        assert summary["drop"]["stress"]["mean"] == pytest.approx(sum(drops) / 2)
        assert summary["drop"]["stress"]["std"] == pytest.approx(abs(drops[0] - drops[1]) / 2**0.5)
        assert set(summary["real_auc"]) == {"realistic", "stress"}
    again = domain_gap(seeds=(0,), trainings=("sim",), **TINY)
    first = result["results"]["sim"]["per_seed"][0]
    assert again["results"]["sim"]["per_seed"][0]["real_accuracy"] == first["real_accuracy"]
    assert "randomized" not in again["results"] and again["results"]["sim"]["summary"]["sim_accuracy"]["std"] == 0.0


def test_electron_photon_auc_is_the_mann_whitney_statistic():
    from sim2real_fast.evaluate.domain_gap import _electron_photon_auc

    labels = torch.tensor([0, 0, 1, 1, 2])
    logits = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.5, 9.0], [9.0, 0.0, 0.0]])
    # scores e+ - gamma: e+ 3, 1; gamma -2, -0.5: every e+ above every gamma; pions ignored
    assert _electron_photon_auc(logits, labels) == 1.0
    assert _electron_photon_auc(-logits, labels) == 0.0
    logits[1] = torch.tensor([-1.0, 0.0, 0.0])  # e+ at -1: above one gamma (-2), below the other (-0.5)
    assert _electron_photon_auc(logits, labels) == 0.75


@pytest.mark.parametrize("bad", [{"presets": ("default",)}, {"seeds": (0, 0)}, {"epochs": 0}, {"trainings": ("real",)}])
def test_domain_gap_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        domain_gap(**{**TINY, **bad})


def test_gap_command_prints_a_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "results" / "gap.json"
    args = ["gap", "--events", "240", "--test-events", "150", "--epochs", "1", "--presets", "realistic",
            "--threads", "1", "--out", str(out)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "drop (points)" in printed and "AUC drop" in printed and "randomized" in printed and "realistic" in printed
    result = json.loads(out.read_text())
    assert result["config"]["events"] == 240 and result["config"]["threads"] == 1
    assert set(result["results"]) == set(TRAININGS)
    assert list(tmp_path.joinpath("results").iterdir()) == [out]  # no temporary file left


@pytest.mark.parametrize(
    "arguments",
    [["--epochs", "0"], ["--presets", "severe"], ["--seeds", "-1"], ["--seeds", "1", "1"], ["--events", "0"],
     ["--trainings", "real"], ["--threads", "0"]],
)
def test_gap_command_refuses_bad_arguments(arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["gap", *arguments])
    assert exit_info.value.code == 2
    assert "sim2real gap" in capsys.readouterr().err
