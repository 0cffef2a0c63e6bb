"""evaluate.metrics and evaluate.alarm: hand-computed values, agreement with scikit-learn, absent classes, errors."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from sim2real_fast.evaluate import classification_metrics, flag_gaps, gap_alarm, roc_curves

NAMES = ["e+", "gamma", "pi+"]


def test_values_computed_by_hand():
    labels = [0, 0, 1, 1, 2, 2]
    probs = np.array(
        [[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3]]
    )  # predictions 0 1 1 1 2 0
    m = classification_metrics(labels, probs, class_names=NAMES)
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    e, gamma, pi = (m["per_class"][name] for name in NAMES)
    assert (e["precision"], e["recall"], e["f1"], e["support"]) == (0.5, 0.5, 0.5, 2)
    assert (gamma["precision"], gamma["recall"]) == (pytest.approx(2 / 3), 1.0) and gamma["f1"] == pytest.approx(0.8)
    assert (pi["precision"], pi["recall"]) == (1.0, 0.5) and pi["f1"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # gamma vs rest: its two positives (0.7, 0.8) outrank all four negatives (<= 0.6).
    assert gamma["auc"] == 1.0
    # e+ vs rest: positives 0.8, 0.3 against negatives 0.2, 0.1, 0.1, 0.6: 4 + 3 of 8 pairs ordered.
    assert e["auc"] == pytest.approx(7 / 8)
    assert m["auc"] == pytest.approx((e["auc"] + 1.0 + pi["auc"]) / 3) and m["auc_note"] is None


def test_agrees_with_scikit_learn_on_random_inputs():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 500)
    probs = rng.dirichlet([1.0, 1.0, 1.0], 500) + 0.3 * np.eye(3)[labels]
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(torch.from_numpy(labels), torch.from_numpy(probs).float(), class_names=NAMES)
    predicted = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, predicted, average="macro"))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"), rel=1e-6)
    assert m["confusion"] == skm.confusion_matrix(labels, predicted).tolist()
    recall = skm.recall_score(labels, predicted, average=None)
    assert [m["per_class"][name]["recall"] for name in NAMES] == pytest.approx(recall)
    assert all(0.0 <= m[key] <= 1.0 for key in ("accuracy", "f1", "auc"))
    curves = roc_curves(labels, probs, class_names=NAMES)
    assert list(curves) == NAMES
    for k, name in enumerate(NAMES):
        fpr, tpr, auc = curves[name]
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0) and np.all(np.diff(fpr) >= 0)
        assert auc == pytest.approx(m["per_class"][name]["auc"])


def test_an_absent_class_makes_the_auc_nan_with_a_reason():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])
    m = classification_metrics(labels, probs, class_names=NAMES)
    assert math.isnan(m["auc"]) and "pi+" in m["auc_note"]
    pi = m["per_class"]["pi+"]
    assert pi["support"] == 0 and math.isnan(pi["recall"]) and math.isnan(pi["auc"])
    assert pi["precision"] == 0.0 and pi["f1"] == 0.0  # predicted once, wrongly
    assert list(roc_curves(labels, probs, class_names=NAMES)) == ["e+", "gamma"]
    # A class neither present nor predicted has no F1 and does not enter the macro average.
    m = classification_metrics([0, 1], [[0.9, 0.1, 0.0], [0.1, 0.9, 0.0]], class_names=NAMES)
    assert math.isnan(m["per_class"]["pi+"]["f1"]) and m["f1"] == 1.0


@pytest.mark.parametrize(
    "labels, probs, names, error, match",
    [
        ([], np.zeros((0, 3)), NAMES, ValueError, "empty"),
        ([0, 1], np.zeros((2, 2)), NAMES, ValueError, r"probs must have shape \(N, C\) = \(2, 3\)"),
        ([0, 3], np.zeros((2, 3)), NAMES, ValueError, r"class indices in \[0, 2\]"),
        ([[0, 1]], np.zeros((2, 3)), NAMES, ValueError, r"labels must be 1-D"),
        ([0.0, 1.0], np.zeros((2, 3)), NAMES, TypeError, "labels must hold integers"),
        ([0, 1], np.full((2, 3), np.nan), NAMES, ValueError, "probs holds NaN"),
        ([0, 0], np.zeros((2, 1)), ["e+"], ValueError, "at least 2 distinct names"),
    ],
)
def test_bad_inputs_are_refused(labels, probs, names, error, match):
    with pytest.raises(error, match=match):
        classification_metrics(labels, probs, class_names=names)


def test_gap_alarm_and_flag_gaps():
    assert gap_alarm(0.95, 0.80) and not gap_alarm(0.95, 0.92) and not gap_alarm(0.80, 0.95)
    assert gap_alarm(0.95, 0.92, threshold=0.01) and not gap_alarm(math.nan, 0.5)
    results = {
        "source_only": {"source_accuracy": 0.97, "target_accuracy": 0.70},
        "dann": {"source_accuracy": 0.93, "target_accuracy": 0.90},
        "mmd": {"source_accuracy": 0.90, "target_accuracy": 0.92},
    }
    assert flag_gaps(results) == {"source_only": pytest.approx(0.27)}
    assert set(flag_gaps(results, threshold=0.0)) == {"source_only", "dann"}
    assert flag_gaps(results, real_key="source_accuracy") == {}
    with pytest.raises(KeyError, match="results\\['source_only'\\] has no 'real'"):
        flag_gaps(results, real_key="real")
    with pytest.raises(ValueError, match="threshold"):
        gap_alarm(0.9, 0.8, threshold=-0.1)
