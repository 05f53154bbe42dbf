"""Reports say what was inserted, with the labels a CheXpert labeler would read, in varied words."""

from __future__ import annotations

import numpy as np
import pytest

from crrg.synth.findings import Finding
from crrg.synth.reports import SentenceBank, Sentence, write_report
from crrg.synth.sampling import NORMAL_FRACTION, sample_findings

EXPECTED = {
    "cardiomegaly": "Cardiomegaly", "mediastinum": "Enlarged Cardiomediastinum", "effusion": "Pleural Effusion",
    "pneumothorax": "Pneumothorax", "consolidation": "Consolidation", "atelectasis": "Atelectasis", "edema": "Edema",
    "nodule": "Lung Lesion", "mass": "Lung Lesion", "fracture": "Fracture", "devices": "Support Devices",
}


def test_normal_study_states_the_usual_negatives():
    rep = write_report([], np.random.default_rng(0))
    assert rep.labels["No Finding"] == 1
    assert rep.labels["Pneumothorax"] == 0 and rep.labels["Pleural Effusion"] == 0
    assert "pneumothorax" in rep.findings.lower()
    assert rep.impression and rep.indication.endswith(".")


def test_every_sampled_finding_is_labelled_positive_and_described():
    rng = np.random.default_rng(1)
    n_normal = 0
    for _ in range(300):
        findings = sample_findings(rng, 0.45)
        n_normal += not findings
        rep = write_report(findings, rng)
        for f in findings:
            if f.kind in EXPECTED:
                ok = rep.labels[EXPECTED[f.kind]] == 1
                if f.kind == "consolidation":  # "... pneumonia" / "opacity may represent pneumonia" are enough
                    ok = ok or rep.labels["Pneumonia"] in (1, -1)
                assert ok, (f, rep.findings)
            if f.side in ("right", "left") and f.kind not in ("devices",):
                assert f.side in rep.findings.lower()
        pathologies = [k for k, v in rep.labels.items() if k not in ("No Finding", "Support Devices") and v in (1, -1)]
        assert (rep.labels["No Finding"] == 1) == all(f.kind == "devices" for f in findings)
        if rep.labels["No Finding"] == 1:
            assert not pathologies
        # a negative never contradicts a positive of the same study
        text = rep.findings.lower()
        if rep.labels["Pneumothorax"] == 1:
            assert "no pneumothorax" not in text
    assert abs(n_normal / 300 - NORMAL_FRACTION) < 0.08


def test_phrasings_vary():
    texts = {write_report([Finding("effusion", "small", "left")], np.random.default_rng(i)).findings.split(".")[0] for i in range(40)}
    assert len(texts) >= 5


def test_sentence_bank_draws_matching_real_sentences_only():
    bank = SentenceBank({
        frozenset({("Pleural Effusion", 1)}): ["Small left pleural effusion is seen.", "Large right effusion.", "Pleural effusion persists.",
                                               "Small left pleural effusion, unchanged from prior.", "Small left effusion at the lung apex."],
    })
    rng = np.random.default_rng(0)
    s = Sentence("x", {"Pleural Effusion": 1}, side="left", severity="small")
    drawn = {bank.draw(s, rng) for _ in range(30)}
    assert drawn == {"Small left pleural effusion is seen."}  # side, size, no prior, a plausible place
    assert bank.draw(Sentence("x", {"Pneumothorax": 1}, side="left"), rng) is None


def test_sentence_bank_from_manifest(tmp_path):
    pytest.importorskip("crrg.labeler")
    from crrg.records import StudyRecord, write_manifest

    recs = [StudyRecord(id=str(i), findings=text) for i, text in enumerate(
        ["There is a small left pleural effusion. The heart is normal in size.", "No pneumothorax. Mild cardiomegaly."])]
    write_manifest(tmp_path / "m.jsonl", recs)
    bank = SentenceBank.from_manifest(tmp_path / "m.jsonl")
    assert any("effusion" in s.lower() for texts in bank.by_labels.values() for s in texts)
    rep = None
    for seed in range(20):
        rep = write_report([Finding("effusion", "small", "left")], np.random.default_rng(seed), bank)
        if "There is a small left pleural effusion." in rep.findings:
            break
    assert "There is a small left pleural effusion." in rep.findings


def test_labels_agree_with_the_project_labeler():
    labeler = pytest.importorskip("crrg.labeler")
    from crrg.observations import CHEXPERT_14

    rng = np.random.default_rng(7)
    agree = {k: 0 for k in CHEXPERT_14}
    n = 150
    for _ in range(n):
        rep = write_report(sample_findings(rng, 0.45), rng)
        read = labeler.label_report(rep.findings + " " + rep.impression)
        for k in CHEXPERT_14:
            agree[k] += (rep.labels[k] == 1) == (read[k] == 1)
    worst = min(agree, key=agree.get)
    assert agree[worst] / n >= 0.95, (worst, agree[worst] / n)


def test_every_positive_sentence_is_read_as_what_it_states():
    """Each findings sentence the generator writes for an inserted finding is labelled by crrg's labeler
    with that finding (the joint filter vetoes sentences by these labels: "Widening of the upper
    mediastinum." read as "No Finding" was vetoed on every abnormal study)."""
    from crrg.labeler import label_report

    rng = np.random.default_rng(3)
    missed = set()
    for _ in range(300):
        for sentence in write_report(sample_findings(rng, 0.6), rng).sentences:
            read = label_report(sentence.text)
            for name, value in sentence.labels.items():
                if value == 1 and read.get(name) not in (1, -1):
                    missed.add((sentence.text, name))
    assert not missed, sorted(missed)[:10]
