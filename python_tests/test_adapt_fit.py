"""adapt.fit: every method on tiny data, determinism, target labels never read, checkpoints and exact resume."""

import pytest
import torch

from sim2real_fast import simulate
from sim2real_fast.adapt import METHODS, AdaptConfig, Domain, fit
from sim2real_fast.adapt import checkpoint as checkpoint_module
from sim2real_fast.models import CaloCNN

TINY = AdaptConfig(epochs=1, batch_size=64, pseudo_iterations=1, pseudo_threshold=0.34, few_shot_epochs=1,
                   few_shot_k=4, simclr_epochs=1, translate_epochs=1)


@pytest.fixture(scope="module")
def domains():
    sim = simulate.showers(256, seed=11, effects="nominal")
    real = simulate.showers(192, effects="stress", seed=12)
    randomized = simulate.showers(256, effects=simulate.PRIOR, seed=13)
    pairs = simulate.paired_showers(128, real_effects="stress", seed=14)
    return {
        "source": Domain(sim.images, sim.labels, name="sim"),
        "target": Domain(real.images, real.labels, name="real"),
        "target_labelled": Domain(real.images, real.labels, name="real"),
        "randomized_source": Domain(randomized.images, randomized.labels, name="randomized"),
        "paired": (Domain(pairs.sim.images, pairs.sim.labels, name="pair_sim"),
                   Domain(pairs.real.images, name="pair_real")),
    }


def _model(seed=0):
    torch.manual_seed(seed)
    return CaloCNN("calogan", n_classes=3, channels=(4, 8), hidden=32, n_features=16)


def _fit(method, domains, config=TINY, **kwargs):
    return fit(method, _model(), config=config, **{**domains, **kwargs})


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _without_seconds(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("method", [*METHODS, "dann+pseudo_label", "simclr+few_shot", "domain_randomization+dann",
                                    "coral+mmd"])
def test_every_method_trains(method, domains):
    config = TINY.replace(mmd_on=("features", "logits"))
    before = {k: v.clone() for k, v in _model().state_dict().items()}
    result = _fit(method, domains, config)
    after = result.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    parts = set(method.split("+"))
    expected = ["pretrain"] * ("simclr" in parts) + ["train"] + ["few_shot"] * ("few_shot" in parts) + \
        ["pseudo_label"] * ("pseudo_label" in parts)
    assert [h["stage"] for h in result.history] == expected
    assert [(c.stage, c.epoch) for c in result.checkpoints] == [(h["stage"], h["epoch"]) for h in result.history]
    assert result.train_seconds == pytest.approx(sum(h["seconds"] for h in result.history))
    train = result.history[expected.index("train")]
    assert train["steps"] == 4  # every method, target_oracle's 192 labelled events too: round(256 source / 64)
    assert {"loss", "ce", "seconds"} <= train.keys()
    for name in ("dann", "coral", "mmd"):
        assert (name in train) == (name in parts)
    assert ("domain_accuracy" in train) == ("dann" in parts)
    if "pseudo_label" in parts:
        assert 0 < result.history[-1]["pseudo_kept"] <= len(domains["target"])
    if "simclr" in parts:
        assert result.history[0]["contrastive"] > 0


def test_deterministic_from_the_seed(domains):
    method = "simclr+dann+pseudo_label"
    a, b = _fit(method, domains), _fit(method, domains)
    _assert_same_weights(a.model, b.model)
    assert _without_seconds(a.history) == _without_seconds(b.history)
    c = _fit(method, domains, TINY.replace(seed=1))
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_global_rng_is_neither_used_nor_changed(domains):
    model_a, model_b = _model(), _model()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = fit("dann+pseudo_label+simclr", model_a, config=TINY, **domains)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)
    b = fit("dann+pseudo_label+simclr", model_b, config=TINY, **domains)
    _assert_same_weights(a.model, b.model)


def test_target_labels_are_never_read(domains):
    real = domains["target"]
    scrambled = Domain(real.inputs, real.labels[torch.randperm(len(real))], name="real")
    for method in ("dann+coral+mmd+pseudo_label+simclr", "few_shot", "domain_randomization"):
        a = _fit(method, domains)
        b = _fit(method, {**domains, "target": scrambled})
        c = _fit(method, {**domains, "target": real.unlabelled()})
        _assert_same_weights(a.model, b.model)
        _assert_same_weights(a.model, c.model)


