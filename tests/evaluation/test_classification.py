"""Classification metrics: AUC with unknowns, one-class labels skipped, thresholds, ROC PNG."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from crrg.errors import InputError
from crrg.evaluation.classification import choose_thresholds, classification_metrics, plot_roc


def test_auc_accuracy_f1_by_hand():
    y_true = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0]], dtype=float)
    y_score = np.array([[0.9, 0.2], [0.4, 0.8], [0.35, 0.99], [0.1, 0.6]])
    m = classification_metrics(y_true, y_score, ["A", "B"])
    # A: positives 0.9, 0.35; negatives 0.4, 0.1 -> 3 of 4 pairs ordered: AUC 0.75.
    assert m["auc"]["A"] == pytest.approx(0.75)
    # B: the nan row is ignored; positive 0.8 vs negatives 0.2, 0.6 -> AUC 1.
    assert m["auc"]["B"] == pytest.approx(1.0)
    assert m["macro_auc"] == pytest.approx(0.875)
    # threshold 0.5: A predicts [1, 0, 0, 0] -> accuracy 3/4, precision 1, recall 1/2, F1 2/3.
    assert m["accuracy"]["A"] == pytest.approx(0.75)
    assert m["f1"]["A"] == pytest.approx(2 / 3)
    # B predicts [0, 1, -, 1] on the known rows -> accuracy 2/3, P 1/2, R 1, F1 2/3.
    assert m["accuracy"]["B"] == pytest.approx(2 / 3)
    assert m["support"]["B"] == {"positive": 1, "negative": 2}
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_per_label_thresholds_change_predictions():
    y_true = np.array([[1], [0], [1]], dtype=float)
    y_score = np.array([[0.3], [0.2], [0.25]])
    assert classification_metrics(y_true, y_score, ["A"])["f1"]["A"] == 0.0
    m = classification_metrics(y_true, y_score, ["A"], thresholds={"A": 0.25})
    assert m["f1"]["A"] == pytest.approx(1.0) and m["thresholds"]["A"] == 0.25
    with pytest.raises(InputError, match="no threshold"):
        classification_metrics(y_true, y_score, ["A"], thresholds={"B": 0.1})


def test_one_class_label_is_skipped_and_said(caplog):
    y_true = np.array([[1, 0], [0, 0], [1, 0]], dtype=float)
    y_score = np.array([[0.9, 0.1], [0.2, 0.3], [0.7, 0.2]])
    with caplog.at_level(logging.INFO, logger="crrg"):
        m = classification_metrics(y_true, y_score, ["A", "Rare"])
    assert m["auc"]["Rare"] is None and "only one class" in m["skipped"]["Rare"]
    assert "Rare" in caplog.text
    assert m["macro_auc"] == pytest.approx(1.0)  # only A counts
    assert m["accuracy"]["Rare"] == pytest.approx(1.0)


def test_bad_shapes_and_values():
    with pytest.raises(InputError, match=r"must both be \(N, L\)"):
        classification_metrics(np.zeros((3, 2)), np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(InputError, match="only 0, 1 or nan"):
        classification_metrics(np.array([[2.0]]), np.array([[0.5]]), ["a"])
    with pytest.raises(InputError, match="2 names for 1"):
        classification_metrics(np.array([[1.0]]), np.array([[0.5]]), ["a", "b"])


@pytest.mark.parametrize("method", ["youden", "f1"])
def test_choose_thresholds_separates_separable_data(method):
    rng = np.random.default_rng(0)
    neg, pos = rng.uniform(0.0, 0.4, 50), rng.uniform(0.6, 1.0, 50)
    y_score = np.concatenate([neg, pos])[:, None]
    y_true = np.concatenate([np.zeros(50), np.ones(50)])[:, None]
    th = choose_thresholds(y_true, y_score, ["A"], method=method)
    assert neg.max() < th["A"] <= pos.min()
    assert classification_metrics(y_true, y_score, ["A"], thresholds=th)["accuracy"]["A"] == 1.0


def test_choose_thresholds_prefers_f1_or_youden_as_asked():
    # Scores where max-F1 and Youden disagree: many negatives just below the positives.
    y_true = np.array([0] * 20 + [1] * 5 + [0] * 5 + [1] * 5, dtype=float)[:, None]
    y_score = np.array(list(np.linspace(0, 0.3, 20)) + list(np.linspace(0.31, 0.4, 5))
                       + list(np.linspace(0.5, 0.6, 5)) + list(np.linspace(0.7, 0.9, 5)))[:, None]
    youden = choose_thresholds(y_true, y_score, ["A"], "youden")["A"]
    best_f1 = choose_thresholds(y_true, y_score, ["A"], "f1")["A"]
    f1_at = lambda t: classification_metrics(y_true, y_score, ["A"], thresholds=t)["f1"]["A"]
    grid = np.unique(y_score)
    assert f1_at(best_f1) == pytest.approx(max(f1_at(t) for t in grid))
    from sklearn.metrics import roc_curve

    fpr, tpr, cut = roc_curve(y_true[:, 0], y_score[:, 0])
    assert youden == pytest.approx(cut[np.argmax(tpr - fpr)])
    with pytest.raises(InputError, match="not 'youden' or 'f1'"):
        choose_thresholds(y_true, y_score, ["A"], "median")


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 2, size=(40, 3)).astype(float)
    y_true[:, 2] = 0  # one-class: left out of the plot
    y_score = y_true * 0.5 + rng.random((40, 3)) * 0.7
    path = plot_roc(y_true, y_score, ["A", "B", "C"], tmp_path / "sub" / "roc.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    from PIL import Image

    assert Image.open(path).size == (600, 600)
    assert not list(path.parent.glob(".*tmp*")), "temporary files left behind"
