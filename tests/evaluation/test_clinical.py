"""Clinical-efficacy maths on hand-checked label sets, and with the real labeler."""

from __future__ import annotations

import pytest

from crrg.errors import InputError
from crrg.evaluation.clinical import CE_KEYS, ce_from_labels, clinical_efficacy, positive_matrix
from crrg.observations import CHEXPERT_14


def labels(**values) -> dict:
    row = {name: None for name in CHEXPERT_14}
    for key, value in values.items():
        row[key.replace("_", " ")] = value
    return row


def test_uncertain_counts_as_positive_and_zero_as_negative():
    m = positive_matrix([labels(Edema=-1, Cardiomegaly=0, Atelectasis=1)])
    assert m[0, CHEXPERT_14.index("Edema")] and m[0, CHEXPERT_14.index("Atelectasis")]
    assert not m[0, CHEXPERT_14.index("Cardiomegaly")] and m.sum() == 2


def test_micro5_by_hand():
    pred = [labels(Cardiomegaly=1, Edema=1), labels(Pleural_Effusion=-1), labels(Pneumothorax=1)]
    ref = [labels(Cardiomegaly=1), labels(Pleural_Effusion=1, Atelectasis=1), labels()]
    m = ce_from_labels(pred, ref)
    # micro-5 pairs: TP = Cardiomegaly(0) + Effusion(1) = 2; predicted positives 3; reference positives 3.
    # Pneumothorax is not one of the five and does not count.
    assert m["ce_micro5_precision"] == pytest.approx(2 / 3)
    assert m["ce_micro5_recall"] == pytest.approx(2 / 3)
    assert m["ce_micro5_f1"] == pytest.approx(2 / 3)


def test_example14_by_hand_with_edge_cases():
    pred = [
        labels(Cardiomegaly=1, Edema=1),   # ref {Cardiomegaly}: P 1/2, R 1, F1 2/3
        labels(),                          # ref {}: both empty, perfect agreement -> 1, 1, 1
        labels(),                          # ref {Fracture}: P 0 (nothing predicted), R 0, F1 0
        labels(Support_Devices=1),         # ref {}: P 0, R 0 (undefined -> 0), F1 0
    ]
    ref = [labels(Cardiomegaly=1), labels(Edema=0), labels(Fracture=1), labels()]
    m = ce_from_labels(pred, ref)
    assert m["ce_example14_precision"] == pytest.approx((0.5 + 1 + 0 + 0) / 4)
    assert m["ce_example14_recall"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert m["ce_example14_f1"] == pytest.approx((2 / 3 + 1 + 0 + 0) / 4)


def test_macro14_averages_only_observations_seen_on_either_side():
    pred = [labels(Cardiomegaly=1), labels(Cardiomegaly=1), labels(Edema=1)]
    ref = [labels(Cardiomegaly=1), labels(), labels(Fracture=1)]
    m = ce_from_labels(pred, ref)
    per = m["ce_f1_per_observation"]
    assert per["Cardiomegaly"] == pytest.approx(2 / 3)  # P 1/2, R 1
    assert per["Edema"] == 0.0 and per["Fracture"] == 0.0
    assert per["Pneumothorax"] is None
    assert m["ce_macro14_f1"] == pytest.approx((2 / 3) / 3)
    assert set(CE_KEYS) <= set(m)


def test_perfect_agreement_scores_one():
    rows = [labels(Cardiomegaly=1, Pleural_Effusion=-1), labels(No_Finding=1), labels(Edema=1, Atelectasis=1)]
    m = ce_from_labels(rows, rows)
    for key in CE_KEYS:
        assert m[key] == pytest.approx(1.0), key


def test_length_mismatch_and_empty():
    with pytest.raises(InputError, match="2 predicted label sets but 1"):
        ce_from_labels([labels(), labels()], [labels()])
    with pytest.raises(InputError, match="no reports"):
        ce_from_labels([], [])


def test_clinical_efficacy_with_the_labeler():
    refs = {
        "a": "The heart is enlarged. There is a small left pleural effusion.",
        "b": "No acute cardiopulmonary abnormality. Lungs are clear.",
        "c": "Mild pulmonary edema. No pneumothorax.",
    }
    preds = {
        "a": "Cardiomegaly. Left pleural effusion is present.",
        "b": "The lungs are clear. No pleural effusion or pneumothorax.",
        "c": "Lungs are clear without edema.",
    }
    m = clinical_efficacy(preds, refs)
    # a: Cardiomegaly and Effusion found on both sides; c: edema missed -> 2 TP, 0 FP, 1 FN.
    assert m["ce_micro5_precision"] == pytest.approx(1.0)
    assert m["ce_micro5_recall"] == pytest.approx(2 / 3)
    assert m["ce_micro5_f1"] == pytest.approx(0.8)
    assert clinical_efficacy(refs, refs)["ce_example14_f1"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="no prediction"):
        clinical_efficacy({"a": refs["a"]}, refs)
