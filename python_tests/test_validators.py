"""adapt.validators: hand-computed values, rankings of obviously better checkpoints, select(), errors, pytorch-adapt."""

import ast
import importlib
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2real_fast.adapt import VALIDATORS, select, validator_scores
from sim2real_fast.adapt import validators as v
from sim2real_fast.models import Predictions

N_CLASSES = 3


def predictions(logits: torch.Tensor, features: torch.Tensor | None = None) -> Predictions:
    features = logits.clone() if features is None else features
    return Predictions(features.float(), logits.float(), logits.float().softmax(1))


def clustered(n: int, *, sharpness: float, seed: int, balanced: bool = True) -> Predictions:
    """Logits sharpness * one-hot(class) + noise: confident (and class-balanced unless told) predictions."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.arange(n) % N_CLASSES if balanced else torch.zeros(n, dtype=torch.long)
    logits = sharpness * torch.nn.functional.one_hot(classes, N_CLASSES) + 0.3 * torch.randn(n, N_CLASSES, generator=g)
    return predictions(logits)


def scattered(n: int, *, seed: int) -> Predictions:
    """Logits spread all over the simplex: unconfident, no clusters."""
    g = torch.Generator().manual_seed(seed)
    return predictions(2.0 * torch.randn(n, N_CLASSES, generator=g))


def test_source_accuracy_and_information_maximization_by_hand():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 5.0, 0]])
    assert v.source_accuracy(predictions(logits), torch.tensor([0, 1, 1, 1])) == 0.75
    # One-hot predictions, balanced over two classes: H(marginal) = log 2, conditional entropy 0.
    one_hot = Predictions(torch.zeros(4, 2), torch.zeros(4, 3), torch.tensor([[1.0, 0, 0], [0, 1, 0]] * 2))
    assert v.information_maximization(one_hot) == pytest.approx(math.log(2))
    # Uniform predictions: both entropies are log 3.
    assert v.information_maximization(predictions(torch.zeros(5, 3))) == pytest.approx(0.0, abs=1e-12)


def test_snd_by_hand_and_its_bounds():
    # Two identical pairs of orthogonal one-hot predictions: each row has one neighbour at similarity 1 and
    # two at 0, so its softmax is (e^20, 1, 1) / (e^20 + 2).
    probs = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    p = torch.tensor([math.exp(20), 1.0, 1.0], dtype=torch.float64)
    p = p / p.sum()
    expected = float(-(p * p.log()).sum())
    score = v.soft_neighborhood_density(Predictions(torch.zeros(4, 1), probs.log(), probs))
    assert score == pytest.approx(expected, rel=1e-9)
    # Identical predictions everywhere: every neighbour is as close as any other, entropy log(n - 1).
    same = predictions(torch.zeros(6, 3))
    assert v.soft_neighborhood_density(same) == pytest.approx(math.log(5))


def test_im_and_snd_prefer_confident_clustered_balanced_predictions():
    good, noisy = clustered(300, sharpness=6.0, seed=1), scattered(300, seed=2)
    collapsed = clustered(300, sharpness=6.0, seed=3, balanced=False)
    assert v.information_maximization(good) > v.information_maximization(noisy)
    assert v.information_maximization(good) > v.information_maximization(collapsed)  # one class for all
    assert v.soft_neighborhood_density(good) > v.soft_neighborhood_density(noisy)


def test_snd_subsamples_deterministically_without_replacement():
    target = scattered(500, seed=4)
    a = v.soft_neighborhood_density(target, max_samples=100, seed=7)
    assert a == v.soft_neighborhood_density(target, max_samples=100, seed=7)
    assert a != v.soft_neighborhood_density(target, max_samples=100, seed=8)
    assert v.soft_neighborhood_density(target, max_samples=500) == v.soft_neighborhood_density(target)


def source_and_target(seed: int, *, n: int = 240, d: int = 4):
    """Source features N(0, 1), target features shifted along the first axis; labels from the first axis too."""
    g = torch.Generator().manual_seed(seed)
    source, target = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    target[:, 0] += 1.0
    labels = (source[:, 0] > 0).long() + (source[:, 0] > 1).long()
    return source, labels, target


def test_dev_prefers_the_checkpoint_with_lower_loss_where_the_target_lies():
    source, labels, target = source_and_target(0)
    right = torch.nn.functional.one_hot(labels, N_CLASSES).double() * 4.0
    # Both checkpoints have the same mean source loss, but "bad" errs on the source samples that
    # look like the target (large first feature), "good" on those that do not.
    wrong = right.roll(1, dims=1)
    target_like = source[:, 0] > source[:, 0].median()
    good = torch.where(target_like[:, None], right, wrong)
    bad = torch.where(target_like[:, None], wrong, right)
    dev_good = v.deep_embedded_validation(predictions(good, source), labels, predictions(torch.zeros(len(target), 3), target))
    dev_bad = v.deep_embedded_validation(predictions(bad, source), labels, predictions(torch.zeros(len(target), 3), target))
    assert dev_good > dev_bad
    assert dev_good == v.deep_embedded_validation(predictions(good, source), labels, predictions(torch.zeros(len(target), 3), target))


def test_dev_without_domain_shift_is_close_to_minus_the_mean_loss():
    source, labels, _ = source_and_target(1, n=400)
    target = torch.randn(400, 4, generator=torch.Generator().manual_seed(9))
    logits = torch.randn(400, N_CLASSES, generator=torch.Generator().manual_seed(10))
    mean_loss = float(torch.nn.functional.cross_entropy(logits.double(), labels))
    dev = v.deep_embedded_validation(predictions(logits, source), labels, predictions(torch.zeros(400, 3), target))
    assert dev == pytest.approx(-mean_loss, rel=0.1)


def test_control_variate_risk_by_hand():
    w, loss = np.array([0.5, 1.0, 1.5, 1.0]), np.array([2.0, 1.0, 0.0, 1.0])
    wl = w * loss  # 1, 1, 0, 1
    eta = -np.cov(wl, w)[0, 1] / np.var(w, ddof=1)  # cov = -1/6, var = 1/6: eta = 1
    assert eta == pytest.approx(1.0)
    assert v._control_variate_risk(w, loss) == pytest.approx(wl.mean() + eta * w.mean() - eta)
    assert v._control_variate_risk(np.ones(4), loss) == pytest.approx(loss.mean())  # equal weights: eta = 0


def test_validator_scores_has_every_validator():
    source, labels, target = source_and_target(2, n=60)
    scores = validator_scores(predictions(torch.randn(60, 3), source), labels, predictions(torch.randn(60, 3), target))
    assert tuple(scores) == VALIDATORS and all(math.isfinite(s) for s in scores.values())


def test_select_nan_never_wins_and_ties_go_to_the_later_checkpoint():
    nan = math.nan
    scores = [
        {"im": 0.5, "snd": nan, "dev": -1.0, "source_accuracy": nan},
        {"im": 0.9, "snd": 2.0, "dev": -1.0, "source_accuracy": nan},
        {"im": nan, "snd": 1.0, "dev": -2.0, "source_accuracy": nan},
    ]
    assert select(scores) == {"im": 1, "snd": 1, "dev": 1}  # source_accuracy: all NaN, left out
    assert select([{"im": 1.0}, {"im": 1.0}, {"im": 0.0}]) == {"im": 1}
    assert select([{"im": 1.0}, {"dev": 3.0}]) == {"im": 0, "dev": 1}
    with pytest.raises(ValueError, match="empty"):
        select([])


def test_bad_inputs_are_refused_with_the_argument_named():
    good = predictions(torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"target\.probs must be a 2-D"):
        v.information_maximization(Predictions(good.features, good.logits, good.probs[:, 0]))
    with pytest.raises(ValueError, match="one N"):
        v.information_maximization(Predictions(good.features[:4], good.logits, good.probs))
    with pytest.raises(ValueError, match=r"labels must be an integer tensor of shape \(5,\)"):
        v.source_accuracy(good, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        v.source_accuracy(good, torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        v.soft_neighborhood_density(predictions(torch.randn(1, 3)))
    with pytest.raises(ValueError, match="temperature"):
        v.soft_neighborhood_density(good, temperature=0)
    with pytest.raises(ValueError, match="same feature and class sizes"):
        v.deep_embedded_validation(good, torch.zeros(5, dtype=torch.long), predictions(torch.randn(5, 3), torch.randn(5, 2)))


# --- pytorch-adapt -------------------------------------------------------------------------------
# pytorch-adapt's package __init__ files import torchvision (through torchmetrics), which may not load
# against the installed torch; the modules compared here are loaded from their files under stub packages.


@pytest.fixture
def pytorch_adapt(monkeypatch):
    try:
        package = importlib.import_module("pytorch_adapt")
    except Exception as error:
        pytest.skip(f"pytorch-adapt is not importable: {error}")
    root = Path(package.__file__).parent
    before = set(sys.modules)
    stubs = {}
    for sub in ("layers", "validators"):
        stubs[sub] = types.ModuleType(f"pytorch_adapt.{sub}")
        stubs[sub].__path__ = [str(root / sub)]
        monkeypatch.setitem(sys.modules, stubs[sub].__name__, stubs[sub])
    try:
        stubs["layers"].EntropyLoss = importlib.import_module("pytorch_adapt.layers.entropy_loss").EntropyLoss
        stubs["layers"].DiversityLoss = importlib.import_module("pytorch_adapt.layers.diversity_loss").DiversityLoss
        im = importlib.import_module("pytorch_adapt.validators.im_validator")
        snd = importlib.import_module("pytorch_adapt.validators.snd_validator")
    except Exception as error:
        pytest.skip(f"pytorch-adapt's validators cannot be loaded: {type(error).__name__}: {error}")
    # get_dev_risk and its helpers are plain NumPy; their module imports the whole package, so
    # only these functions are taken from its source.
    source = (root / "validators" / "deep_embedded_validator.py").read_text()
    wanted = {"check_normalization", "normalize_weights", "get_dev_risk"}
    tree = ast.Module([node for node in ast.parse(source).body if getattr(node, "name", None) in wanted], type_ignores=[])
    namespace = {"np": np}
    exec(compile(tree, "deep_embedded_validator.py", "exec"), namespace)
    yield types.SimpleNamespace(IMValidator=im.IMValidator, SNDValidator=snd.SNDValidator, get_dev_risk=namespace["get_dev_risk"])
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_im_snd_and_dev_risk_match_pytorch_adapt(pytorch_adapt):
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(200, 4, generator=g)
    target = Predictions(torch.randn(200, 8, generator=g), logits, logits.softmax(1))
    theirs_im = pytorch_adapt.IMValidator()(target_train={"logits": logits})
    assert v.information_maximization(target) == pytest.approx(theirs_im, rel=1e-5)
    theirs_snd = pytorch_adapt.SNDValidator(T=0.05)(target_train={"preds": target.probs})
    assert v.soft_neighborhood_density(target) == pytest.approx(theirs_snd, rel=1e-5)
    w = torch.rand(200, generator=g).double() * 2
    loss = torch.rand(200, generator=g).double()
    theirs_dev = pytorch_adapt.get_dev_risk(w[:, None], loss[:, None], None)
    assert v._control_variate_risk(w.numpy(), loss.numpy()) == pytest.approx(theirs_dev, rel=1e-12)
