"""Data-parallel training on 2 processes (gloo, CPU) equals 1 process on the global batch.

One spawned pair of processes runs every distributed case once (the helpers, one MMD + CORAL step, whole
fits, a fit resumed after its first epoch, `sim2real run` and its resume); the tests compare what each
rank found with the same code run here in one process, where every distributed call is the identity.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from distributed_cases import FITS, RUN, WORLD, _fit, _helpers, _model, _step, _summary, _worker
from helpers import one_thread  # noqa: F401  (autouse: one torch thread)
from sim2real_fast import cli
from sim2real_fast.ops import coral, mmd
from sim2real_fast.workflow import outputs


# ---- the tests ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "run.json"
    path.write_text(json.dumps(RUN))
    return path


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, config_file) -> list[dict]:
    """What each rank of 2 processes found (torch.multiprocessing.spawn, a FileStore in a temporary folder)."""
    import torch.multiprocessing as mp

    folder = tmp_path_factory.mktemp("pair")
    shutil.copy(config_file, folder / "run.json")
    mp.spawn(_worker, args=(folder,), nprocs=WORLD)
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a, b, **tolerance) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _close(a[key], b[key], **tolerance)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _close(x, y, **tolerance)
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, **tolerance)
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=tolerance["rtol"], abs=tolerance["atol"])
    else:
        assert a == b


def test_helpers_on_unequal_shards(ranks):
    first, second = (r["helpers"] for r in ranks)
    assert first["shard"].tolist() == [0, 1, 2, 3] and second["shard"].tolist() == [4, 5, 6]
    rows = torch.arange(21.0, dtype=torch.float64).reshape(7, 3)
    weights = torch.linspace(-1, 1, 21, dtype=torch.float64).reshape(7, 3)
    for r, found in enumerate(ranks):
        helpers = found["helpers"]
        assert torch.equal(helpers["gather"], rows)
        # every rank's loss is the global one: all_gather's backward sums the ranks' gradients, W times its share
        assert torch.equal(helpers["gather_grad"], WORLD * (weights[:4] if r == 0 else weights[4:]))
        assert torch.equal(helpers["gather_one"], torch.ones(1, 2))  # rank 1's shard is empty
        assert torch.equal(helpers["averaged"], torch.full((3,), 1.5)) and helpers["no_grad"] is None
        assert torch.equal(helpers["weighted"], torch.full((3,), 1.5))  # 0.5 * 1 + 0.5 * 2, not divided
        assert torch.equal(helpers["broadcast"], torch.ones(2, 2))
    alone = _helpers()
    assert torch.equal(alone["shard"], torch.arange(7)) and torch.equal(alone["gather"], rows)
    assert torch.equal(alone["gather_grad"], weights) and torch.equal(alone["averaged"], torch.ones(3))


def test_one_mmd_coral_step_equals_one_process(ranks):
    alone = _step()
    assert alone["loss"] != 0 and alone["weight"].abs().sum() > 0  # the unbiased MMD^2 may be < 0
    for found in ranks:
        _close(found["step"], alone, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("method", FITS)
def test_fit_equals_one_process(ranks, method, tmp_path):
    alone = _summary(_fit(method, tmp_path / method))
    first, second = (r["fits"][method] for r in ranks)
    _close(first, second, rtol=0, atol=0)  # the ranks hold the same weights, bit for bit
    _close(first, alone, rtol=1e-9, atol=1e-12)
    assert any(not torch.equal(v, w) for v, w in zip(first["state"].values(), _model().state_dict().values()))
    for name in {"mmd": ("mmd",), "coral": ("coral",), "dann": ("dann", "domain_accuracy")}.get(method, ()):
        assert name in first["history"][0]
    if "pseudo_label" in method:
        assert [h["stage"] for h in first["history"]] == ["pretrain", "train", "train", "few_shot", "pseudo_label"]
        assert first["history"][-1]["pseudo_kept"] > 0


def test_rank_0_writes_the_checkpoints_and_a_resumed_fit_repeats_the_straight_one(ranks):
    first, second = (r["fits"] for r in ranks)
    epochs = {method: len(first[method]["history"]) for method in FITS}
    assert len(first["written"]) == sum(epochs.values()) + 3 + 2 and second["written"] == []
    for method in FITS:
        assert first[method]["checkpoints"] == second[method]["checkpoints"]
    for found in (first, second):
        assert found["resumed"]["history"] == found["straight"]["history"]
        _close(found["resumed"]["state"], found["straight"]["state"], rtol=0, atol=0)


def test_a_resume_without_shared_checkpoints_stops_every_rank(ranks):
    for found in ranks:
        assert "every process must see the checkpoints" in found["fits"]["unshared"]
        assert "epochs [3, 0]" in found["fits"]["unshared"]  # dann+pseudo_label: 2 train epochs + 1 pseudo-label round


def test_run_on_two_processes(ranks, config_file, tmp_path):
    figures = outputs._figures
    outputs._figures = lambda *args, **kwargs: {}
    try:
        assert cli.main(["run", "--config", str(config_file), "--out", str(tmp_path / "one")]) == 0
    finally:
        outputs._figures = figures
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    first, second = (r["run"] for r in ranks)
    assert first["codes"] == second["codes"] == [0, 0]
    assert second["results"] is None
    expected = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert first["files"] == second["files"] == expected  # rank 0's files only, the same as one process writes
    two = first["results"]
    assert two["machine"]["world_size"] == 2 and one["machine"]["world_size"] == 1
    assert "- **processes**: 2" in first["report"]
    assert "**processes**" not in (tmp_path / "one" / "report.md").read_text()
    for method in RUN["methods"]:
        for key in ("target_accuracy", "source_accuracy", "target_accuracy_last"):
            assert two["methods"][method][key] == pytest.approx(one["methods"][method][key], abs=1e-6), (method, key)
    clock = {"train_seconds", "energy_joules"}
    for method, entry in first["resumed"]["methods"].items():  # dann's second epoch trained again, on 2 processes
        assert entry["target_accuracy"] == two["methods"][method]["target_accuracy"]
        assert [{k: v for k, v in r.items() if k not in clock} for r in entry["per_seed"]] == \
            [{k: v for k, v in r.items() if k not in clock} for r in two["methods"][method]["per_seed"]]


def test_commands_that_do_not_train_refuse_torchrun(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dqm", "--quick", "--out", str(tmp_path / "dqm")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "sim2real dqm does not run under torchrun" in last and "sim2real run" in last
    assert not (tmp_path / "dqm").exists()
