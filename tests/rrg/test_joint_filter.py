"""The "filter" joint mode: generated sentences that contradict the finding head are dropped."""

import copy

import numpy as np
import pytest
import torch

from tests.rrg.conftest import TINY_CONFIG, untrained_model
from crrg.errors import ConfigError, InputError
from crrg.models.registry import build_model
from crrg.observations import CHEXPERT_14
from crrg.reporting import StudyInput
from crrg.rrg import decoding, joint
from crrg.rrg.assembly import NORMAL_IMPRESSION, RegionSentence

CONTRADICTION = ["No pleural effusion or pneumothorax.", "Small pleural effusions are present bilaterally.",
                 "The heart is enlarged."]


def _decisions(*present: str) -> dict[str, bool]:
    return {name: name in present for name in CHEXPERT_14}


def _probs(**named) -> torch.Tensor:
    p = torch.full((len(CHEXPERT_14),), 0.01)
    for name, value in named.items():
        p[CHEXPERT_14.index(name.replace("_", " "))] = value
    return p


def test_the_head_decides_which_side_of_a_contradiction_survives():
    keep = joint.consistent_sentences(CONTRADICTION, _decisions("Pleural Effusion", "Cardiomegaly"))
    assert keep == [False, True, True]
    keep = joint.consistent_sentences(CONTRADICTION, _decisions("Cardiomegaly"))
    assert keep == [True, False, True]
    # a finding stated as uncertain is an assertion too
    assert joint.consistent_sentences(["Possible small left pleural effusion."], _decisions()) == [False]


def test_no_finding_only_counts_for_sentences_that_state_nothing_else():
    assert joint.contradicts({"No Finding": 1}, _decisions("Edema")) == ["No Finding"]
    assert joint.contradicts({"No Finding": 1}, _decisions("No Finding")) == []
    # the labeler's No Finding beside a negation is not a claim of its own
    assert joint.contradicts({"No Finding": 1, "Pneumothorax": 0}, _decisions("Edema")) == []


def test_an_abnormality_outside_the_14_contradicts_a_normal_study():
    """On real films the generator wrote granulomas and emphysema on films its classifier called normal,
    so no report of a normal film could be read as normal (CheXpert: such a finding rules out No Finding)."""
    texts = ["A punctate calcified granuloma projects over the left upper lung zone.",
             "Hyperinflation, consistent with emphysema.", "No acute osseous abnormality.",
             "Endotracheal tube terminates 4 cm above the carina.", "Small left pleural effusion.", ""]
    normal_with_tube = _decisions("No Finding", "Support Devices")
    assert joint.consistent_sentences(texts, normal_with_tube) == [False, False, True, True, False, True]
    # a study the classifier calls abnormal keeps them (nothing decides a granuloma either way)
    assert joint.consistent_sentences(texts[:2], _decisions("Pleural Effusion")) == [True, True]
    # a region that looks normal speaks for itself, as for its "No Finding"
    assert joint.consistent_sentences(texts[:1], _decisions("No Finding"), local=[True]) == [True]


def test_a_normal_region_may_call_itself_normal_in_an_abnormal_study():
    texts = ["No acute osseous abnormality.", "No acute osseous abnormality.", "Normal chest radiograph."]
    effusion = _decisions("Pleural Effusion")
    assert joint.consistent_sentences(texts, effusion) == [False, False, False]
    # the spine's sentence (region looks normal) stays; the same words from an abnormal region and a
    # whole-study statement are still vetoed
    assert joint.consistent_sentences(texts, effusion, local=[True, False, False]) == [True, False, False]
    model = untrained_model()
    model.thresholds.findings = {name: 0.5 for name in CHEXPERT_14}
    pieces = [RegionSentence("spine", texts[0]), RegionSentence("mediastinum", "Normal chest.", abnormal=True),
              RegionSentence("(whole study)", texts[2]), RegionSentence("right costophrenic angle", "Small right effusion."),
              RegionSentence("left lung", "The lungs are clear.")]  # the lung fields are where the effusion is
    kept, _ = decoding.consistent_with_findings(model, pieces, None, _probs(Pleural_Effusion=0.9))
    assert [p.text for p in kept] == [texts[0], "Small right effusion."]


def test_decisions_use_the_per_finding_thresholds():
    probs = _probs(Pleural_Effusion=0.3)
    assert joint.finding_decisions(probs, {"Pleural Effusion": 0.25})["Pleural Effusion"] is True
    assert joint.finding_decisions(probs, {"Pleural Effusion": 0.35})["Pleural Effusion"] is False
    assert joint.finding_decisions({"Pleural Effusion": 0.3}, None)["Pleural Effusion"] is False  # 0.5 default