@pytest.mark.parametrize(
    ("method", "change", "match"),
    [
        ("source_only", {"source": "unlabelled"}, "source must be labelled"),
        ("target_oracle", {"target_labelled": None}, r"'target_oracle'.*needs target_labelled"),
        ("few_shot", {"target_labelled": "unlabelled"}, r"'few_shot'.*target_labelled must be labelled"),
        ("domain_randomization", {"randomized_source": None}, r"needs randomized_source"),
        ("dann", {"target": None}, r"'dann'.*needs target"),
        ("mmd", {"target": "wrong shape"}, "target inputs are"),
    ],
)
def test_missing_inputs(method, change, match, domains):
    values = dict(domains)
    for name, how in change.items():
        if how == "unlabelled":
            values[name] = domains[name].unlabelled()
        elif how == "wrong shape":
            values[name] = Domain(torch.zeros(4, 10))
        else:
            values[name] = how
    with pytest.raises(ValueError, match=match):
        _fit(method, values)


def test_simclr_needs_an_augmentation_without_geometry(domains):
    class Plain(torch.nn.Module):
        n_features, n_classes = 4, 3

        def __init__(self):
            super().__init__()
            self.features, self.head = torch.nn.Linear(504, 4), torch.nn.Linear(4, 3)

    with pytest.raises(ValueError, match="augment="):
        fit("simclr", Plain(), config=TINY, **domains)
    result = fit("simclr", Plain(), config=TINY, augment=lambda x, g: x + torch.rand(x.shape, generator=g), **domains)
    assert result.history[0]["stage"] == "pretrain"


# ---- checkpoints and resume --------------------------------------------------------------------
RESUME_METHOD = "simclr+dann+few_shot+pseudo_label"
RESUME_CONFIG = TINY.replace(epochs=2, pseudo_iterations=2, pseudo_epochs=2)  # 1 + 2 + 1 + 4 = 8 epochs


class _Crash(Exception):
    pass


def _crash_after(monkeypatch, n):
    """Make the n-th checkpoint write raise after the file is written (an interruption between epochs)."""
    original, calls = checkpoint_module.write_checkpoint, []

    def write(path, payload):
        original(path, payload)
        calls.append(path)
        if len(calls) == n:
            raise _Crash(path.name)

    monkeypatch.setattr(checkpoint_module, "write_checkpoint", write)


@pytest.fixture(scope="module")
def straight(domains):
    return _fit(RESUME_METHOD, domains, RESUME_CONFIG)


@pytest.mark.parametrize("crash_after", [1, 3, 6])  # after pretrain, mid few_shot/train, inside a pseudo round
def test_resume_gives_the_uninterrupted_result(crash_after, domains, straight, tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        _crash_after(patch, crash_after)
        with pytest.raises(_Crash):
            _fit(RESUME_METHOD, domains, RESUME_CONFIG, checkpoint_dir=tmp_path)
    assert len(checkpoint_module.checkpoint_files(tmp_path)) == crash_after
    resumed = _fit(RESUME_METHOD, domains, RESUME_CONFIG, checkpoint_dir=tmp_path, resume=True)
    _assert_same_weights(resumed.model, straight.model)
    assert _without_seconds(resumed.history) == _without_seconds(straight.history)
    files = checkpoint_module.checkpoint_files(tmp_path)
    assert [c.path for c in resumed.checkpoints] == files and len(files) == 8
    assert [(c.stage, c.epoch) for c in resumed.checkpoints] == [(c.stage, c.epoch) for c in straight.checkpoints]
    for saved, in_memory in zip(resumed.checkpoints, straight.checkpoints):
        _assert_same_weights(saved.load_into(_model(5)), in_memory.load_into(_model(6)))


def test_resume_of_a_finished_run_returns_the_stored_result(domains, tmp_path, monkeypatch):
    first = _fit("coral+pseudo_label", domains, checkpoint_dir=tmp_path)
    _crash_after(monkeypatch, 1)  # any further checkpoint would raise
    again = _fit("coral+pseudo_label", domains, checkpoint_dir=tmp_path, resume=True)
    _assert_same_weights(first.model, again.model)
    assert again.history == first.history and again.train_seconds == first.train_seconds
    assert [c.path for c in again.checkpoints] == [c.path for c in first.checkpoints]


def test_checkpoint_dir_errors(domains, tmp_path):
    _fit("coral", domains, checkpoint_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit("coral", domains, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="belong to another run"):
        _fit("mmd", domains, checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="belong to another run"):
        _fit("coral", domains, TINY.replace(coral_weight=2.0), checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _fit("coral", domains, resume=True)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        _fit("coral", domains, checkpoint_dir=tmp_path / "a_file")
    _fit("coral", domains, checkpoint_dir=tmp_path / "new" / "folder")  # created
    assert any((tmp_path / "new" / "folder").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_progress_bar_runs(domains, capsys):
    result = _fit("source_only", domains, progress=True)
    assert len(result.history) == 1
