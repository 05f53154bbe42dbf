"""CheXbert-F1 aggregations (micro-5, macro-14, micro-14, example-14) checked by hand and against the formula
the packages use (scikit-learn's classification_report), and the uncertain / CE-convention policies."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.evaluation.clinical import ce_from_labels
from crrg.evaluation.label_f1 import binarize, label_f1_scores
from crrg.observations import CHEXPERT_14

IDX = {name: i for i, name in enumerate(CHEXPERT_14)}


def matrix(rows: list[list[str]]) -> np.ndarray:
    out = np.zeros((len(rows), 14), dtype=bool)
    for i, names in enumerate(rows):
        for name in names:
            out[i, IDX[name]] = True
    return out


# Three studies, hand-labelled.
REF = matrix([["Cardiomegaly", "Edema"], ["No Finding"], ["Pleural Effusion", "Support Devices"]])
PRED = matrix([["Cardiomegaly"], ["Edema"], ["Pleural Effusion", "Atelectasis", "Support Devices"]])


def test_hand_computed_values():
    m = label_f1_scores(PRED, REF, "x")
    # micro-5 (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion):
    # pred positives: Cardio, Edema, Effusion, Atelect = 4; ref positives: Cardio, Edema, Effusion = 3; tp = 2
    assert m["x_micro5_precision"] == pytest.approx(2 / 4)
    assert m["x_micro5_recall"] == pytest.approx(2 / 3)
    assert m["x_micro5_f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    # micro-14 adds Support Devices (tp) and No Finding (fn): pred 5, ref 5, tp 3
    assert m["x_micro14_f1"] == pytest.approx(3 / 5)
    # macro-14: Cardiomegaly 1, Pleural Effusion 1, Support Devices 1, Edema 0 (1 fp + 1 fn, no tp),
    # Atelectasis 0, No Finding 0, the 8 observations absent on both sides 0 -> 3 / 14
    assert m["x_macro14_f1"] == pytest.approx(3 / 14)
    # macro-5: Cardiomegaly 1, Pleural Effusion 1, Edema 0, Atelectasis 0, Consolidation 0 -> 2 / 5
    assert m["x_macro5_f1"] == pytest.approx(2 / 5)
    # example-based: study 1 p=1 r=1/2 f=2/3; study 2 p=0 r=0 f=0; study 3 p=2/3 r=1 f=4/5
    assert m["x_example14_precision"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert m["x_example14_recall"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert m["x_example14_f1"] == pytest.approx((2 / 3 + 0 + 4 / 5) / 3)
    assert m["x_f1_per_observation"]["Edema"] == 0.0 and m["x_f1_per_observation"]["Cardiomegaly"] == 1.0


def test_matches_the_packages_formula_sklearn_classification_report():
    """f1chexbert / RadEval print sklearn's classification_report of the binarised label matrices."""
    from sklearn.metrics import classification_report

    rng = np.random.default_rng(0)
    ref = rng.random((40, 14)) < 0.2
    pred = rng.random((40, 14)) < 0.25
    pred[3] = ref[3] = False  # a study empty on both sides: sklearn counts 0 (zero_division)
    pred[:, IDX["Fracture"]] = ref[:, IDX["Fracture"]] = False  # an observation absent on both sides
    ours = label_f1_scores(pred, ref, "c")
    cr = classification_report(ref.astype(int), pred.astype(int), output_dict=True, zero_division=0)
    assert ours["c_micro14_f1"] == pytest.approx(cr["micro avg"]["f1-score"], abs=1e-12)
    assert ours["c_micro14_precision"] == pytest.approx(cr["micro avg"]["precision"], abs=1e-12)
    assert ours["c_macro14_f1"] == pytest.approx(cr["macro avg"]["f1-score"], abs=1e-12)
    assert ours["c_example14_f1"] == pytest.approx(cr["samples avg"]["f1-score"], abs=1e-12)
    assert ours["c_example14_recall"] == pytest.approx(cr["samples avg"]["recall"], abs=1e-12)
    five = [IDX[n] for n in ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")]
    cr5 = classification_report(ref[:, five].astype(int), pred[:, five].astype(int), output_dict=True, zero_division=0)
    assert ours["c_micro5_f1"] == pytest.approx(cr5["micro avg"]["f1-score"], abs=1e-12)
    assert ours["c_macro5_f1"] == pytest.approx(cr5["macro avg"]["f1-score"], abs=1e-12)


def test_uncertain_policy():
    labels = [{"Edema": -1, "Cardiomegaly": 1, "Atelectasis": 0, "Pneumonia": None}]
    neg, pos = binarize(labels, "negative"), binarize(labels, "positive")
    assert neg[0, IDX["Edema"]] == False and pos[0, IDX["Edema"]] == True  # noqa: E712
    assert neg[0, IDX["Cardiomegaly"]] and pos[0, IDX["Cardiomegaly"]]
    assert not pos[0, IDX["Atelectasis"]] and not pos[0, IDX["Pneumonia"]]
    with pytest.raises(ValueError):
        binarize(labels, "ignore")


def test_ce_chexbert_convention_differs_from_crrg_where_documented():
    # study 1: reference certain edema, prediction "possible edema" (uncertain)
    # study 2: neither side has any positive or uncertain label (not even No Finding)
    preds = [{"Edema": -1}, {}]
    refs = [{"Edema": 1}, {}]
    crrg = ce_from_labels(preds, refs, "crrg")
    chexbert = ce_from_labels(preds, refs, "chexbert")
    assert crrg["ce_micro5_f1"] == pytest.approx(1.0)  # uncertain counted as positive
    assert chexbert["ce_micro5_f1"] == 0.0  # uncertain counted as negative
    assert crrg["ce_example14_f1"] == pytest.approx(1.0)  # both-empty study scores 1 in crrg's convention
    assert chexbert["ce_example14_f1"] == 0.0  # and 0 in the packages' (sklearn samples average)
    assert crrg["ce_macro14_f1"] == pytest.approx(1.0)  # crrg averages only the observations that occur
    assert chexbert["ce_macro14_f1"] == 0.0  # the packages average all 14
    assert "ce_micro14_f1" in chexbert and "ce_micro14_f1" not in crrg


def test_ce_convention_from_text_through_the_labeler():
    from crrg.evaluation.clinical import clinical_efficacy

    preds = {"a": "Possible small left pleural effusion.", "b": "Cardiomegaly."}
    refs = {"a": "Small left pleural effusion.", "b": "The heart is enlarged."}
    assert clinical_efficacy(preds, refs)["ce_micro5_recall"] == pytest.approx(1.0)
    assert clinical_efficacy(preds, refs, convention="chexbert")["ce_micro5_recall"] == pytest.approx(0.5)