def test_filtered_report_and_impression_agree_with_the_head():
    model = untrained_model()
    model.thresholds.findings = {name: 0.5 for name in CHEXPERT_14}
    pieces = [RegionSentence("right lung", CONTRADICTION[0]), RegionSentence("left lung", CONTRADICTION[1]),
              RegionSentence("cardiac silhouette", "Heart size is normal.")]
    effusion = _probs(Pleural_Effusion=0.9)
    kept, impression = decoding.consistent_with_findings(model, pieces, "Bilateral pleural effusions. No acute abnormality.",
                                                       effusion)
    assert [p.text for p in kept] == [CONTRADICTION[1], "Heart size is normal."]
    assert impression == "Bilateral pleural effusions."
    # the impression contradicts the head entirely: rewritten from the kept findings that state something
    kept, impression = decoding.consistent_with_findings(model, pieces, "No acute cardiopulmonary abnormality.", effusion)
    assert impression == CONTRADICTION[1]
    # nothing abnormal left: the normal statement, never a leftover "effusion" impression
    kept, impression = decoding.consistent_with_findings(model, pieces, "Bilateral pleural effusions.", _probs(No_Finding=0.9))
    assert [p.text for p in kept] == [CONTRADICTION[0], "Heart size is normal."]
    assert impression == NORMAL_IMPRESSION


def _study():
    rng = np.random.default_rng(0)
    return StudyInput(images=[rng.random((80, 70), dtype=np.float32)], views=["PA"])


def test_the_config_sets_the_default_joint_mode(monkeypatch):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["joint"] = "filter"
    model = untrained_model(cfg)
    calls = []
    original = decoding.consistent_with_findings

    def spy(model_, pieces, impression, probs, thresholds=None, candidates=None):
        calls.append(len(pieces))
        return original(model_, pieces, impression, probs, thresholds, candidates)

    monkeypatch.setattr(decoding, "consistent_with_findings", spy)
    model.generate_report(_study())
    assert len(calls) == 1
    model.generate_report(_study(), joint="condition")
    assert len(calls) == 1
    with pytest.raises(ConfigError, match="joint='veto' is not one of off, condition"):
        model.generate_report(_study(), joint="veto")
    cfg["joint"] = "veto"
    with pytest.raises(ConfigError, match="joint='veto'"):
        build_model(cfg)


def test_the_impression_candidate_that_restates_the_findings_wins():
    findings = ["Small right pleural effusion.", "The heart is moderately enlarged.", "No pneumothorax."]
    candidates = ["Small right pleural effusion.", "Cardiomegaly. Right pleural effusion.", "Cardiomegaly. Pneumonia."]
    assert joint.agreeing_impression(candidates, findings) == "Cardiomegaly. Right pleural effusion."
    # a tie goes to the earlier beam; nothing positive in the findings: the candidate stating the least
    assert joint.agreeing_impression(["Cardiomegaly.", "Enlarged heart."], findings[1:]) == "Cardiomegaly."
    assert joint.agreeing_impression(["Small effusion.", "No acute process."], ["No pneumothorax."]) == "No acute process."


def test_filter_mode_chooses_among_the_filtered_impression_candidates():
    model = untrained_model()
    model.thresholds.findings = {name: 0.5 for name in CHEXPERT_14}
    pieces = [RegionSentence("right costophrenic angle", "Small right pleural effusion."),
              RegionSentence("cardiac silhouette", "The heart is moderately enlarged.")]
    probs = _probs(Pleural_Effusion=0.9, Cardiomegaly=0.9)
    # the best-agreeing candidate also claims a pneumothorax the head rules out: that sentence goes first
    _, impression = decoding.consistent_with_findings(model, pieces, "Right effusion.", probs, None,
                                                    ["Right effusion.", "Cardiomegaly. Right effusion. Pneumothorax."])
    assert impression == "Cardiomegaly. Right effusion."
    _, impression = decoding.consistent_with_findings(model, pieces, "Right effusion.", probs)
    assert impression == "Right effusion."


def test_filter_candidates_keeps_a_candidate_that_agrees_instead_of_losing_the_sentence(monkeypatch):
    import crrg.rrg.decoding as rrg_model

    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["joint"] = "filter"
    cfg["decoding"] = {"consensus": 4}
    model = untrained_model(cfg)
    model.thresholds.findings = {name: 1.01 for name in CHEXPERT_14}  # the head calls every finding absent
    # three of a region's four candidates state an effusion (their consensus), one says there is none
    beams = ["Small right pleural effusion.", "Small right pleural effusion.", "Small left pleural effusion.",
             "No pleural effusion."]

    def canned(tokenizer, ids):
        return beams * (len(ids) // len(beams))

    monkeypatch.setattr(rrg_model, "decode", canned)
    model.global_sentences = False
    vetoed = model.generate_report(_study())
    assert "effusion" not in vetoed.findings.lower()  # the consensus contradicts the head: dropped
    kept = model.generate_report(_study(), filter_candidates=True)
    assert "No pleural effusion." in kept.findings
    model.decoding = model.decoding.replace(filter_candidates=True)  # the model's decoding.json
    assert model.generate_report(_study()).findings == kept.findings
